"""TaskRun: what the runner shares with one run of a handler (its attempt, live output, stop)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

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
    # Builds the live writer on first use: only streaming handlers write live output.
    open_live: Callable[[], LiveWriter] = field(repr=False)
    stop_requested: bool = False
    partial: TaskResult | None = None
    _live: LiveWriter | None = field(default=None, repr=False)

    @property
    def live(self) -> LiveWriter:
        if self._live is None:
            self._live = self.open_live()
        return self._live


class StopRequested(Exception):  # noqa: N818 - a request, not an error
    """A handler ends early because its run was stopped: it saw `stop_requested` itself, as
    the cancel that should have ended it can be lost (see shared.closing)."""
