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


def is_transient(exc: BaseException) -> bool:
    """A failure that says nothing about the step itself: trying again later may succeed.

    OperationalError covers a refused or lost connection and SQLite's "database is locked";
    a constraint or a programming error is a bug, and is not retried.
    """
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated
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
