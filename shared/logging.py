"""structlog set-up: contextvars first, ISO UTC times, JSON (orjson) or console when on a TTY."""

from __future__ import annotations

import io
import logging
import sys
from typing import Any, TextIO

import orjson
import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import ExceptionRenderer, ExcInfo

from shared.redact import redact, redact_secrets

_SECRET_KEYS = frozenset({"token", "api_key", "authorization", "bot_token", "password", "secret"})


def _drop_secrets(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Last line of defence: a field named like a secret never reaches the output."""
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "***"
    return event_dict


def _redacted(formatter: ExceptionRenderer) -> ExceptionRenderer:
    """The console's traceback formatter, with URL credentials in the traceback redacted."""

    def format_redacted(sio: TextIO, exc_info: ExcInfo) -> None:
        buffer = io.StringIO()
        formatter(buffer, exc_info)
        sio.write(redact(buffer.getvalue()))

    return format_redacted


class _RedactingFormatter(logging.Formatter):
    """Library log lines (stdlib logging) and their tracebacks, with URL credentials redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


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
            # No locals: their truncated reprs can cut a URL or token short of what
            # redaction recognises (the settings object is a local in most frames).
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            redact_secrets,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ]
        factory: Any = structlog.BytesLoggerFactory(sys.stderr.buffer)
    else:
        # Plain: a rich traceback would show locals, whose reprs are cut short (see above).
        formatter = _redacted(structlog.dev.plain_traceback)
        renderer = structlog.dev.ConsoleRenderer(exception_formatter=formatter)
        processors += [redact_secrets, renderer]
        factory = structlog.PrintLoggerFactory(sys.stderr)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("%(name)s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    for noisy in ("httpx", "httpcore", "aiogram", "asyncio", "sqlalchemy", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
