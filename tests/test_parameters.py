import math

import pytest

from dalle_flow.parameters import SEED_MAX, Param, Params, parse, seed_param

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


# -- Params: one declaration per pipeline ------------------------------------------------------------------------------

def _steps_rule(values):
    if values["num_images"] > values["steps"]:
        raise ValueError(f"num_images: must be at most steps = {values['steps']}, got {values['num_images']}")


DECLARATION = Params((Param("num_images", "int", default=4, low=1, high=16), Param("steps", "int", default=10, low=1)),
                     (_steps_rule,))


def test_params_parse_fields_then_rules():
    assert DECLARATION.parse(None) == {"num_images": 4, "steps": 10}
    assert DECLARATION.parse({"num_images": 12.0, "steps": 12})["num_images"] == 12
    with pytest.raises(ValueError, match="num_images: must be at most steps = 10, got 12"):
        DECLARATION.parse({"num_images": 12})
    with pytest.raises(ValueError, match="num_images: must be an integer between 1 and 16, got 17"):
        DECLARATION.parse({"num_images": 17, "steps": 20})  # the field's own range is checked before any rule


def test_with_defaults_checks_each_new_default_and_keeps_the_rules():
    served = DECLARATION.with_defaults(steps=3)
    assert served.default("steps") == 3 and served.rules == DECLARATION.rules
    with pytest.raises(ValueError, match="num_images: must be at most steps = 3, got 4"):
        served.parse({})
    with pytest.raises(ValueError, match="steps: must be an integer >= 1, got 0"):
        DECLARATION.with_defaults(steps=0)
    with pytest.raises(KeyError, match="top_k"):
        DECLARATION.with_defaults(top_k=5)


def test_a_declaration_refuses_duplicate_names_and_defaults_outside_their_range():
    with pytest.raises(ValueError, match="declared twice"):
        Params((Param("steps", "int", default=1), Param("steps", "int", default=2)))
    with pytest.raises(ValueError, match="steps: must be an integer between 1 and 10, got 11"):
        Params((Param("steps", "int", default=11, low=1, high=10),))


def test_declaration_is_json_ready_and_says_what_the_error_says():
    import json

    spec = Param("num_images", "int", default=8, low=1, high=32)
    declared = json.loads(json.dumps(spec.declaration()))
    assert declared == {"name": "num_images", "kind": "int", "default": 8, "low": 1, "high": 32, "choices": [],
                        "optional": False, "max_length": 1000, "description": "an integer between 1 and 32"}
    assert str(spec.error(40)) == f"num_images: must be {declared['description']}, got 40"
    choice = Param("mode", "choice", default="a", choices=("a", "b")).declaration()
    assert choice["choices"] == ["a", "b"] and choice["description"] == "one of 'a', 'b'"
