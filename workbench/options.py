"""Config fields that describe themselves: a one-line doc, choices as `Literal`, optional bounds.

A config is a frozen dataclass whose fields are declared with `option(default, doc)`. From the
class alone, `field_specs` gives the one description that `workbench operators`, the app's forms
and the validation all read; `check_fields` refuses a value outside a `Literal`'s choices, of the
wrong type or outside its bounds (model-free, so before any model loads); `parse_value` reads the
text of a `key=value` override. A subclass that only changes a default (`lr: float = 1e-3`) keeps
the doc and bounds of the field it overrides.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import operator
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from workbench.errors import WorkbenchError

_BOUNDS = {"ge": ">=", "gt": ">", "le": "<="}


def option(default: Any = dataclasses.MISSING, doc: str = "", *, ge: float | None = None,
           gt: float | None = None, le: float | None = None, **kw: Any) -> Any:
    """A dataclass field with a one-line `doc` and optional inclusive (`ge`, `le`) or strict
    (`gt`) numeric bounds; `**kw` go to `dataclasses.field` (e.g. `default_factory`)."""
    if not doc.strip():
        raise TypeError("option() needs a one-line doc")
    bounds = tuple((sym, v) for key, sym in _BOUNDS.items()
                   if (v := {"ge": ge, "gt": gt, "le": le}[key]) is not None)
    return dataclasses.field(default=default, metadata={"doc": doc, "bounds": bounds}, **kw)


@dataclass(frozen=True)
class FieldSpec:
    """One config field as the CLI listing and the app's forms show it."""

    name: str
    type: str  # e.g. "float", "int | None", "tuple[int, ...]"; a Literal shows its values' type
    choices: tuple[Any, ...] | None  # the Literal's values, else None
    default: Any
    doc: str
    bounds: tuple[tuple[str, float], ...] = ()  # e.g. ((">=", 0), ("<=", 1))


def type_name(tp: Any) -> str:
    """A short readable name of a type hint."""
    if tp is type(None):
        return "None"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return type_name(type(args[0]))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]" if args else origin.__name__
    return getattr(tp, "__name__", str(tp))


def choices_of(tp: Any) -> tuple[Any, ...] | None:
    """The values of a `Literal` hint (also inside `X | None`), else None."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(tp):
            if (c := choices_of(a)) is not None:
                return c
    return None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _meta(cls: type, name: str) -> typing.Mapping[str, Any]:
    """The metadata of the nearest class in the MRO that documents field `name`."""
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and f.metadata.get("doc"):
            return f.metadata
    return {}


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def field_specs(cls: type) -> list[FieldSpec]:
    """The description of every field of the config dataclass `cls`, in declaration order."""
    hints = _hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = _meta(cls, f.name)
        out.append(FieldSpec(f.name, type_name(hints[f.name]), choices_of(hints[f.name]),
                             _default(f), meta.get("doc", ""), tuple(meta.get("bounds", ()))))
    return out


def _fits(value: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin in (tuple, list):
        elem = args[0] if args else Any
        return isinstance(value, origin) and all(_fits(v, elem) for v in value)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    return not isinstance(tp, type) or isinstance(value, tp)


def _out_of_bounds(value: float, bounds: tuple[tuple[str, float], ...]) -> str | None:
    """None when `value` is within `bounds`, else the bounds as text (">= 0 and <= 1")."""
    ok = {">=": operator.ge, ">": operator.gt, "<=": operator.le}
    if all(ok[sym](value, v) for sym, v in bounds):
        return None
    return " and ".join(f"{sym} {v}" for sym, v in bounds)


def check_fields(config: Any) -> None:
    """Refuse a field value outside its Literal's choices, of the wrong type, or out of bounds;
    the message names the key, the value and what is allowed."""
    cls = type(config)
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        key, value, tp = f.name, getattr(config, f.name), hints[f.name]
        if _fits(value, tp):
            bounds = _meta(cls, key).get("bounds", ())
            if bounds and isinstance(value, numbers.Real) and not isinstance(value, bool) \
                    and (want := _out_of_bounds(value, bounds)):
                raise WorkbenchError(f"{key} must be {want}, got {value!r}")
            continue
        choices = choices_of(tp)
        if choices is not None and isinstance(value, str | int | float):
            allowed = ", ".join(map(str, choices))
            raise WorkbenchError(f"unknown {key} {value!r}; {key} must be one of {allowed}")
        raise WorkbenchError(f"{key} must be {type_name(tp)}, got {value!r}")


def parse_value(text: str, tp: Any, key: str) -> Any:
    """Read the text of a `key=value` override as type `tp` (Literal: as its values' type;
    `X | None`: "none" or "null" is None; tuples: comma- or space-separated; bools: 1/0,
    true/false, yes/no, on/off)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return parse_value(text, type(args[0]), key)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        return parse_value(text, next(a for a in args if a is not type(None)), key)
    if origin in (tuple, list):
        parts = [p for p in text.replace(",", " ").split() if p]
        return tuple(parse_value(p, args[0] if args else str, key) for p in parts)
    try:
        if tp is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if tp in (int, float, str):
            return tp(text)
    except ValueError:
        raise WorkbenchError(f"config key {key!r}: cannot read {text!r} as {tp.__name__}") from None
    return text
