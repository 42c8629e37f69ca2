"""`python -m bench.scheduling`: what leases and fairness cost per task at full load.

The same pipeline in four configurations, interleaved in one run (A B C D A B C D ...), each
on a fresh key prefix with its own consumer process (`bench.consumer`: the real
runtime with no-op handlers, which count as calls to LLM_PROVIDER=offline):

- baseline: no scheduling settings;
- leases: PROVIDER_LIMITS and PROVIDER_RATES for `offline`, never binding (every task takes
  and gives back a lease and a token, nothing waits);
- fairness: USER_MAX_IN_FLIGHT for the type, each task from another user (the bookkeeping
  of every task, no parking);
- both.

Figures per configuration, medians over rounds: throughput (batch enqueue of `--tasks`,
until the last result), the consumer process's CPU per task, one-at-a-time round trip
p50/p95, and with `--own-redis` (nobody else on the server) Redis CPU and commands
(including those inside Lua) per task. The overhead per task is 1/throughput minus the same
round's baseline, in microseconds of wall time. CPU figures are not inflated by other work
on the machine; wall times are. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from bench.fleet import Consumers
from bench.pipeline import child_env, delete_prefix, settings_for
from shared.logging import configure_logging
from shared.queue import QueueService
from shared.tasks import TaskType
from tests.support.private_redis import run_on_redis

TASK_TYPE = TaskType.GENERATE_IMAGE_PROMPT
BATCH = 500
_LEASES = {"PROVIDER_LIMITS": "offline=100000", "PROVIDER_RATES": "offline=10000000/s"}
_FAIR = {"USER_MAX_IN_FLIGHT": f"{TASK_TYPE}=1"}
CONFIGS: dict[str, dict[str, str]] = {
    "baseline": {"USER_MAX_IN_FLIGHT": ""},
    "leases": {**_LEASES, "USER_MAX_IN_FLIGHT": ""},
    "fairness": _FAIR,
    "both": {**_LEASES, **_FAIR},
}


def payload(i: int) -> dict[str, Any]:
    return {"girl_name": f"n{i}", "girl_description": "bench"}


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process used so far: unlike wall time, not inflated by
    other work on the machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def server_load(admin: Redis) -> tuple[float, int]:
    """(CPU seconds, commands processed) of the Redis server so far."""
    cpu, stats = await admin.info("cpu"), await admin.info("stats")
    used = float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])
    return used, int(stats["total_commands_processed"])


async def throughput(queue: QueueService, n: int, first_user: int) -> float:
    start = time.perf_counter()
    waiters = []
    for first in range(0, n, BATCH):
        items = [(first_user + i, payload(i)) for i in range(first, min(n, first + BATCH))]
        ids = await queue.enqueue_many(TASK_TYPE, items)
        waiters += [asyncio.create_task(queue.wait_for_task_result(i, 300)) for i in ids]
    done = await asyncio.gather(*waiters)
    if any(t.result is None for t in done):
        raise RuntimeError("a task finished without its result")
    return n / (time.perf_counter() - start)


async def latency(queue: QueueService, trips: int) -> dict[str, float]:
    samples = []
    for i in range(trips + 5):  # the first few warm up
        start = time.perf_counter()
        task_id = await queue.enqueue_task(TASK_TYPE, 10_000_000 + i, payload(i))
        await queue.wait_for_task_result(task_id, 30)
        samples.append((time.perf_counter() - start) * 1000)
    samples = sorted(samples[5:])
    return {
        "p50": round(samples[len(samples) // 2], 3),
        "p95": round(samples[min(len(samples) - 1, int(0.95 * len(samples)))], 3),
    }


async def watch_peaks(queue: QueueService, peaks: dict[str, int], done: asyncio.Event) -> None:
    """The most leases and busy users seen at once: proof the configuration was in effect."""
    while not done.is_set():
        pipe = queue.redis.pipeline(transaction=False)
        pipe.zcard(queue.keys.leases("offline"))
        pipe.zcard(queue.keys.users_running(TASK_TYPE))
        leases, users = await pipe.execute()
        peaks["leases"] = max(peaks["leases"], int(leases))
        peaks["users_running"] = max(peaks["users_running"], int(users))
        await asyncio.sleep(0.01)


async def run_config(name: str, args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    prefix = f"bench-sched:{uuid.uuid4().hex[:10]}:"
    settings = settings_for(redis_url, prefix)
    env = child_env(settings) | {"LLM_PROVIDER": "offline", **CONFIGS[name]}
    consumers = Consumers("bench.consumer", env)
    await consumers.add(f"sched-{name}")
    queue = QueueService(settings, client_name=f"bench-sched:{prefix}")
    admin = Redis.from_url(redis_url)
    out: dict[str, Any] = {}
    try:
        await queue.connect()
        out["latency_ms"] = await latency(queue, args.round_trips)
        cpu, commands = await server_load(admin)
        pid = consumers.procs[0].pid
        consumer_cpu = process_cpu(pid)
        peaks, done = {"leases": 0, "users_running": 0}, asyncio.Event()
        watcher = asyncio.create_task(watch_peaks(queue, peaks, done))
        out["throughput_tps"] = round(await throughput(queue, args.tasks, 0), 1)
        done.set()
        await watcher
        cpu_after, commands_after = await server_load(admin)
        out["consumer_cpu_us_per_task"] = round(
            (process_cpu(pid) - consumer_cpu) * 1e6 / args.tasks, 1
        )
        out["peak_leases"], out["peak_users_running"] = peaks["leases"], peaks["users_running"]
        out["redis_cpu_us_per_task"] = round((cpu_after - cpu) * 1e6 / args.tasks, 1)
        out["redis_commands_per_task"] = round((commands_after - commands) / args.tasks, 2)
    finally:
        # Keys are deleted once the consumer is gone, not under its feet.
        await consumers.stop()
        await queue.close()
        await delete_prefix(admin, f"{prefix}*")
        await admin.aclose()
    return out


def summarize(per_config: dict[str, list[dict[str, Any]]], own_redis: bool) -> dict[str, Any]:
    def median(name: str, *path: str) -> float:
        values = []
        for result in per_config[name]:
            value: Any = result
            for key in path:
                value = value[key]
            values.append(float(value))
        return round(statistics.median(values), 3)

    summary: dict[str, Any] = {}
    for name, results in per_config.items():
        tps = median(name, "throughput_tps")
        # Against the baseline of the same round: drift on the machine cancels out.
        overheads = [
            1e6 / mine["throughput_tps"] - 1e6 / base["throughput_tps"]
            for mine, base in zip(results, per_config["baseline"], strict=True)
        ]
        row: dict[str, Any] = {
            "throughput_tps": tps,
            "throughput_range": [r["throughput_tps"] for r in results],
            "us_per_task": round(1e6 / tps, 1),
            "overhead_us_per_task": round(statistics.median(overheads), 1),
            "overhead_range": [round(min(overheads), 1), round(max(overheads), 1)],
            "consumer_cpu_us_per_task": median(name, "consumer_cpu_us_per_task"),
            "latency_p50_ms": median(name, "latency_ms", "p50"),
            "latency_p95_ms": median(name, "latency_ms", "p95"),
            "peak_leases": max(r["peak_leases"] for r in results),
            "peak_users_running": max(r["peak_users_running"] for r in results),
        }
        if own_redis:
            row["redis_cpu_us_per_task"] = median(name, "redis_cpu_us_per_task")
            row["redis_commands_per_task"] = median(name, "redis_commands_per_task")
        summary[name] = row
    return summary


async def bench(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    per_config: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    for number in range(1, args.rounds + 1):
        for name in CONFIGS:  # interleaved, so drift on the machine hits every one alike
            print(f"round {number}/{args.rounds}: {name}", file=sys.stderr, flush=True)
            per_config[name].append(await run_config(name, args, redis_url))
    return {
        "tasks": args.tasks,
        "rounds": args.rounds,
        "round_trips": args.round_trips,
        "configs": {name: dict(env) for name, env in CONFIGS.items()},
        "results": summarize(per_config, args.own_redis),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scheduling", description=__doc__)
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks per throughput run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument("--own-redis", action="store_true", help="start a private redis-server")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("WARNING", json=True)
    report = run_on_redis(args.own_redis, lambda url: bench(args, url))
    sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
