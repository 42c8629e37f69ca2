"""Run `python -m MODULE` as an operator would, off the test's event loop."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from tests.support.bot_harness import ROOT


async def run_module(module: str, args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of the finished process (at most a minute)."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr
