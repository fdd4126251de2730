"""Session and store health as JSON and back, so the stored snapshot answers like a fresh one."""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Callable
from datetime import date, datetime
from typing import Any


def encode(value: Any) -> Any:
    """
    A JSON-ready copy of a health dataclass (or any value inside one).

    Plain values of fields declared ``repr=False`` are left out: that is how the health
    dataclasses mark what must never leave the process (``SessionHealth.phone_digits``,
    ``SessionFacts.phone``). A nested dataclass kept out of ``repr`` only for brevity
    (``SessionHealth.facts``) is encoded, minus its own ``repr=False`` values.
    """
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is dict:
        return {str(encode(key)): encode(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [encode(item) for item in value]
    plan = _fields(kind)
    if plan is not None:
        encoded = {}
        for name, shown in plan:
            item = getattr(value, name)
            if shown or _fields(type(item)) is not None:
                encoded[name] = encode(item)
        return encoded
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(encode(key)): encode(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [encode(item) for item in value]
    return value


_PLAIN = frozenset({str, int, float, bool, type(None)})


@functools.cache
def _fields(kind: type) -> tuple[tuple[str, bool], ...] | None:
    """A dataclass's fields as ``(name, shown in repr)``, computed once (None: not one)."""
    if not dataclasses.is_dataclass(kind):
        return None
    return tuple((f.name, f.repr) for f in dataclasses.fields(kind))


def decode(cls: type, data: dict, **overrides: Any) -> Any:
    """
    Rebuild a health dataclass from :func:`encode`'s output.

    Fields missing from ``data`` (stored before a field was added) take their default, or
    None; unknown keys (a field since removed) are ignored. ``overrides`` set fields directly.
    """
    return _dataclass_decoder(cls)(data, overrides)


def _identity(raw: Any) -> Any:
    return raw


@functools.cache
def _dataclass_decoder(cls: type) -> Callable[[dict, dict], Any]:
    hints = typing.get_type_hints(cls)
    fields = [
        (f.name, _decoder(hints.get(f.name, Any)), _fallback(f))
        for f in dataclasses.fields(cls)
        if f.init
    ]

    def build(data: dict, overrides: dict | None = None) -> Any:
        kwargs = {}
        for name, convert, fallback in fields:
            if overrides and name in overrides:
                kwargs[name] = overrides[name]
            elif name in data:
                kwargs[name] = convert(data[name])
            else:
                kwargs[name] = fallback()
        return cls(**kwargs)

    return build


def _fallback(field: dataclasses.Field) -> Callable[[], Any]:
    if field.default is not dataclasses.MISSING:
        return lambda: field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory
    return lambda: None


def _optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda raw: None if raw is None else convert(raw)


@functools.cache
def _decoder(tp: Any) -> Callable[[Any], Any]:
    """A function turning the JSON form of a value of type ``tp`` back into that type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in args if arg is not type(None)]
        inner = _decoder(members[0]) if len(members) == 1 else _identity
        return _optional(inner)
    if origin is tuple:
        item = _decoder(args[0]) if args else _identity
        return _optional(lambda raw: tuple(item(value) for value in raw))
    if origin is list:
        item = _decoder(args[0]) if args else _identity
        return _optional(lambda raw: [item(value) for value in raw])
    if origin is dict:
        key = _decoder(args[0]) if args else _identity
        value = _decoder(args[1]) if len(args) > 1 else _identity
        return _optional(lambda raw: {key(k): value(v) for k, v in raw.items()})
    if isinstance(tp, type):
        if dataclasses.is_dataclass(tp):
            build = _dataclass_decoder(tp)
            return _optional(lambda raw: build(raw))
        if issubclass(tp, enum.Enum):
            return _optional(tp)
        if issubclass(tp, datetime):
            return _optional(datetime.fromisoformat)
        if issubclass(tp, date):
            return _optional(date.fromisoformat)
        if tp in (int, float) or issubclass(tp, str):
            return _optional(tp)
    return _identity
