"""Helpers for the operations tests: stranded entries, CLI subprocesses, queue snapshots."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from scripts.reclaim_report import ReclaimOptions
from shared.queue import QueueService, TaskEntry
from shared.queue.keys import GROUP
from shared.tasks import TaskType
from tests.support.consumer_helpers import ROOT, World


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return orjson.loads(self.stdout)


async def run_cli(env: dict[str, str], module: str, *args: str) -> CliResult:
    """Run `python -m module args` as the operator would, with stdin not a terminal."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


def reply_payload(world: World, text: str) -> dict[str, Any]:
    return {
        "system_prompt": "Ты Мира.",
        "history": [],
        "dialog_id": world.dialog_id,
        "user_message": text,
    }


async def strand(
    queue: QueueService, task_type: TaskType, count: int, name: str = "dead"
) -> list[TaskEntry]:
    """Read and start `count` entries as consumer `name`, then never finish them: the pending
    list a killed consumer leaves behind."""
    consumer = queue.consumer(name)
    entries = await consumer.read(task_type, count, 100)
    deliveries = [e for e in entries if isinstance(e, TaskEntry)]
    await consumer.start(deliveries, time.time())
    assert len(entries) == count
    return deliveries


async def snapshot(redis: aioredis.Redis, queue: QueueService, task_type: TaskType) -> Any:
    """Everything reclaim could change, minus idle times (which grow by themselves)."""
    stream = queue.keys.stream(task_type)
    pending = await redis.xpending_range(stream, GROUP, "-", "+", 1000)
    entries: Any = await redis.xrange(stream)
    records = {}
    for _, fields in entries:
        task_id = orjson.loads(fields[b"task"])["task_id"]
        records[task_id] = await redis.hgetall(queue.keys.record(task_type, task_id))
    consumers = await redis.xinfo_consumers(stream, GROUP)
    return {
        "entries": entries,
        "pending": [(p["message_id"], p["consumer"], p["times_delivered"]) for p in pending],
        "records": records,
        "consumers": sorted((c["name"], c["pending"]) for c in consumers),
        "dead": await redis.xlen(queue.keys.dead(task_type)),
    }


def reclaim_options(**kw: Any) -> ReclaimOptions:
    """Reclaim settings for tests: 200 ms makes an entry stuck; gone consumers stay."""
    defaults: dict[str, Any] = {
        "types": [TaskType.GENERATE_REPLY, TaskType.GENERATE_IMAGE_PROMPT],
        "min_idle_ms": 200,
        "max_deliveries": 5,
        "consumer_idle_ms": 3_600_000,
    }
    return ReclaimOptions(**(defaults | kw))


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
