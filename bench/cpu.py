"""`python -m bench.cpu`: CPU time per task of the pipeline and the floor, per process.

Rates on a small shared machine move with whatever else runs; CPU seconds spent per task
barely do. Each round runs the same batch throughput load as `bench.pipeline` through both
systems (interleaved) with one consumer process, and reports microseconds of CPU per task for
the producer (this process), the consumer process (/proc/<pid>/stat) and Redis (INFO cpu),
as JSON: medians over rounds, with min-max.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from typing import Any

import orjson
from redis.asyncio import Redis

from bench.fleet import Consumers, process_cpu
from bench.pipeline import SYSTEMS, child_env, delete_prefix, settings_for, throughput
from shared.logging import configure_logging
from tests.support.private_redis import run_on_redis

MEASURED = ("pipeline", "floor")
WARMUP_TASKS = 1000
_TICKS = os.sysconf("SC_CLK_TCK")


async def redis_cpu(admin: Redis) -> float:
    info = await admin.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def measure(system: str, args: argparse.Namespace, redis_url: str) -> dict[str, float]:
    module, make_producer = SYSTEMS[system]
    prefix = f"benchcpu:{uuid.uuid4().hex[:10]}:"
    settings = settings_for(redis_url, prefix)
    admin = Redis.from_url(redis_url)
    consumers = Consumers(module, child_env(settings))
    await consumers.add(f"{system}-cpu")
    producer = await make_producer(settings)
    pid = consumers.procs[0].pid
    try:
        # Imports, script loads and first connections are not part of the steady state.
        await throughput(producer, WARMUP_TASKS, single_call=args.single_call)
        before = (time.process_time(), process_cpu(pid), await redis_cpu(admin))
        tps = await throughput(producer, args.tasks, single_call=args.single_call)
        after = (time.process_time(), process_cpu(pid), await redis_cpu(admin))
    finally:
        await producer.close()
        await consumers.stop()
        await delete_prefix(admin, f"{prefix}*")
        await admin.aclose()
    per_task = [round((a - b) * 1e6 / args.tasks, 1) for a, b in zip(after, before, strict=True)]
    producer_us, consumer_us, redis_us = per_task
    return {
        "producer_us": producer_us,
        "consumer_us": consumer_us,
        "redis_us": redis_us,
        "total_us": round(sum(per_task), 1),
        "tps": tps,
    }


def summarize(rounds: list[dict[str, float]]) -> dict[str, Any]:
    """Per figure: the median, then the min-max over rounds."""
    return {
        key: [statistics.median(values), f"{min(values)}-{max(values)}"]
        for key in rounds[0]
        if (values := [r[key] for r in rounds])
    }


async def bench(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    per_system: dict[str, list[dict[str, float]]] = {s: [] for s in MEASURED}
    for number in range(1, args.rounds + 1):
        for system in MEASURED:  # interleaved: A B A B ...
            print(f"round {number}/{args.rounds}: {system}", file=sys.stderr, flush=True)
            per_system[system].append(await measure(system, args, redis_url))
    report: dict[str, Any] = {"n": args.tasks, "rounds": args.rounds}
    report["mode"] = "single_call" if args.single_call else "batch"
    report.update({system: summarize(rounds) for system, rounds in per_system.items()})
    pipeline, floor = report["pipeline"], report["floor"]
    report["pipeline_vs_floor"] = {
        key: round(pipeline[key][0] / floor[key][0], 2) for key in pipeline
    }
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--single-call", action="store_true", help="one enqueue call per task (64 concurrent)"
    )
    parser.add_argument("--own-redis", action="store_true", help="start a private redis-server")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("WARNING", json=True)
    report = run_on_redis(args.own_redis, lambda url: bench(args, url))
    # One line per system: the figures side by side.
    print(
        "{\n"
        + ",\n".join(
            f"  {orjson.dumps(k).decode()}: {orjson.dumps(v).decode()}" for k, v in report.items()
        )
        + "\n}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
