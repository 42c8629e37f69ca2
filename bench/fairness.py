"""`python -m bench.fairness`: one user's 100 images against 10 users' one image each.

One user enqueues `--hog` images, then `--users` other users enqueue one each; a real consumer
with `--slots` image slots renders each in `--duration` seconds (the offline provider). The
report says when the other users' images started, counted from their enqueue, in seconds and
in task durations: with USER_MAX_IN_FLIGHT (`fair`) and without it (`fifo`, the stream order
alone). Uses REDIS_URL under a fresh key prefix and deletes it afterwards; prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from shared.config import Settings, load_settings
from shared.logging import configure_logging
from shared.queue import QueueService
from shared.tasks import TaskType

ROOT = Path(__file__).resolve().parent.parent
IMAGE = TaskType.GENERATE_IMAGE
HOG = 1
PAYLOAD = {"prompt": "portrait, soft light", "dialog_id": 1, "girl_id": 1}


@dataclass(frozen=True, slots=True)
class Scenario:
    duration: float = 1.0
    slots: int = 2
    hog: int = 100
    users: int = 10
    fair: bool = True


def consumer_env(settings: Settings, scenario: Scenario) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    env.update(
        REDIS_URL=settings.redis_url,
        REDIS_QUEUE_PREFIX=settings.redis_queue_prefix,
        REDIS_RESULT_PREFIX=settings.redis_result_prefix,
        IMAGE_PROVIDER="offline",
        LLM_PROVIDER="offline",
        OFFLINE_DELAY_SECONDS=str(scenario.duration),
        USER_MAX_IN_FLIGHT="generate_image=1" if scenario.fair else "",
        LOG_LEVEL="WARNING",
        LOG_JSON="true",
    )
    return env


async def wait_alive(queue: QueueService, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await queue.redis.hexists(queue.keys.alive(IMAGE), name):
        if time.monotonic() > deadline:
            raise RuntimeError(f"consumer {name} did not start")
        await asyncio.sleep(0.05)


def summary(starts: list[float], duration: float) -> dict[str, Any]:
    def both(seconds: float) -> dict[str, float]:
        return {"seconds": round(seconds, 3), "durations": round(seconds / duration, 2)}

    return {
        "first_start": both(min(starts)),
        "median_start": both(statistics.median(starts)),
        "last_start": both(max(starts)),
    }


async def run_scenario(base: Settings, scenario: Scenario, log_dir: Path) -> dict[str, Any]:
    """Run once against a real consumer process; the others' start offsets, summarized."""
    prefix = f"fairness:{uuid.uuid4().hex[:10]}:"
    settings = base.replace(
        redis_queue_prefix=f"{prefix}queue:", redis_result_prefix=f"{prefix}res:"
    )
    name = f"fairness-{os.getpid()}"
    log_path = log_dir / f"{name}-{'fair' if scenario.fair else 'fifo'}.log"
    command = [sys.executable, "-m", "consumers", "--name", name, "--types", IMAGE.value]
    command += ["--image-concurrency", str(scenario.slots)]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for below
            command, cwd=ROOT, env=consumer_env(settings, scenario), stdout=log, stderr=log
        )
    queue = QueueService(settings, client_name="fairness-check")
    try:
        await queue.connect()
        await wait_alive(queue, name)
        await queue.enqueue_many(IMAGE, [(HOG, PAYLOAD)] * scenario.hog)
        enqueued = time.time()
        others = await queue.enqueue_many(
            IMAGE, [(HOG + 1 + i, PAYLOAD) for i in range(scenario.users)]
        )
        timeout = (scenario.hog + scenario.users) * scenario.duration + 60
        done = await asyncio.gather(*(queue.wait_for_task_result(i, timeout) for i in others))
        starts = [t.started_at.timestamp() - enqueued for t in done if t.started_at]
        return {"mode": "fair" if scenario.fair else "fifo", **summary(starts, scenario.duration)}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 30)
        except subprocess.TimeoutExpired:
            proc.kill()
        await queue.close()
        await _delete(settings.redis_url, prefix)


async def _delete(redis_url: str, prefix: str) -> None:
    admin = Redis.from_url(redis_url)
    keys = [k async for k in admin.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await admin.delete(*keys)
    await admin.aclose()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__)
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per image")
    parser.add_argument("--slots", type=int, default=2, help="image slots of the consumer")
    parser.add_argument("--hog", type=int, default=100, help="images of the one busy user")
    parser.add_argument("--users", type=int, default=10, help="other users, one image each")
    parser.add_argument(
        "--mode", choices=["fair", "fifo", "both"], default="both", help="default: both"
    )
    parser.add_argument(
        "--logs", type=Path, default=Path(tempfile.gettempdir()), help="consumer log folder"
    )
    return parser.parse_args(argv)


async def check(args: argparse.Namespace) -> dict[str, Any]:
    base = load_settings()
    report: dict[str, Any] = {
        "duration_seconds": args.duration,
        "slots": args.slots,
        "hog_tasks": args.hog,
        "other_users": args.users,
    }
    modes = ["fair", "fifo"] if args.mode == "both" else [args.mode]
    for mode in modes:
        scenario = Scenario(args.duration, args.slots, args.hog, args.users, mode == "fair")
        report[mode] = await run_scenario(base, scenario, args.logs)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("WARNING", json=True)
    report = asyncio.run(check(args))
    sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
