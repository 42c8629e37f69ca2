"""TaskRun: what the runner shares with one run of a handler (its attempt, live output, stop)."""

from __future__ import annotations

from dataclasses import dataclass

from shared.queue.live import LiveWriter
from shared.tasks import TaskResult


@dataclass(slots=True)
class TaskRun:
    """One run of a handler.

    A user's stop sets `stop_requested` and then cancels the handler; a handler that can
    keep what it made so far puts it in `partial` before the cancellation leaves it. A
    cancellation without `stop_requested` is a shutdown: the task runs again elsewhere.
    """

    attempt: int
    live: LiveWriter
    stop_requested: bool = False
    partial: TaskResult | None = None


class StopRequested(Exception):  # noqa: N818 - a request, not an error
    """A handler ends early because its run was stopped: it saw `stop_requested` itself, as
    the cancel that should have ended it can be lost (see shared.closing)."""
