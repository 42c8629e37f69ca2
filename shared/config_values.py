"""Typed setting values from environment strings (or explicit values), with clear errors.

Plain code instead of pydantic: every consumer process loads its settings, and pydantic
alone costs a process 8 MB of memory. A failure is a ValueError whose message says what a
value must be; `load_settings` prefixes it with the variable's name.
"""

from __future__ import annotations

import re
import types
from dataclasses import Field, field
from enum import Enum
from typing import Any, Union, get_args, get_origin
from urllib.parse import urlsplit

_SPACE = 0x20
_DELETE = 0x7F
_ESCAPE_HINT = "percent-encode @ # / ? in the user name and password: %40 %23 %2F %3F"
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


class Secret:
    """A string kept out of reprs, logs and error messages (`get_secret_value()` reads it)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********" if self._value else ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def bounded(
    default: Any, *, gt: float | None = None, ge: float | None = None, le: float | None = None
) -> Any:
    """A settings field with a default and numeric bounds, checked by `check_bounds`."""
    return field(default=default, metadata={"gt": gt, "ge": ge, "le": le})


def check_bounds(spec: Field[Any], value: Any) -> None:
    if value is None:
        return
    gt, ge, le = (spec.metadata.get(k) for k in ("gt", "ge", "le"))
    if gt is not None and not value > gt:
        raise ValueError(f"must be greater than {gt}")
    if ge is not None and not value >= ge:
        raise ValueError(f"must be at least {ge}")
    if le is not None and not value <= le:
        raise ValueError(f"must be at most {le}")


def coerce(hint: Any, value: Any) -> Any:
    """`value` as type `hint`: a scalar, an enum, a Secret or an optional one of these."""
    if get_origin(hint) in (Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [arg for arg in get_args(hint) if arg is not type(None)]
        return coerce(inner, value)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return _enum(hint, value)
    parse = _SCALARS.get(hint)
    if parse is None:
        raise TypeError(f"no parser for settings of type {hint}")
    return parse(value)


def _enum(kind: type[Enum], value: Any) -> Enum:
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(str(member.value) for member in kind)
        raise ValueError(f"must be one of {choices}") from None


# `module:Class`: a dotted module path, a colon, a class name (see docs/image-plugins.md).
_CLASS_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def enum_or_class_path(kind: type[Enum], value: Any) -> Enum | str | None:
    """A member of `kind`, or the `module:Class` of a plugin (imported where it is used)."""
    if value is None or isinstance(value, kind):
        return value
    text = to_str(value).strip()
    if _CLASS_PATH.fullmatch(text):
        return text
    try:
        return kind(text)
    except ValueError:
        choices = ", ".join(str(member.value) for member in kind)
        raise ValueError(f"must be one of {choices}, or module:Class of a plugin") from None


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("must be true or false")


def to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError("must be a whole number") from None


def to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    try:
        return float(value if isinstance(value, int | float) else str(value).strip())
    except ValueError:
        raise ValueError("must be a number") from None


def to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {type(value).__name__}")
    return value


def to_url(value: Any) -> str:
    """A URL whose host is the one written: every reader (urllib, redis-py, asyncpg, httpx, a
    person reading the masked URL) must find the same user-info and host.

    An unescaped `@`, `#`, `/` or `?` in a password makes parsers disagree on where the host
    starts, and the host they find is then a piece of the password, which an error would
    print. The messages never quote the value. Empty stays empty (no database).
    """
    url = to_str(value)
    if not url:
        return url
    if any(ord(char) <= _SPACE or ord(char) == _DELETE for char in url):
        # urllib drops tabs and newlines without a word, so the host it reads is not the one
        # written; a space has no place in a URL either.
        raise ValueError("malformed URL: it contains a space or a control character")
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        raise ValueError(f"malformed URL ({_ESCAPE_HINT})") from None
    if not parts.scheme:
        raise ValueError("not a URL: it must start with a scheme such as redis://")
    if "#" in url or url.count("@") != parts.netloc.count("@"):
        # Each `@` after the host, or a `#`, would let the part before it pass for the host.
        raise ValueError(f"ambiguous URL: the host it names is unclear ({_ESCAPE_HINT})")
    return url


def to_secret(value: Any) -> Secret:
    return value if isinstance(value, Secret) else Secret(to_str(value))


def split_list(value: Any) -> list[Any]:
    """A comma-separated string as its parts; a list or tuple as it is."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return list(value)
    raise ValueError("must be a comma-separated list")


_SCALARS: dict[Any, Any] = {
    bool: to_bool,
    int: to_int,
    float: to_float,
    str: to_str,
    Secret: to_secret,
}
