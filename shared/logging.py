"""structlog set-up: contextvars first, ISO UTC times, JSON (orjson) or console when on a TTY."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog

_SECRET_KEYS = frozenset({"token", "api_key", "authorization", "bot_token", "password", "secret"})


def _drop_secrets(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Last line of defence: a field named like a secret never reaches the output."""
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "***"
    return event_dict


def configure_logging(level: str = "INFO", json: bool | None = None) -> None:
    """Configure structlog and cap noisy stdlib loggers; call once from a `__main__`."""
    as_json = (not sys.stderr.isatty()) if json is None else json
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_secrets,
    ]
    if as_json:
        processors += [
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ]
        factory: Any = structlog.BytesLoggerFactory(sys.stderr.buffer)
    else:
        processors.append(structlog.dev.ConsoleRenderer())
        factory = structlog.PrintLoggerFactory(sys.stderr)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(message)s")
    for noisy in ("httpx", "httpcore", "aiogram", "asyncio", "sqlalchemy", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
