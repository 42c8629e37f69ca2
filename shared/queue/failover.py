"""Riding out a failover: an idempotent call is sent again while a master is being replaced.

From a master's death until its replica is promoted (about 4 s on a cluster with a 2 s node
timeout, 2 to 3 s with Sentinel) writes to its slots fail. A producer that gives up at once
turns every failover into failed user requests; one that repeats an idempotent call with
backoff for a bounded time makes it a short delay.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    ClusterError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Long enough for a promotion with a 2 s node timeout or Sentinel's 1 to 5 s detection.
FAILOVER_BUDGET_SECONDS = 10.0

_TRANSIENT = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    ClusterError,
    TryAgainError,
    ReadOnlyError,
    RedisClusterException,  # e.g. a slot not covered while its master is replaced
    OSError,
)
# A wrong password does not heal by waiting.
_PERMANENT = (AuthenticationError, AuthorizationError)


async def through_failover(
    call: Callable[[], Awaitable[T]], operation: str, budget: float = FAILOVER_BUDGET_SECONDS
) -> T:
    """Await `call()`, repeating it on connection and cluster errors for up to `budget` s.

    Only for idempotent calls. After the budget the last error is raised, as a RedisError
    (callers catch that) even when redis-py raised a cluster exception outside its tree.
    """
    deadline = time.monotonic() + budget
    delay = 0.1
    while True:
        try:
            return await call()
        except _PERMANENT:
            raise
        except _TRANSIENT as exc:
            if time.monotonic() + delay > deadline:
                log.error(
                    "redis_failover_gave_up",
                    operation=operation,
                    budget=budget,
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )
                if isinstance(exc, RedisError | OSError):
                    raise
                raise RedisConnectionError(f"{type(exc).__name__}: {exc}") from exc
            if delay == 0.1:  # once per call: a failover under load must not flood the log
                log.warning(
                    "redis_retry_through_failover",
                    operation=operation,
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
