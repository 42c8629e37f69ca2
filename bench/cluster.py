"""`python -m bench.cluster`: one Redis server against a 3-master Redis Cluster on this
machine, and what a master's death costs. Prints one JSON report.

- throughput: tasks of all three types enqueued at once (enqueue_many) and completed by no-op
  consumer processes (bench.consumer); a private server and a private cluster (3
  masters, 3 replicas, 2 s node timeout), alternating rounds, median.
- enqueue latency on the cluster, one call at a time, with REDIS_WAIT_REPLICAS 0 and 1.
- failover drills (bench.failover) on the cluster and behind Sentinel, with
  REDIS_WAIT_REPLICAS 0 and 1, the replica in sync or lagging 0.3 s: seconds until the dead
  master's type completes again, tasks acknowledged and lost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.failover import (
    PAYLOADS,
    VICTIM,
    Target,
    cluster_target,
    consumer_env,
    run_drill,
    sentinel_target,
)
from bench.fleet import Consumers, delete_run
from shared.config import Settings, load_settings
from shared.logging import configure_logging
from shared.queue import QueueService
from shared.tasks import TaskType
from tests.support.private_cluster import PrivateCluster
from tests.support.private_redis import PrivateRedis
from tests.support.private_sentinel import PrivateSentinel

BATCH = 500


def settings_for(**options: Any) -> Settings:
    prefix = f"bench:{uuid.uuid4().hex[:10]}:"
    return load_settings(
        _env_file=None,
        redis_queue_prefix=f"{prefix}queue:",
        redis_result_prefix=f"{prefix}result:",
        redis_wait_timeout_ms=2000,  # longer than the drills' replica lag
        **options,
    )


async def _enqueue_type(queue: QueueService, task_type: TaskType, n: int) -> list[str]:
    ids: list[str] = []
    for first in range(0, n, BATCH):
        # One user per task: the image user cap stays on without serialising the run.
        items = [(first + i + 1, PAYLOADS[task_type]) for i in range(min(BATCH, n - first))]
        ids += await queue.enqueue_many(task_type, items)
    return ids


async def throughput(settings: Settings, per_type: int, consumers: int) -> float:
    """Tasks/s of all three types at once, first enqueue to last completion seen by waiters."""
    fleet = Consumers("bench.consumer", consumer_env(settings))
    for i in range(consumers):
        await fleet.add(f"bench-{i}")
    queue = QueueService(settings, client_name="bench-producer")
    await queue.connect()
    try:
        start = time.perf_counter()
        per = await asyncio.gather(*(_enqueue_type(queue, t, per_type) for t in PAYLOADS))
        waits = [
            queue.wait_for_task_result(task_id, 300, task_type)
            for task_type, ids in zip(PAYLOADS, per, strict=True)
            for task_id in ids
        ]
        await asyncio.gather(*waits)
        elapsed = time.perf_counter() - start
        await delete_run(queue)
    finally:
        await queue.close()
        await fleet.stop()
    return round(3 * per_type / elapsed)


async def enqueue_latency(settings: Settings, calls: int) -> dict[str, float]:
    """Milliseconds per enqueue_task call, one at a time (the first 50 warm up)."""
    queue = QueueService(settings, client_name="bench-latency")
    await queue.connect()
    samples = []
    try:
        for _ in range(calls + 50):
            start = time.perf_counter()
            await queue.enqueue_task(VICTIM, 1, PAYLOADS[VICTIM])
            samples.append((time.perf_counter() - start) * 1000)
    finally:
        await queue.close()
    samples = sorted(samples[50:])
    return {
        "p50": round(samples[len(samples) // 2], 3),
        "p99": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 3),
    }


async def compare_throughput(
    single: PrivateRedis, cluster: PrivateCluster, args: argparse.Namespace
) -> dict[str, Any]:
    rounds: dict[str, list[float]] = {"single": [], "cluster": []}
    for number in range(args.rounds):
        print(f"throughput round {number + 1}/{args.rounds}", file=sys.stderr, flush=True)
        rounds["single"].append(
            await throughput(settings_for(redis_url=single.url), args.tasks, args.consumers)
        )
        on_cluster = settings_for(redis_url=cluster.url, redis_cluster=True)
        rounds["cluster"].append(await throughput(on_cluster, args.tasks, args.consumers))
    return {
        "single_tps": statistics.median(rounds["single"]),
        "cluster_tps": statistics.median(rounds["cluster"]),
        "rounds": rounds,
        "tasks_per_round": 3 * args.tasks,
        "consumer_processes": args.consumers,
    }


async def drills(
    name: str,
    make: Callable[[Settings, float], Target],
    topology: dict[str, Any],
    args: argparse.Namespace,
    log_dir: Path,
) -> list[dict[str, Any]]:
    """Every combination of replica acknowledgements (0, 1) and replica lag (none, 0.3 s)."""
    out = []
    for wait in args.waits:
        for lag in args.lags:
            for number in range(args.drills):
                print(f"drill {name}: wait {wait}, lag {lag} #{number + 1}", file=sys.stderr)
                settings = settings_for(redis_wait_replicas=wait, **topology)
                report = await run_drill(settings, make(settings, lag), log_dir)
                out.append(report.as_dict())
    return out


async def bench(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    single, cluster = PrivateRedis(), PrivateCluster(masters=3, replicas=1, node_timeout_ms=2000)
    sentinel = None if args.quick else PrivateSentinel(sentinels=3, down_after_ms=1000)
    report: dict[str, Any] = {}
    try:
        single.start()
        cluster.start()
        report["throughput"] = await compare_throughput(single, cluster, args)
        report["enqueue_latency_ms"] = {
            f"wait_replicas_{wait}": await enqueue_latency(
                settings_for(redis_url=cluster.url, redis_cluster=True, redis_wait_replicas=wait),
                args.latency_calls,
            )
            for wait in (0, 1)
        }
        on_cluster = {"redis_url": cluster.url, "redis_cluster": True}
        report["failover"] = {
            "cluster": await drills(
                "cluster",
                lambda s, lag: cluster_target(cluster, s, lag),
                on_cluster,
                args,
                log_dir,
            )
        }
        if sentinel is not None:
            sentinel.start()
            behind_sentinel = {
                "redis_url": "redis:///0",
                "redis_sentinels": sentinel.sentinels,
                "redis_sentinel_master": sentinel.master_name,
            }
            report["failover"]["sentinel"] = await drills(
                "sentinel",
                lambda _, lag: sentinel_target(sentinel, lag),
                behind_sentinel,
                args,
                log_dir,
            )
    finally:
        single.cleanup()
        cluster.cleanup()
        if sentinel is not None:
            sentinel.cleanup()
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--tasks", type=int, default=5000, help="tasks per type and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--consumers", type=int, default=2, help="consumer processes")
    parser.add_argument("--latency-calls", type=int, default=1000)
    parser.add_argument("--drills", type=int, default=1, help="drills per setting")
    parser.add_argument("--quick", action="store_true", help="small run, cluster drill only")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    args.waits, args.lags = [0, 1], [0.0, 0.3]
    if args.quick:
        args.tasks, args.rounds, args.latency_calls, args.drills = 300, 1, 100, 1
        args.waits, args.lags = [1], [0.3]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("ERROR", json=True)
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as log_dir:
        report = asyncio.run(bench(args, Path(log_dir)))
    report["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    output = orjson.dumps(report, option=orjson.OPT_INDENT_2)
    sys.stdout.write(output.decode() + "\n")
    if args.json:
        args.json.write_bytes(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
