"""Memory figures of `bench.pipeline`: Redis bytes per task, and the million-task backlog drain."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from shared.config import Settings
from shared.queue import Ending, QueueService, TaskEntry
from shared.tasks import TaskStatus, TaskType, dumps

TASK_TYPE = TaskType.GENERATE_IMAGE_PROMPT
BATCH = 1000


def payload(i: int) -> dict[str, Any]:
    return {"girl_name": f"n{i}", "girl_description": "bench"}


async def fill(queue: QueueService, n: int) -> None:
    for first in range(0, n, BATCH):
        items = [(1, payload(i)) for i in range(first, min(n, first + BATCH))]
        await queue.enqueue_many(TASK_TYPE, items)


async def memory_usage(admin: Redis, pattern: str) -> tuple[int, int]:
    """(bytes, keys) of the keys matching `pattern`, by MEMORY USAGE (exact: samples 0)."""
    keys = [k async for k in admin.scan_iter(match=pattern, count=5000)]
    total = 0
    for first in range(0, len(keys), 5000):
        pipe = admin.pipeline(transaction=False)
        for key in keys[first : first + 5000]:
            pipe.memory_usage(key, samples=0)
        total += sum(int(n or 0) for n in await pipe.execute())
    return total, len(keys)


async def delete_matching(admin: Redis, pattern: str) -> None:
    keys = [k async for k in admin.scan_iter(match=pattern, count=5000)]
    for first in range(0, len(keys), 5000):
        await admin.delete(*keys[first : first + 5000])


async def drain_in_process(queue: QueueService, n: int) -> None:
    """Finish every waiting task through the consumer primitives, no handler in between."""
    consumer = queue.consumer("memory")
    done = 0
    while done < n:
        entries = [e for e in await consumer.read(TASK_TYPE, 500, 100) if isinstance(e, TaskEntry)]
        started = time.time()
        attempts = await consumer.start(entries, started)
        outcomes = [
            Ending(e, TaskStatus.COMPLETED, a, started, result_json=dumps({"prompt": "p"}))
            for e, a in zip(entries, attempts, strict=True)
        ]
        await consumer.finish(outcomes)
        done += len(entries)


async def bytes_per_task(settings_for: Any, redis_url: str, n: int) -> dict[str, float]:
    """Bytes per waiting task (its stream entry + record) and per finished record."""
    prefix = f"bench-mem:{uuid.uuid4().hex[:8]}:"
    settings: Settings = settings_for(redis_url, prefix)
    queue = QueueService(settings, "bench-memory")
    await queue.connect()
    admin = Redis.from_url(redis_url)
    try:
        await fill(queue, n)
        waiting, _ = await memory_usage(admin, f"{prefix}*")
        empty_stream = await admin.memory_usage(queue.keys.stream(TASK_TYPE), samples=0) or 0
        await drain_in_process(queue, n)
        finished, records = await memory_usage(admin, f"{prefix}result:*")
        leftover, _ = await memory_usage(admin, f"{prefix}queue:*")
    finally:
        await delete_matching(admin, f"{prefix}*")
        await queue.close()
        await admin.aclose()
    return {
        "redis_bytes_per_waiting_task": round(waiting / n, 1),
        "redis_bytes_per_finished_record": round(finished / max(1, records), 1),
        "redis_stream_bytes_while_waiting": empty_stream,
        "redis_bytes_left_besides_records": leftover,
    }


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return round(int(status.split("VmRSS:")[1].split()[0]) / 1024, 1)


async def drain_with_consumer(
    settings_for: Any, redis_url: str, n: int, child_env: Any, root: Path
) -> dict[str, Any]:
    """Enqueue `n` tasks first, then time one consumer process draining them all."""
    prefix = f"bench-backlog:{uuid.uuid4().hex[:8]}:"
    settings: Settings = settings_for(redis_url, prefix)
    queue = QueueService(settings, "bench-backlog")
    await queue.connect()
    admin = Redis.from_url(redis_url)
    stream = queue.keys.stream(TASK_TYPE)
    try:
        await fill(queue, n)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.consumer", "--name", "backlog",
            cwd=root, env=child_env(settings), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        if proc.stdout is None:
            raise RuntimeError("no stdout pipe")
        await proc.stdout.readline()
        start = time.perf_counter()
        await asyncio.sleep(1.0)
        rss_start = rss_mb(proc.pid)
        while True:  # every finished entry is deleted: an empty stream means all done
            if await admin.xlen(stream) == 0:
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - start
        rss_end = rss_mb(proc.pid)
        proc.terminate()
        await proc.wait()
        await delete_matching(admin, f"{prefix}result:*")
        left, _ = await memory_usage(admin, f"{prefix}*")
    finally:
        await delete_matching(admin, f"{prefix}*")
        await queue.close()
        await admin.aclose()
    return {
        "tasks": n,
        "drain_tps": round(n / elapsed),
        "consumer_rss_mb_start": rss_start,
        "consumer_rss_mb_end": rss_end,
        "left_in_redis_bytes": left,
    }


# Loads what `python -m producer` loads before it connects anywhere, in one mode.
_PRODUCER_PROBE = """
import sys, time, importlib
started = time.perf_counter()
importlib.import_module(sys.argv[1])
elapsed = time.perf_counter() - started
rss = [l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1]
print(round(elapsed, 2), round(int(rss) / 1024, 1))
"""


async def producer_start(root: Path) -> dict[str, dict[str, float]]:
    """Seconds and RSS for the producer's modules to load, per mode (connecting to Telegram,
    Redis and the database comes after): the console loads no aiogram, the bot does."""
    modes = {"console": "producer.backends", "bot": "producer.launch"}
    report: dict[str, dict[str, float]] = {}
    for mode, module in modes.items():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _PRODUCER_PROBE, module, cwd=root, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        seconds, rss = out.split()
        report[mode] = {"import_seconds": float(seconds), "rss_mb": float(rss)}
    return report
