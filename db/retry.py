"""Retrying a database step through a transient failure (a restart, a cut connection, a lock).

Only for steps that are safe to run again: each of them is idempotent by its own key. A step
whose commit went through but whose reply was lost runs again and changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from shared.redact import error_line

log = structlog.get_logger(__name__)

T = TypeVar("T")


# PostgreSQL's SQLSTATEs of failures that a later attempt can get past: a lock not granted
# within lock_timeout, a statement cancelled by statement_timeout, a serialization failure
# or deadlock, a server shutting down or starting up. asyncpg's errors reach SQLAlchemy as a
# plain DBAPIError, so they are told apart by their code.
_TRANSIENT_SQLSTATES = frozenset({"55P03", "57014", "40001", "40P01", "57P01", "57P02", "57P03"})
# Class 08: connection exceptions.
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08"})


def _sqlstate(exc: DBAPIError) -> str:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code if isinstance(code, str) else ""


def is_transient(exc: BaseException) -> bool:
    """A failure that says nothing about the step itself: trying again later may succeed.

    OperationalError covers a refused or lost connection and SQLite's "database is locked";
    PostgreSQL's lock and statement timeouts are recognised by their SQLSTATE. A constraint
    or a programming error is a bug, and is not retried.
    """
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError):
        code = _sqlstate(exc)
        transient_code = code in _TRANSIENT_SQLSTATES or code[:2] in _TRANSIENT_SQLSTATE_CLASSES
        return exc.connection_invalidated or transient_code
    # Connecting can fail before the driver's error is wrapped.
    return isinstance(exc, OSError | TimeoutError)


def _log_retry(what: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        error = error_line(exc) if exc is not None else "unknown"
        log.warning("db_step_retried", step=what, attempt=state.attempt_number, error=error)

    return before_sleep


async def retry_transient(step: Callable[[], Awaitable[T]], what: str, budget: float) -> T:
    """Run `step`, again after each transient failure, for at most `budget` seconds."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential_jitter(multiplier=0.1, max=2.0),
        stop=stop_after_delay(budget),
        before_sleep=_log_retry(what),
        reraise=True,
    ):
        with attempt:
            return await step()
    raise AssertionError("tenacity ended without a result")  # pragma: no cover
