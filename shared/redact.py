"""Credentials in URLs (REDIS_URL, DATABASE_URL, provider URLs) never reach a log or an error."""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

# `scheme://user:password@`: the user-info (the user name too: people put a password there)
# runs to the last `@` of the token, so one that holds an unescaped `@`, `/` or `#` is
# hidden whole, never shown as if it were the host.
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s'\"]*@")
# Passwords given as URL query parameters (`?password=...`, as redis-py and libpq accept).
_QUERY_PASSWORD = re.compile(r"([?&;](?:password|passwd|pwd)=)[^&;\s'\"]*", re.IGNORECASE)
MASK = "***"


def redact(text: str) -> str:
    """`text` with the user-info of every URL in it replaced by `***`."""
    if "@" not in text and "=" not in text:
        return text
    text = _URL_CREDENTIALS.sub(rf"\1{MASK}@", text)
    return _QUERY_PASSWORD.sub(rf"\1{MASK}", text)


def error_line(exc: BaseException) -> str:
    """`Type: first line of the message`, redacted and cut to 200 characters (SQLAlchemy's
    messages run to several lines: statement, background link)."""
    message = str(exc).strip()
    first = message.splitlines()[0] if message else ""
    return f"{type(exc).__name__}: {redact(first[:200])}" if first else type(exc).__name__


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(item) for item in value]
    return value


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    """structlog processor: redact every string of the event, tracebacks (as dicts) included.

    Runs after exceptions are rendered as dicts, so a message that quotes a URL is redacted.
    """
    return {key: _redact_value(value) for key, value in event_dict.items()}
