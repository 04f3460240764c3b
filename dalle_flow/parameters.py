"""Request parameters declared once: `Param` (one field: kind, default, range) and `Params` (a pipeline's fields plus
its cross-field rules).

Each pipeline declares its `Params`; executors parse a request with it before any work, and the pipeline's entry
points check direct callers with the same declaration, so every limit has one definition and one message format:
``num_images: must be an integer between 1 and 32, got 'many'``. Nothing is clamped silently. No DocArray, no Jina:
pipelines import this module.

gRPC carries parameters as a protobuf Struct, where every number is a double: an integer parameter therefore accepts
integral floats (16.0) but refuses fractional ones (16.5), strings and booleans.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

SEED_MAX = 2**32 - 1  # seeds travel as doubles over gRPC; keep them well inside the exactly representable range


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # 'int' | 'float' | 'bool' | 'choice' | 'str'
    default: Any = None
    low: float | None = None
    high: float | None = None
    choices: tuple = field(default=())
    optional: bool = False  # None (or absent) is a valid value, e.g. seed: the server draws one
    max_length: int = 1000

    def declaration(self) -> dict:
        """The field as JSON-ready data for clients (the web UI builds its form fields from it)."""
        return {"name": self.name, "kind": self.kind, "default": self.default, "low": self.low, "high": self.high,
                "choices": list(self.choices), "optional": self.optional, "max_length": self.max_length,
                "description": self.describe()}

    def describe(self) -> str:
        if self.kind == "int":
            return _range_phrase("an integer", self.low, self.high)
        if self.kind == "float":
            return _range_phrase("a number", self.low, self.high)
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        return f"a string of at most {self.max_length} characters"

    def error(self, value) -> ValueError:
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return ValueError(f"{self.name}: must be {self.describe()}, got {shown}")

    def convert(self, value):
        if value is None:
            if self.optional:
                return None
            raise self.error(value)
        if self.kind == "int":
            return self._convert_int(value)
        if self.kind == "float":
            return self._convert_float(value)
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise self.error(value)
        if self.kind == "choice":
            if isinstance(value, str) and value in self.choices:
                return value
            raise self.error(value)
        if self.kind == "str":
            if isinstance(value, str) and len(value) <= self.max_length:
                return value
            raise self.error(value)
        raise AssertionError(f"unknown parameter kind {self.kind!r}")

    def _convert_int(self, value) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(value)
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise self.error(value)
        value = int(value)
        self._check_range(value)
        return value

    def _convert_float(self, value) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.error(value)
        value = float(value)
        self._check_range(value)
        return value

    def _check_range(self, value):
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise self.error(value)


def _range_phrase(what: str, low, high) -> str:
    if low is not None and high is not None:
        return f"{what} between {_fmt(low)} and {_fmt(high)}"
    if low is not None:
        return f"{what} >= {_fmt(low)}"
    if high is not None:
        return f"{what} <= {_fmt(high)}"
    return what


def _fmt(x) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def seed_param() -> Param:
    return Param("seed", "int", default=None, low=0, high=SEED_MAX, optional=True)


def parse(parameters: dict | None, specs) -> dict:
    """Validated values for `specs` from a request's parameters; other keys belong to other executors (ignored)."""
    parameters = parameters or {}
    if not isinstance(parameters, dict):
        raise ValueError(f"parameters: must be a mapping, got {type(parameters).__name__}")
    return {spec.name: spec.convert(parameters.get(spec.name, spec.default)) for spec in specs}


Rule = Callable[[dict], None]  # raises ValueError naming the field and the limit when parsed values do not fit together


@dataclass(frozen=True)
class Params:
    """One pipeline's request parameters: every field with its default and range, then the rules across fields."""
    specs: tuple[Param, ...]
    rules: tuple[Rule, ...] = ()

    def __post_init__(self):
        names = [spec.name for spec in self.specs]
        if len(set(names)) != len(names):
            raise ValueError(f"parameters declared twice in {names}")
        for spec in self.specs:  # a declaration whose default breaks its own range fails at import, not per request
            spec.convert(spec.default)

    def __getitem__(self, name: str) -> Param:
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def default(self, name: str):
        return self[name].default

    def parse(self, parameters: dict | None) -> dict:
        """Every declared field, validated (absent ones take their defaults), then every rule."""
        values = parse(parameters, self.specs)
        for rule in self.rules:
            rule(values)
        return values

    def with_defaults(self, **defaults) -> "Params":
        """The same declaration with other defaults (e.g. a server's configured steps), each checked against its
        field's range, so a configuration mistake stops the start."""
        unknown = set(defaults) - {spec.name for spec in self.specs}
        if unknown:
            raise KeyError(f"not declared: {sorted(unknown)}")
        specs = tuple(replace(spec, default=spec.convert(defaults[spec.name])) if spec.name in defaults else spec
                      for spec in self.specs)
        return Params(specs, self.rules)

    def with_rules(self, *rules: Rule) -> "Params":
        return Params(self.specs, self.rules + rules)


def draw_seed() -> int:
    """A fresh seed for a request that gave none; it is returned in tags so the result can be reproduced."""
    import secrets

    return secrets.randbelow(SEED_MAX + 1)
