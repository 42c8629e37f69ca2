"""Ending background loops: by a flag and a bounded wait, not by cancel alone.

On Python 3.11 a cancellation can be lost: `asyncio.wait_for`, which redis-py runs commands
through, may swallow it (CPython gh-86296), and redis-py may turn it into a connection error
that a loop's own error handling catches and retries. So each loop also checks its owner's
closing flag, and closing waits for the loops at most CLOSE_SECONDS; after that the owner
closes its connections, which ends any command still pending.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import structlog

log = structlog.get_logger(__name__)

CLOSE_SECONDS = 2.0


async def stop_loops(tasks: Sequence[asyncio.Task[None]], owner: str) -> None:
    """Cancel `tasks` and wait for them at most CLOSE_SECONDS (their owner has set its
    closing flag and woken them first)."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, stuck = await asyncio.wait(tasks, timeout=CLOSE_SECONDS)
    if stuck:
        log.error("close_stuck", owner=owner, loops=sorted(t.get_name() for t in stuck))


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `stop` is set meanwhile: a renewal loop's wait, so that
    the loop ends by its flag even when its cancellation was lost."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
