import math

import pytest

from dalle_flow.serving.parameters import SEED_MAX, Param, parse, seed_param

SPECS = [Param("num_images", "int", default=4, low=1, high=16), Param("skip_rate", "float", default=0.5, low=0, high=1),
         Param("mode", "choice", default="none", choices=("none", "binary")), Param("invert", "bool", default=False),
         seed_param()]


def test_defaults_and_unknown_keys_ignored():
    assert parse({"other_executor_param": 3}, SPECS) == {"num_images": 4, "skip_rate": 0.5, "mode": "none",
                                                         "invert": False, "seed": None}


def test_integral_floats_from_grpc_are_integers():
    values = parse({"num_images": 16.0, "seed": 7.0}, SPECS)
    assert values["num_images"] == 16 and isinstance(values["num_images"], int)
    assert values["seed"] == 7


@pytest.mark.parametrize("params, message", [
    ({"num_images": "many"}, "num_images: must be an integer between 1 and 16, got 'many'"),
    ({"num_images": 17}, "num_images: must be an integer between 1 and 16, got 17"),
    ({"num_images": 2.5}, "num_images: must be an integer between 1 and 16, got 2.5"),
    ({"num_images": True}, "num_images: must be an integer between 1 and 16, got True"),
    ({"skip_rate": 1.5}, "skip_rate: must be a number between 0 and 1, got 1.5"),
    ({"skip_rate": math.nan}, "skip_rate: must be a number between 0 and 1, got nan"),
    ({"skip_rate": "0.5"}, "skip_rate: must be a number between 0 and 1, got '0.5'"),
    ({"mode": "otsu"}, "mode: must be one of 'none', 'binary', got 'otsu'"),
    ({"invert": 1}, "invert: must be true or false, got 1"),
    ({"seed": -1}, f"seed: must be an integer between 0 and {SEED_MAX}, got -1"),
])
def test_errors_name_field_and_limit(params, message):
    with pytest.raises(ValueError) as err:
        parse(params, SPECS)
    assert str(err.value) == message


def test_nothing_is_clamped():
    with pytest.raises(ValueError):
        parse({"skip_rate": 1.0000001}, SPECS)
    assert parse({"skip_rate": 1}, SPECS)["skip_rate"] == 1.0


def test_parameters_must_be_a_mapping():
    with pytest.raises(ValueError, match="parameters: must be a mapping"):
        parse(["num_images"], SPECS)
