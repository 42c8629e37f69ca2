"""A faithful reimplementation of the seed's design, for the benchmark only.

LPUSH of the task to a list per type, the task record stored with SET and a TTL, a worker
that BRPOPs and runs each task in its own asyncio task under a semaphore, and a producer
that polls the record every 0.2 s. It shares the task model (QueueTask, payload
validation) with the pipeline so only the transport differs.
`python -m bench.seed --name N` runs the worker with a no-op handler.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import uuid
from datetime import datetime
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from shared.config import Settings, load_settings
from shared.errors import TaskTimeoutError
from shared.tasks import QueueTask, TaskStatus, TaskType, dumps, loads, now, validate_payload

POLL_SECONDS = 0.2
_TIMES = ("created_at", "started_at", "finished_at")


def task_json(task: QueueTask) -> bytes:
    return dumps(task)  # orjson writes a dataclass and its datetimes as the seed's JSON


def task_from_json(raw: bytes | str) -> QueueTask:
    fields = loads(raw)
    fields.pop("payload", None)
    times = {k: datetime.fromisoformat(fields[k]) for k in _TIMES if fields[k] is not None}
    kinds = {"type": TaskType(fields["type"]), "status": TaskStatus(fields["status"])}
    return QueueTask(**(fields | times | kinds))


class SeedQueueService:
    """The seed's QueueService: list queues and JSON task records."""

    def __init__(self, settings: Settings, client_name: str = "seed") -> None:
        self.settings = settings
        # redis-py's default pool raises past 100 connections; waiting for one keeps the
        # seed's one-connection-per-call behaviour under load without failing.
        pool = BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=100, client_name=client_name
        )
        self.redis = Redis.from_pool(pool)

    def queue_key(self, task_type: TaskType) -> str:
        return f"{self.settings.redis_queue_prefix}{task_type}"

    def result_key(self, task_id: str) -> str:
        return f"{self.settings.redis_result_prefix}{task_id}"

    async def close(self) -> None:
        await self.redis.aclose()

    async def save(self, task: QueueTask) -> None:
        key = self.result_key(task.task_id)
        await self.redis.set(key, task_json(task), ex=self.settings.redis_result_ttl)

    async def enqueue_task(self, task_type: TaskType, user_id: int, data: dict[str, Any]) -> str:
        task = QueueTask(
            task_id=str(uuid.uuid4()),
            type=task_type,
            user_id=user_id,
            data=validate_payload(task_type, data),
            created_at=now(),
        )
        # The seed pushes first and saves second; a worker faster than the second write then
        # sees its "completed" overwritten by "pending" and the waiter hangs (seen here in
        # about one round trip in a hundred). Saving first gives the seed design its best case.
        await self.save(task)
        await self.redis.lpush(self.queue_key(task_type), task_json(task))
        return task.task_id

    async def get_task(self, task_id: str) -> QueueTask | None:
        raw = await self.redis.get(self.result_key(task_id))
        return None if raw is None else task_from_json(raw)

    async def wait_for_task_result(self, task_id: str, timeout: float = 60.0) -> QueueTask:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            task = await self.get_task(task_id)
            if task is not None and task.is_final:
                return task
            await asyncio.sleep(POLL_SECONDS)
        raise TaskTimeoutError(f"no result for task {task_id}", task_id)


class SeedWorker:
    """The seed's QueueWorker: BRPOP, then create_task under a semaphore."""

    def __init__(self, queue: SeedQueueService, concurrency: int) -> None:
        self.queue = queue
        self.semaphore = asyncio.Semaphore(concurrency)
        self.stopping = False
        self.running: set[asyncio.Task[None]] = set()

    async def run(self, task_type: TaskType) -> None:
        key = self.queue.queue_key(task_type)
        while not self.stopping:
            item = await self.queue.redis.brpop([key], timeout=1)
            if item is None:
                continue
            await self.semaphore.acquire()
            job = asyncio.create_task(self.process(task_from_json(item[1])))
            self.running.add(job)
            job.add_done_callback(self.running.discard)
        await asyncio.gather(*self.running)

    async def process(self, task: QueueTask) -> None:
        try:
            task.status, task.started_at = TaskStatus.PROCESSING, now()
            await self.queue.save(task)
            task.result = {"prompt": str(task.data.get("girl_name", ""))}
            task.status, task.finished_at = TaskStatus.COMPLETED, now()
            await self.queue.save(task)
        finally:
            self.semaphore.release()


async def serve(name: str, concurrency: int) -> None:
    queue = SeedQueueService(load_settings(), client_name=f"seed-worker:{name}")
    worker = SeedWorker(queue, concurrency)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(worker, "stopping", True))
    print("ready", flush=True)
    await worker.run(TaskType.GENERATE_IMAGE_PROMPT)
    await queue.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.seed")
    parser.add_argument("--name", required=True)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()
    asyncio.run(serve(args.name, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
