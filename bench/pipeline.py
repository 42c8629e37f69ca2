"""`python -m bench`: the pipeline against the seed's design, interleaved in one run.

Each round runs both systems (A B A B ...) on fresh key prefixes with real consumer processes
and a no-op handler, and measures throughput (1 and 2 consumer processes), the enqueue rate,
round-trip latency, 1,000 concurrent waiters, consumer peak RSS and the Redis memory left
behind. Figures are medians over rounds, with min-max.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis

from bench.fleet import Consumers
from bench.floor import FloorProducer
from bench.memory import bytes_per_task, drain_with_consumer, producer_start
from bench.report import summarize, table
from bench.scale import scale
from bench.seed import SeedQueueService
from shared.config import Settings, load_settings
from shared.logging import configure_logging
from shared.queue import QueueService
from shared.tasks import QueueTask, TaskType
from tests.support.private_redis import run_on_redis

ROOT = Path(__file__).resolve().parent.parent
TASK_TYPE = TaskType.GENERATE_IMAGE_PROMPT
BATCH = 500
SINGLE_CALL_CONCURRENCY = 64


def payload(i: int) -> dict[str, Any]:
    return {"girl_name": f"n{i}", "girl_description": "bench"}


class Finished(Protocol):
    @property
    def result(self) -> dict[str, Any] | None: ...


@dataclass(frozen=True, slots=True)
class FloorResult:
    result: dict[str, Any] | None


@dataclass
class Producer:
    """What the benchmark needs from a system's producer side."""

    enqueue_one: Callable[[int], Awaitable[str]]
    enqueue_batch: Callable[[range], Awaitable[list[str]]] | None
    wait: Callable[[str, float], Coroutine[Any, Any, Finished]]
    close: Callable[[], Awaitable[None]]
    waiter_client_prefix: str


async def pipeline_producer(settings: Settings) -> Producer:
    name = f"bench-producer:{settings.redis_queue_prefix}"
    queue = QueueService(settings, client_name=name)
    await queue.connect()

    async def one(i: int) -> str:
        return await queue.enqueue_task(TASK_TYPE, 1, payload(i))

    async def batch(items: range) -> list[str]:
        return await queue.enqueue_many(TASK_TYPE, [(1, payload(i)) for i in items])

    async def wait(task_id: str, timeout: float) -> QueueTask:
        return await queue.wait_for_task_result(task_id, timeout, TASK_TYPE)

    return Producer(one, batch, wait, queue.close, f"{name}:waiter")


async def seed_producer(settings: Settings) -> Producer:
    name = f"seed-producer:{settings.redis_queue_prefix}"
    queue = SeedQueueService(settings, client_name=name)

    async def one(i: int) -> str:
        return await queue.enqueue_task(TASK_TYPE, 1, payload(i))

    return Producer(one, None, queue.wait_for_task_result, queue.close, name)


async def floor_producer(settings: Settings) -> Producer:
    name = f"floor-producer:{settings.redis_queue_prefix}"
    floor = FloorProducer(settings, name)
    await floor.start()

    async def one(i: int) -> str:
        return await floor.enqueue_one(payload(i))

    async def batch(items: range) -> list[str]:
        return await floor.enqueue_batch([payload(i) for i in items])

    async def wait(task_id: str, timeout: float) -> Finished:
        return FloorResult((await floor.wait(task_id, timeout))["result"])

    return Producer(one, batch, wait, floor.close, name)


SYSTEMS = {
    "pipeline": ("bench.consumer", pipeline_producer),
    "seed_design": ("bench.seed", seed_producer),
    "floor": ("bench.floor", floor_producer),
}


async def throughput(producer: Producer, n: int, single_call: bool) -> float:
    """Tasks/s from the first enqueue to the last completion seen by the producer."""
    waiters: list[asyncio.Task[Finished]] = []
    start = time.perf_counter()
    if single_call or producer.enqueue_batch is None:
        limit = asyncio.Semaphore(SINGLE_CALL_CONCURRENCY)

        async def one(i: int) -> Finished:
            async with limit:
                task_id = await producer.enqueue_one(i)
            return await producer.wait(task_id, 300)

        waiters = [asyncio.create_task(one(i)) for i in range(n)]
    else:
        for first in range(0, n, BATCH):
            ids = await producer.enqueue_batch(range(first, min(n, first + BATCH)))
            waiters += [asyncio.create_task(producer.wait(i, 300)) for i in ids]
    done = await asyncio.gather(*waiters)
    elapsed = time.perf_counter() - start
    if any(not t.result for t in done):
        raise RuntimeError("a task finished without its result")
    return round(n / elapsed)


