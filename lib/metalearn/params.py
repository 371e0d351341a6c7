"""Checking a notebook's injected parameters before any compute.

Papermill injects parameters as plain variables; values from the command line or
from a YAML file can arrive as the wrong type (DVC writes ``false``, which the
papermill CLI passes as the truthy string ``"false"``; PyYAML reads ``1e4`` as a
string). A notebook's second cell therefore calls :func:`check` with one validator
per parameter::

    P = check(globals(), n_iterations=Int(min=1), inner_lr=Float(min=0, strict=True),
              algorithm=Choice("maml", "fomaml", "anil"))

Every problem raises :class:`ParameterError` naming the parameter.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable


class ParameterError(ValueError):
    """A parameter has a wrong type, a value out of range, or is missing or unknown."""


def _fail(name: str, message: str, value: Any) -> None:
    raise ParameterError(f"parameter '{name}' {message}, got {value!r} ({type(value).__name__})")


@dataclass(frozen=True)
class Int:
    min: int | None = None
    max: int | None = None

    def __call__(self, name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(name, "must be an integer", value)
        if self.min is not None and value < self.min:
            _fail(name, f"must be >= {self.min}", value)
        if self.max is not None and value > self.max:
            _fail(name, f"must be <= {self.max}", value)
        return value


@dataclass(frozen=True)
class Float:
    min: float | None = None
    max: float | None = None
    strict: bool = False  # exclude the bounds themselves

    def __call__(self, name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(name, "must be a number (write 1.0e-3, not 1e-3, in YAML)", value)
        value = float(value)
        if not math.isfinite(value):
            _fail(name, "must be finite", value)
        for bound, sign, worse in ((self.min, ">", lambda a, b: a < b), (self.max, "<", lambda a, b: a > b)):
            if bound is None:
                continue
            if worse(value, bound) or (self.strict and value == bound):
                _fail(name, f"must be {sign}{'' if self.strict else '='} {bound}", value)
        return value


@dataclass(frozen=True)
class Bool:
    def __call__(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            _fail(name, "must be true or false (a boolean, not a string)", value)
        return value


class Str:
    """A non-empty string; with ``parse``, the value ``parse(string)`` (its ValueError
    becomes a :class:`ParameterError` naming the parameter)."""

    def __init__(self, parse: Callable[[str], Any] | None = None):
        self.parse = parse

    def __call__(self, name: str, value: Any) -> Any:
        if not isinstance(value, str) or not value:
            _fail(name, "must be a non-empty string", value)
        if self.parse is None:
            return value
        try:
            return self.parse(value)
        except ValueError as error:
            raise ParameterError(f"parameter '{name}': {error}") from None


class Choice:
    def __init__(self, *options: str):
        self.options = options

    def __call__(self, name: str, value: Any) -> str:
        if value not in self.options:
            _fail(name, f"must be one of {', '.join(map(repr, self.options))}", value)
        return value


@dataclass(frozen=True)
class List:
    item: Callable[[str, Any], Any]
    min_len: int = 1
    unique: bool = False

    def __call__(self, name: str, value: Any) -> list:
        if not isinstance(value, (list, tuple)):
            _fail(name, "must be a list", value)
        if len(value) < self.min_len:
            _fail(name, f"must have at least {self.min_len} items", value)
        out = [self.item(f"{name}[{i}]", v) for i, v in enumerate(value)]
        if self.unique and len(set(out)) != len(out):
            _fail(name, "must not repeat items", value)
        return out


def check(namespace: dict, **validators: Callable[[str, Any], Any]) -> SimpleNamespace:
    """Validate ``namespace[name]`` with ``validators[name]`` for each name.

    Returns the validated values as attributes (``P.n_iterations``). Raises
    :class:`ParameterError` for the first missing or invalid parameter.
    """
    values = {}
    for name, validate in validators.items():
        if name not in namespace:
            raise ParameterError(f"parameter '{name}' is missing")
        values[name] = validate(name, namespace[name])
    return SimpleNamespace(**values)


def require(condition: bool, name: str, message: str) -> None:
    """Raise :class:`ParameterError` about ``name`` unless ``condition`` holds."""
    if not condition:
        raise ParameterError(f"parameter '{name}' {message}")
