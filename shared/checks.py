"""Typed reads of untrusted JSON objects, each failure an InvalidDataError naming the field.

Plain code instead of a validation library: a consumer process checks every entry it reads
with these, and pydantic alone would cost it 8 MB of memory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from shared.errors import InvalidDataError

T = TypeVar("T")


def as_object(data: object) -> Mapping[str, Any]:
    if type(data) is dict:  # what JSON gives: skips the slower ABC check
        return data
    if not isinstance(data, Mapping):
        raise InvalidDataError("data", f"must be an object, not {type(data).__name__}")
    return data


def _typed(name: str, value: object, kind: type[T]) -> T:
    # bool is an int subclass; a JSON true is never a valid number here.
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise InvalidDataError(name, f"must be {_NAMES[kind]}, not {type(value).__name__}")


_NAMES: dict[type[Any], str] = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    list: "a list",
}


def required(data: Mapping[str, Any], name: str, kind: type[T]) -> T:
    if name not in data:
        raise InvalidDataError(name, "Field required")
    return _typed(name, data[name], kind)


def optional(data: Mapping[str, Any], name: str, kind: type[T], default: T) -> T:
    value = data.get(name)
    return default if value is None else _typed(name, value, kind)


def maybe(data: Mapping[str, Any], name: str, kind: type[T]) -> T | None:
    value = data.get(name)
    return None if value is None else _typed(name, value, kind)


def text(data: Mapping[str, Any], name: str, *, min_length: int = 0) -> str:
    value = required(data, name, str)
    if len(value) < min_length:
        raise InvalidDataError(name, f"must have at least {min_length} character(s)")
    return value


def items(
    data: Mapping[str, Any], name: str, parse: Callable[[object], T], *, default: bool = False
) -> list[T]:
    """A list whose items `parse` builds; an error names the item (`history.3.role`)."""
    if default and data.get(name) is None:
        return []
    value = required(data, name, list)
    parsed = []
    for i, item in enumerate(value):
        try:
            parsed.append(parse(item))
        except InvalidDataError as exc:
            raise exc.inside(f"{name}.{i}") from None
    return parsed


def number(data: Mapping[str, Any], name: str) -> float:
    value = required(data, name, object)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise InvalidDataError(name, f"must be a number, not {type(value).__name__}")
