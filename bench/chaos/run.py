"""`python -m bench.chaos`: tasks through real consumers while consumers and Redis are killed.

N paid tasks (replies, image prompts, images) flow through real `python -m consumers`
processes against a private Redis with AOF. Meanwhile consumers get SIGKILL or SIGTERM at an
interval and are replaced (same name or a new one), Redis is killed with `kill -9` and
restarted, and a hostile-entry corpus plus generated garbage is mixed into the streams; a few
paid tasks have their entry corrupted, so they must fail and be refunded once. The harness
plays the bot: it charges, applies every outcome it sees (and, at the end, every stored one),
and audits side effects per task id. It prints one JSON report and exits 1 if a guarantee
broke: a task lost, a side effect twice, a failed paid task not refunded exactly once, a
consumer that crashed by itself, recovery p99 over the bar, or, once every task is final, a
user still counting a task or a provider lease still held.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.chaos.fleet import Fleet
from bench.chaos.traffic import Traffic, percentile
from bench.chaos.world import World
from shared.config import Settings, load_settings
from shared.logging import configure_logging
from tests.support.private_redis import PrivateRedis

ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000, help="paid tasks to run (default 2000)")
    parser.add_argument("--consumers", type=int, default=3, help="consumer processes (3)")
    parser.add_argument("--kill-every", type=float, default=2.0, help="seconds between kills")
    parser.add_argument("--redis-kills", type=int, default=1, help="kill -9 of Redis (1)")
    parser.add_argument("--hostile", type=int, default=40, help="garbage entries to mix in")
    parser.add_argument("--corrupt", type=float, default=0.01, help="share of corrupted tasks")
    parser.add_argument("--delay", type=float, default=0.2, help="provider seconds per task")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after seconds")
    parser.add_argument("--recovery-bar", type=float, default=8.0, help="p99 bar in seconds")
    parser.add_argument("--database-url", help="default: a SQLite file in a temporary folder")
    parser.add_argument("--seed", type=int, default=None, help="random seed (reproducible)")
    parser.add_argument(
        "--user-cap", type=int, default=4, help="USER_MAX_IN_FLIGHT for images (0: none)"
    )
    parser.add_argument(
        "--provider-limit", type=int, default=60, help="PROVIDER_LIMITS for offline (0: none)"
    )
    return parser.parse_args(argv)


def consumer_env(settings: Settings, args: argparse.Namespace) -> dict[str, str]:
    """The consumers' environment; the one chaos user's images are parked past the user cap
    and every call holds a lease, so both are attacked with the rest."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DATABASE_"))}
    env.update(
        REDIS_URL=settings.redis_url,
        REDIS_QUEUE_PREFIX=settings.redis_queue_prefix,
        REDIS_RESULT_PREFIX=settings.redis_result_prefix,
        LLM_PROVIDER="offline",
        IMAGE_PROVIDER="offline",
        OFFLINE_DELAY_SECONDS=str(args.delay),
        # --delay alone is the provider's time per task: replies do not stream word by word.
        OFFLINE_STREAM_DELAY_MS="0",
        USER_MAX_IN_FLIGHT=f"generate_image={args.user_cap}",
        PROVIDER_LIMITS=f"offline={args.provider_limit}" if args.provider_limit else "",
        SHUTDOWN_GRACE_SECONDS="1",
        LOG_JSON="true",
        LOG_LEVEL="WARNING",
    )
    return env


