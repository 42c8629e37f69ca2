"""The benchmark's consumer process: the real runtime with a no-op handler for every type.

The real handlers are built first (offline providers, a database engine that is never used)
so the process carries what a production consumer loads; then no-op handlers serve the
benchmark. The scheduling settings apply as in production (PROVIDER_LIMITS, PROVIDER_RATES,
USER_MAX_IN_FLIGHT, PRIORITY_NORMAL_SHARE), the no-op handlers counting as calls to
LLM_PROVIDER. Prints `ready` once connected and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from consumers.gates import attach_gates, build_gates
from consumers.providers.offline import OfflineImageClient, OfflineLLMClient
from consumers.providers.offline_audio import OfflineSpeaker, OfflineTranscriber
from consumers.registry import Providers, TaskHandler, build_handlers
from consumers.runner import ConsumerRunner
from consumers.task_run import TaskRun
from shared.config import load_settings
from shared.logging import configure_logging
from shared.queue import QueueService
from shared.queue.audio import AudioStore
from shared.tasks import ImagePromptResult, QueueTask, TaskResult, TaskType


class NoopHandler:
    """Returns at once; the result echoes the payload so waiters can check they got theirs."""

    async def __call__(self, task: QueueTask, run: TaskRun) -> TaskResult:
        return ImagePromptResult(prompt=str(task.data.get("girl_name", "")))


async def serve(name: str, concurrency: int) -> None:
    settings = load_settings()
    queue = QueueService(settings, client_name=f"bench-consumer:{name}")
    await queue.connect()
    providers = Providers(
        llm=OfflineLLMClient(),
        images=OfflineImageClient(),
        stt=OfflineTranscriber(),
        tts=OfflineSpeaker(),
        audio=AudioStore(queue.redis, settings),
    )
    real: dict[TaskType, TaskHandler] = build_handlers(list(TaskType), providers)
    handlers: dict[TaskType, TaskHandler] = dict.fromkeys(real, NoopHandler())
    options = ConsumerRunner.options_from(settings, dict.fromkeys(TaskType, concurrency))
    gates = build_gates(settings, list(TaskType))
    attach_gates(gates, queue, name)
    runner = ConsumerRunner(queue.consumer(name), handlers, options, gates=gates)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, runner.stop)
    loop.add_signal_handler(signal.SIGINT, runner.stop)
    run = asyncio.create_task(runner.run())
    await asyncio.sleep(0)
    print("ready", flush=True)
    await run
    await queue.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.consumer")
    parser.add_argument("--name", required=True)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()
    configure_logging("WARNING", json=True)
    asyncio.run(serve(args.name, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