async def enqueue_rate(producer: Producer, n: int) -> float:
    start = time.perf_counter()
    if producer.enqueue_batch is not None:
        for first in range(0, n, BATCH):
            await producer.enqueue_batch(range(first, min(n, first + BATCH)))
    else:
        limit = asyncio.Semaphore(SINGLE_CALL_CONCURRENCY)

        async def one(i: int) -> None:
            async with limit:
                await producer.enqueue_one(i)

        await asyncio.gather(*(one(i) for i in range(n)))
    return round(n / (time.perf_counter() - start))


async def latency(producer: Producer, trips: int) -> dict[str, float]:
    samples = []
    for i in range(trips + max(3, trips // 20)):  # the first few warm up
        start = time.perf_counter()
        await producer.wait(await producer.enqueue_one(i), 30)
        samples.append((time.perf_counter() - start) * 1000)
    samples = sorted(samples[-trips:])

    def pct(p: float) -> float:
        return round(samples[min(len(samples) - 1, int(p * len(samples)))], 3)

    return {"p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99)}


async def many_waiters(producer: Producer, admin: Redis, count: int) -> dict[str, Any]:
    """`count` concurrent enqueue-and-wait calls in one process: all right, few connections."""
    peak = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            clients = await admin.client_list()
            used = sum(
                1 for c in clients if c.get("name", "").startswith(producer.waiter_client_prefix)
            )
            peak = max(peak, used)
            await asyncio.sleep(0.02)

    async def one(i: int) -> bool:
        task = await producer.wait(await producer.enqueue_one(i), 60)
        return task.result == {"prompt": f"n{i}"}

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(*(one(i) for i in range(count)))
    done.set()
    await watcher
    return {"ok": all(results), "redis_connections": peak}


async def used_memory(admin: Redis) -> int:
    info = await admin.info("memory")
    return int(info["used_memory"])


async def memory_of(admin: Redis, pattern: str) -> tuple[int, int]:
    """(bytes, keys) that keys matching `pattern` hold, by MEMORY USAGE: unlike used_memory
    it is not moved by other clients of a shared Redis."""
    keys = [k async for k in admin.scan_iter(match=pattern, count=1000)]
    sizes = [await admin.memory_usage(k, samples=0) or 0 for k in keys]
    return sum(sizes), len(keys)


async def records_with_ttl(admin: Redis, pattern: str) -> tuple[int, bool]:
    keys = [k async for k in admin.scan_iter(match=pattern, count=1000)]
    pipe = admin.pipeline(transaction=False)
    for key in keys:
        pipe.ttl(key)
    ttls = await pipe.execute()
    return len(keys), all(t > 0 for t in ttls)


async def delete_prefix(admin: Redis, pattern: str) -> int:
    keys = [k async for k in admin.scan_iter(match=pattern, count=1000)]
    for first in range(0, len(keys), 1000):
        await admin.delete(*keys[first : first + 1000])
    return len(keys)


def settings_for(redis_url: str, prefix: str) -> Settings:
    return load_settings(
        _env_file=None,
        redis_url=redis_url,
        redis_queue_prefix=f"{prefix}queue:",
        redis_result_prefix=f"{prefix}result:",
    )


def child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        REDIS_URL=settings.redis_url,
        REDIS_QUEUE_PREFIX=settings.redis_queue_prefix,
        REDIS_RESULT_PREFIX=settings.redis_result_prefix,
        DATABASE_URL="sqlite+aiosqlite:///:memory:",
        LOG_LEVEL="WARNING",
    )
    return env


def _phase(name: str, started: float) -> float:
    now = time.perf_counter()
    if os.environ.get("BENCH_TRACE"):
        print(f"  {name}: {now - started:.2f}s", file=sys.stderr, flush=True)
    return now


async def run_system(system: str, args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    module, make_producer = SYSTEMS[system]
    prefix = f"bench:{uuid.uuid4().hex[:10]}:"
    settings = settings_for(redis_url, prefix)
    admin = Redis.from_url(redis_url)
    out: dict[str, Any] = {}
    consumers = Consumers(module, child_env(settings))
    # The first consumer starts while the enqueue rate is measured on keys of its own.
    starting = asyncio.create_task(consumers.add(f"{system}-1"))
    producer = await make_producer(settings_for(redis_url, f"{prefix}enqueue:"))
    t = time.perf_counter()
    try:
        out["enqueue_tps"] = await enqueue_rate(producer, args.tasks)
        await delete_prefix(admin, f"{prefix}enqueue:*")
        await producer.close()
        producer = await make_producer(settings)
        await starting
        await asyncio.sleep(1.0)
        out["consumer_idle_rss_mb"] = consumers.rss_mb()
        t = _phase("enqueue rate + first consumer", t)
        out["latency_ms"] = await latency(producer, args.round_trips)
        t = _phase("latency", t)
        out["waiters_1000"] = await many_waiters(producer, admin, args.waiters)
        t = _phase("waiters", t)
        out["throughput_1proc_tps"] = await throughput(producer, args.tasks, single_call=False)
        if system == "pipeline":
            out["throughput_1proc_single_call_tps"] = await throughput(
                producer, args.tasks, single_call=True
            )
        t = _phase("throughput 1 consumer", t)
        await consumers.add(f"{system}-2")
        t = _phase("second consumer start", t)
        out["throughput_2proc_tps"] = await throughput(producer, args.tasks, single_call=False)
        out["consumer_rss_mb"] = consumers.peak_rss_mb()
        t = _phase("throughput 2 consumers", t)
    finally:
        await producer.close()
        # Exited before the keys are counted and removed: a consumer still running would
        # find its stream gone as it retires.
        await consumers.stop()
    # Records carry a TTL by design; everything else the run left is counted, then removed.
    out["result_records"], records_ttl = await records_with_ttl(admin, f"{prefix}result:*")
    out["records_all_have_ttl"] = records_ttl
    await delete_prefix(admin, f"{prefix}result:*")
    out["redis_memory_leftover_bytes"], out["leftover_keys"] = await memory_of(admin, f"{prefix}*")
    await delete_prefix(admin, f"{prefix}*")
    await admin.aclose()
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2,000 tasks, 100 trips, 1 round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--round-trips", type=int, default=500)
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--own-redis", action="store_true", help="start a private redis-server")
    parser.add_argument(
        "--memory-tasks", type=int, default=100_000, help="tasks for the bytes-per-task figures"
    )
    parser.add_argument(
        "--backlog", type=int, metavar="N", help="also drain a backlog of N tasks (1,000,000)"
    )
    parser.add_argument(
        "--scale-counts", default="1,2,4", help="consumer processes for the scale points"
    )
    parser.add_argument("--json", type=Path, help="write the report as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.tasks, args.round_trips, args.memory_tasks = 1, 2000, 100, 10_000
    args.scale_counts = [int(n) for n in str(args.scale_counts).split(",") if n]
    return args


async def bench(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    per_system: dict[str, list[dict[str, Any]]] = {s: [] for s in SYSTEMS}
    admin = Redis.from_url(redis_url)
    memory_before = await used_memory(admin)
    for number in range(1, args.rounds + 1):
        for system in SYSTEMS:  # interleaved: A B A B ...
            print(f"round {number}/{args.rounds}: {system}", file=sys.stderr, flush=True)
            per_system[system].append(await run_system(system, args, redis_url))
    # Whole-server view: meaningful with --own-redis, where nobody else writes.
    delta = await used_memory(admin) - memory_before
    await admin.aclose()
    report: dict[str, Any] = {"rounds": args.rounds, "n": args.tasks}
    report["redis_used_memory_delta_bytes"] = delta
    ranges: dict[str, dict[str, list[float]]] = {}
    for system, rounds in per_system.items():
        report[system], ranges[system] = summarize(rounds)
    report["ranges"] = ranges
    report["pipeline"].update(await bytes_per_task(settings_for, redis_url, args.memory_tasks))
    report["producer_start"] = await producer_start(ROOT)
    report["scale"] = await scale(redis_url, args.tasks, args.scale_counts)
    if args.backlog:
        small = max(10_000, args.backlog // 50)
        report["backlog_small"] = await drain_with_consumer(
            settings_for, redis_url, small, child_env, ROOT
        )
        report["backlog"] = await drain_with_consumer(
            settings_for, redis_url, args.backlog, child_env, ROOT
        )
    report["enqueue_mode"] = (
        "pipeline: batch API (enqueue_many, 500 per call) and one call per task (64 concurrent); "
        "seed design: one call per task (64 concurrent), as it has no batch API"
    )
    report["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("WARNING", json=True)
    report = run_on_redis(args.own_redis, lambda url: bench(args, url))
    print(table(report, report["ranges"]))
    pipeline, seed, floor = report["pipeline"], report["seed_design"], report["floor"]
    print(
        f"throughput vs seed (1 consumer): "
        f"{pipeline['throughput_1proc_tps'] / seed['throughput_1proc_tps']:.1f}x; "
        f"vs floor: {pipeline['throughput_1proc_tps'] / floor['throughput_1proc_tps']:.2f}; "
        f"p50 vs floor: {pipeline['latency_ms']['p50'] / floor['latency_ms']['p50']:.2f}"
    )
    if "backlog" in report:
        big, small = report["backlog"], report["backlog_small"]
        print(f"backlog drain: {big['drain_tps']}/s vs {small['drain_tps']}/s for a small one")
    if args.json:
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
