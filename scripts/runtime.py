"""What the operations CLIs share at run time: connections, repeating, exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from shared.config import Settings
from shared.errors import PipelineError
from shared.queue import QueueService
from shared.redact import redact

EXIT_OK = 0
EXIT_FAILED = 1  # an operational error: Redis or the database unreachable
EXIT_USAGE = 2  # argparse's code; also a refused confirmation


class OperationsError(PipelineError):
    """An operation could not be carried out; the CLIs print it and exit 1."""


# Errors of the outside world that an operator fixes, as opposed to bugs in this code.
OUTAGES = (RedisError, SQLAlchemyError, OSError)


@asynccontextmanager
async def open_queue(settings: Settings, client_name: str) -> AsyncIterator[QueueService]:
    """A connected QueueService; an unreachable Redis raises OperationsError at once.

    Unlike a consumer, an operator's command should not wait for Redis to come back.
    """
    queue = QueueService(settings, client_name=client_name)
    try:
        await queue.connect()
    except (RedisError, OSError) as exc:
        await queue.close()
        url = redact(settings.redis_url)
        raise OperationsError(f"cannot reach Redis at {url}: {exc}") from None
    try:
        yield queue
    finally:
        await queue.close()


async def repeat_until_stopped(every: float, once: Callable[[], Awaitable[None]]) -> None:
    """Run `once` now and then every `every` seconds until SIGTERM or SIGINT.

    A pass that is running when the signal comes is finished, not cancelled, so its report
    says what it did.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            await once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def confirm(question: str) -> bool:
    """Ask on a terminal; without one, refuse, so a script must say --yes explicitly."""
    if not sys.stdin.isatty():
        sys.stderr.write(f"{question}\nstdin is not a terminal: pass --yes to confirm.\n")
        return False
    answer = await asyncio.to_thread(input, f"{question} [y/N] ")
    return answer.strip().lower() in {"y", "yes"}


def fail(message: str) -> int:
    sys.stderr.write(f"error: {message}\n")
    return EXIT_FAILED


def run_command(command: Coroutine[Any, Any, int]) -> int:
    """Run a CLI coroutine and turn operational errors into a clear message and exit 1."""
    try:
        return asyncio.run(command)
    except OperationsError as exc:
        return fail(str(exc))
    except RedisError as exc:
        return fail(f"Redis error: {exc}")
    except SQLAlchemyError as exc:
        return fail(f"database error: {exc}")
    except OSError as exc:
        return fail(f"{type(exc).__name__}: {exc}")
