"""A consumer process whose handler is a poison task: it notes each run in a file and kills
its own process with SIGKILL, at once (`--at once`) or after its start step admitted it
(`--at admitted`, noting that too). Settings come from the environment.

`python -m tests.queue_start.poison_consumer --name N --runs FILE --at once|admitted`
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

from consumers.runner import ConsumerRunner
from consumers.task_run import TaskRun, wait_for_admission
from shared.config import load_settings
from shared.logging import configure_logging
from shared.queue import QueueService
from shared.tasks import QueueTask, TaskResult, TaskType

PROMPT = TaskType.GENERATE_IMAGE_PROMPT


class Poison:
    def __init__(self, runs: Path, at: str) -> None:
        self._runs, self._at = runs, at

    def _note(self, line: str) -> None:
        with self._runs.open("a") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())

    async def __call__(self, task: QueueTask, run: TaskRun) -> TaskResult:
        self._note("ran")
        if self._at == "admitted":
            await wait_for_admission()
            self._note("admitted")
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


async def serve(name: str, runs: Path, at: str) -> None:
    settings = load_settings()
    queue = QueueService(settings, client_name=f"poison:{name}")
    await queue.connect()
    options = ConsumerRunner.options_from(settings, {PROMPT: 4})
    runner = ConsumerRunner(queue.consumer(name), {PROMPT: Poison(runs, at)}, options)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, runner.stop)
    await runner.run()
    await queue.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.queue_start.poison_consumer")
    parser.add_argument("--name", required=True)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--at", choices=("once", "admitted"), required=True)
    args = parser.parse_args()
    configure_logging("WARNING", json=True)
    asyncio.run(serve(args.name, args.runs, args.at))


if __name__ == "__main__":
    main()
