"""TaskRun: what the runner shares with one run of a handler (its start's answer, live output,
stop), and the gate every external effect of a handler waits at."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field

from shared.queue.live import LiveWriter
from shared.tasks import TaskResult

# The start step's answer when it could not be learned: the run is not admitted, and its
# entry stays pending for a later delivery.
LOST = 0


class NotAdmittedError(Exception):
    """The run's start step refused it (cancelled while waiting, already final, past the
    delivery cap) or its answer was lost: the handler must have no external effect."""


@dataclass(slots=True)
class TaskRun:
    """One run of a handler.

    The handler may start before its start step answered (docs/guarantees.md, "The start
    step off the latency path"): `answer` gets that answer (the attempt number, or what
    refuses the run), and `admitted()` is the gate every external effect waits at.

    A user's stop sets `stop_requested` and then cancels the handler; a handler that can
    keep what it made so far puts it in `partial` before the cancellation leaves it. A
    cancellation without `stop_requested` is a shutdown: the task runs again elsewhere.
    """

    answer: asyncio.Future[int]
    # Builds the live writer of an attempt on first use: only streaming handlers write.
    open_live: Callable[[int], LiveWriter] = field(repr=False)
    max_attempts: int
    stop_requested: bool = False
    partial: TaskResult | None = None
    _live: LiveWriter | None = field(default=None, repr=False)

    @classmethod
    def admitted_as(cls, attempt: int, open_live: Callable[[int], LiveWriter]) -> TaskRun:
        """A run whose start already admitted it as `attempt`."""
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        answer.set_result(attempt)
        return cls(answer, open_live, max_attempts=attempt)

    @property
    def attempt(self) -> int:
        """The attempt number the start step answered (LOST while it has not answered)."""
        return self.answer.result() if self.answer.done() else LOST

    @property
    def admits(self) -> bool:
        return 1 <= self.attempt <= self.max_attempts

    async def admitted(self) -> int:
        """Wait for the start step's answer; the attempt number if it admitted this run,
        else NotAdmittedError. Shielded: a handler cancelled here leaves the answer intact."""
        await asyncio.shield(self.answer)
        if not self.admits:
            raise NotAdmittedError(f"start step answered {self.attempt}")
        return self.attempt

    @property
    def live(self) -> LiveWriter:
        """The run's live writer; only once admitted (`await admitted()` first): what it
        writes is seen by the user, an external effect like a provider call."""
        if self._live is None:
            if not self.admits:
                raise NotAdmittedError("live output before the start step admitted the run")
            self._live = self.open_live(self.attempt)
        return self._live


_CURRENT: ContextVar[TaskRun | None] = ContextVar("task_run", default=None)


def run_as(run: TaskRun) -> Token[TaskRun | None]:
    """Make `run` the current one for this asyncio task (the runner, around the handler)."""
    return _CURRENT.set(run)


def leave_run(previous: Token[TaskRun | None]) -> None:
    _CURRENT.reset(previous)


async def wait_for_admission() -> None:
    """The gate of every external effect of a handler (each provider request waits here):
    returns once the start step of the run this code serves admitted it, raises
    NotAdmittedError if it refused; outside a run (preflight, scripts) returns at once."""
    run = _CURRENT.get()
    if run is not None:
        await run.admitted()


class StopRequested(Exception):  # noqa: N818 - a request, not an error
    """A handler ends early because its run was stopped: it saw `stop_requested` itself, as
    the cancel that should have ended it can be lost (see shared.closing)."""
