"""What the producer says while it starts, and the error of a start that cannot go on."""

from __future__ import annotations

import sys
from typing import TextIO

import structlog

from shared.errors import PipelineError

log = structlog.get_logger("producer")


class StartupError(PipelineError):
    """A service the bot needs did not answer at start; said in one line, exit code 1."""


class Progress:
    """Says what a slow start is doing: plain lines before the console chat (its terminal is
    stdout), log events for the bot (whose log is what an operator watches)."""

    def __init__(self, console: bool, out: TextIO = sys.stdout) -> None:
        self._console = console
        self._out = out

    def __call__(self, step: str) -> None:
        if self._console:
            self._out.write(f"Starting: {step}…\n")
            self._out.flush()
        else:
            log.info("producer_starting", step=step)
