"""The `"scale"` list of `python -m bench`: throughput and CPU per task with 1, 2 and 4
no-op consumer processes, on one Redis server and on a private 3-master Redis Cluster.

Each measure enqueues tasks of every type at once (`enqueue_many`, one user per task) and
waits for all of them: on the cluster the types' hash tags spread them over the masters.
CPU per task adds the producer (this process), every consumer process (/proc) and every
Redis server involved (INFO cpu): what a machine of this kind spends per task.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis

from bench.failover import PAYLOADS, consumer_env
from bench.fleet import Consumers, delete_run, process_cpu
from shared.config import Settings, load_settings
from shared.queue import QueueService
from shared.tasks import TaskType
from tests.support.private_cluster import PrivateCluster

COUNTS = (1, 2, 4)
BATCH = 500

RedisCpu = Callable[[], Awaitable[float]]


def _settings(redis_url: str, cluster: bool) -> Settings:
    prefix = f"bench-scale:{uuid.uuid4().hex[:10]}:"
    return load_settings(
        _env_file=None,
        redis_url=redis_url,
        redis_cluster=cluster,
        redis_queue_prefix=f"{prefix}queue:",
        redis_result_prefix=f"{prefix}result:",
    )


async def _cpu_of(urls: Sequence[str]) -> float:
    """User + system CPU seconds of these Redis servers so far."""
    total = 0.0
    for url in urls:
        admin = Redis.from_url(url)
        try:
            info = await admin.info("cpu")
        finally:
            await admin.aclose()
        total += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return total


async def _load(queue: QueueService, per_type: int) -> None:
    """Every type's tasks enqueued at once, then every result awaited."""

    async def one_type(task_type: TaskType) -> list[str]:
        ids: list[str] = []
        for first in range(0, per_type, BATCH):
            items = [(first + i + 1, PAYLOADS[task_type]) for i in range(BATCH)]
            ids += await queue.enqueue_many(task_type, items[: per_type - first])
        return ids

    per = await asyncio.gather(*(one_type(t) for t in PAYLOADS))
    await asyncio.gather(
        *(
            queue.wait_for_task_result(task_id, 300, task_type)
            for task_type, ids in zip(PAYLOADS, per, strict=True)
            for task_id in ids
        )
    )


async def measure(
    settings: Settings, consumers: int, tasks: int, redis_urls: Sequence[str]
) -> dict[str, Any]:
    """One point: `tasks` tasks (spread over the types) through `consumers` processes."""
    per_type = max(1, tasks // len(PAYLOADS))
    fleet = Consumers("bench.consumer", consumer_env(settings))
    for i in range(consumers):
        await fleet.add(f"scale-{i}")
    queue = QueueService(settings, client_name="bench-scale-producer")
    await queue.connect()
    try:
        await _load(queue, max(1, per_type // 10))  # imports, scripts, connections: warm-up
        pids = [proc.pid for proc in fleet.procs]
        before = (time.process_time(), sum(map(process_cpu, pids)), await _cpu_of(redis_urls))
        start = time.perf_counter()
        await _load(queue, per_type)
        elapsed = time.perf_counter() - start
        after = (time.process_time(), sum(map(process_cpu, pids)), await _cpu_of(redis_urls))
    finally:
        # Stopped first: a consumer blocked on a stream that is deleted logs a failed read.
        await fleet.stop()
        await delete_run(queue)
        await queue.close()
    done = per_type * len(PAYLOADS)
    producer, consumer, redis = (
        round((a - b) * 1e6 / done, 1) for a, b in zip(after, before, strict=True)
    )
    return {
        "topology": "cluster-3" if settings.redis_cluster else "single",
        "consumers": consumers,
        "tasks_per_s": round(done / elapsed),
        "cpu_us_per_task": round(producer + consumer + redis, 1),
        "cpu_us_per_task_parts": {"producer": producer, "consumers": consumer, "redis": redis},
    }


async def scale(
    redis_url: str, tasks: int, counts: Sequence[int] = COUNTS
) -> list[dict[str, Any]]:
    """The points on `redis_url` (one server), then on a private 3-master cluster (no
    replicas: their copying would be counted as the masters' own work)."""
    points = [await measure(_settings(redis_url, False), n, tasks, [redis_url]) for n in counts]
    cluster = PrivateCluster(masters=3, replicas=0)
    try:
        await asyncio.to_thread(cluster.start)
        urls = [f"redis://127.0.0.1:{node.port}/0" for node in cluster.nodes]
        points += [await measure(_settings(cluster.url, True), n, tasks, urls) for n in counts]
    finally:
        await asyncio.to_thread(cluster.cleanup)
    return points