async def chaos(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    redis = PrivateRedis(aof=True)
    redis.start()
    settings = load_settings(
        _env_file=None,
        redis_url=redis.url,
        redis_queue_prefix="chaos:queue:",
        redis_result_prefix="chaos:result:",
        redis_result_ttl=86400,
    )
    world = World(args.database_url or f"sqlite+aiosqlite:///{workdir / 'chaos.db'}")
    traffic = Traffic(settings, world, rng)
    fleet = Fleet(consumer_env(settings, args), workdir, rng)
    started = time.monotonic()
    try:
        await world.setup()
        await traffic.start()
        await traffic.enqueue(args.tasks, args.corrupt)
        await traffic.add_hostile(args.hostile)
        fleet.start(args.consumers)
        await _disrupt(args, traffic, fleet, redis, rng)
        await fleet.stop_all()
        final = await traffic.settle()
        report = await _report(args, traffic, fleet, world, final)
    finally:
        fleet.kill_all()
        await traffic.close()
        await world.close()
        redis.cleanup()
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


async def _disrupt(
    args: argparse.Namespace,
    traffic: Traffic,
    fleet: Fleet,
    redis: PrivateRedis,
    rng: random.Random,
) -> None:
    """Kill consumers (and Redis) until every task is final or time runs out."""
    redis_kills_at = sorted(rng.uniform(0.2, 0.7) for _ in range(args.redis_kills))
    deadline = time.monotonic() + args.timeout
    next_kill = time.monotonic() + args.kill_every
    while time.monotonic() < deadline:
        done = await traffic.done_share()
        if done >= 1.0:
            return
        if redis_kills_at and done >= redis_kills_at[0]:
            redis_kills_at.pop(0)
            redis.stop()  # kill -9: AOF with fsync always keeps every acknowledged write
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            redis.start()
            traffic.redis_kills += 1
        if time.monotonic() >= next_kill:
            await fleet.kill_one(traffic)
            next_kill = time.monotonic() + args.kill_every
        fleet.reap()
        await asyncio.sleep(0.2)


async def _report(
    args: argparse.Namespace, traffic: Traffic, fleet: Fleet, world: World, final: dict[str, Any]
) -> dict[str, Any]:
    recovery = await traffic.recovery_seconds(fleet.kills)
    audit = await world.audit(final)
    lost = len(traffic.paid) - len(final)
    report: dict[str, Any] = {
        "tasks": len(traffic.paid),
        "completed": sum(1 for t in final.values() if t.status == "completed"),
        "failed": sum(1 for t in final.values() if t.status != "completed"),
        "corrupted": len(traffic.corrupted),
        "hostile_entries": traffic.hostile,
        "lost": lost,
        "announcements_max_per_task": max(traffic.announced.values(), default=0),
        "announced_twice": sum(1 for n in traffic.announced.values() if n > 1),
        "sigkills": sum(1 for k in fleet.kills if k.signal == signal.SIGKILL),
        "sigterms": sum(1 for k in fleet.kills if k.signal == signal.SIGTERM),
        "redis_kills": traffic.redis_kills,
        "consumer_crashes": fleet.crashes,
        # What failed besides the tasks corrupted on purpose (empty when all is well).
        "unexpected_failures": sorted(
            {
                f"{traffic.paid[task_id].task_type}: {(t.error or '')[:60]}"
                for task_id, t in final.items()
                if t.status != "completed" and task_id not in traffic.corrupted
            }
        ),
        "left_in_streams": await traffic.left_in_streams(),
        # Every task is final: no user may still count one, no call may hold a lease.
        "left_in_scheduling": await traffic.left_in_scheduling(
            "offline", traffic.queue.settings.consumer_dead_seconds + 1
        ),
        "recovery_s": {
            "count": len(recovery),
            "p50": percentile(recovery, 50),
            "p99": percentile(recovery, 99),
            "max": round(max(recovery), 2) if recovery else None,
        },
        **audit,
    }
    report["ok"] = _verdict(report, args.recovery_bar)
    return report


def _verdict(r: dict[str, Any], bar: float) -> bool:
    p99 = r["recovery_s"]["p99"]
    return (
        r["lost"] == 0
        and r["announced_twice"] == 0
        and r["duplicate_chat_messages"] == r["duplicate_photo_counts"] == 0
        and r["duplicate_charges"] == r["duplicate_refunds"] == 0
        and r["failed_refunded_exactly_once"] == r["failed_paid_tasks"]
        and r["completed_but_refunded"] == 0
        and r["failed"] == r["corrupted"]
        and r["consumer_crashes"] == 0
        and r["left_in_streams"] == 0
        and not any(r["left_in_scheduling"].values())
        and (p99 is None or p99 <= bar)
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("WARNING", json=True)
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    report = asyncio.run(chaos(args, workdir))
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    if report["ok"]:
        shutil.rmtree(workdir, ignore_errors=True)
        return 0
    # A failed run is the one whose consumer logs are needed: they stay, and say where.
    sys.stderr.write(f"chaos run failed; the consumers' logs: {workdir}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
