"""The consumer's Redis ACL user also covers scheduling: leases, buckets, fairness, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from scripts.redis_acl import consumer_rules
from shared.config import load_settings
from shared.queue import QueueService
from shared.tasks import TaskStatus, TaskType
from tests.support.consumer_helpers import consumer_env, start_consumer, stop_process
from tests.support.private_redis import PrivateRedis, free_port
from tests.support.sched_helpers import PAYLOADS


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.cleanup()


async def test_a_scheduled_consumer_needs_no_more_than_the_acl_allows(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    admin = aioredis.Redis.from_url(private_redis.url)
    await admin.acl_setuser("consumer", enabled=True, reset=True, passwords=["+s3cret"])
    rules = consumer_rules("q:", "r:")
    await admin.execute_command("ACL", "SETUSER", "consumer", *rules)  # type: ignore[no-untyped-call]
    settings = load_settings(
        _env_file=None,
        redis_url=private_redis.url,
        redis_queue_prefix="q:",
        redis_result_prefix="r:",
    )
    queue = QueueService(settings, "producer")
    await queue.connect()
    images = [
        await queue.enqueue_task(TaskType.GENERATE_IMAGE, 1, PAYLOADS[TaskType.GENERATE_IMAGE])
        for _ in range(3)
    ]
    replies = await queue.enqueue_many(
        TaskType.GENERATE_REPLY, [(2, PAYLOADS[TaskType.GENERATE_REPLY])] * 3, priority="high"
    )
    consumer_url = f"redis://consumer:s3cret@127.0.0.1:{private_redis.port}/0"
    env = consumer_env(
        settings.replace(redis_url=consumer_url),
        "unused",
        PROVIDER_LIMITS="offline=1",
        PROVIDER_RATES="offline=50/s",
        OFFLINE_DELAY_SECONDS="0.1",
    )
    env.pop("DATABASE_URL")
    args = ["--types", "generate_image,generate_reply", "--metrics-port", str(free_port())]
    proc = start_consumer(env, "acl-1", tmp_path / "acl.log", *args)
    try:
        tasks = await asyncio.gather(
            *(queue.wait_for_task_result(i, 30) for i in images + replies)
        )
        assert all(t.status is TaskStatus.COMPLETED for t in tasks)
        await asyncio.sleep(5.5)  # one refresh of the metrics, which read the same keys
    finally:
        assert await stop_process(proc) == 0
        await queue.close()
        await admin.aclose()
    log = (tmp_path / "acl.log").read_text()
    assert "NOPERM" not in log and "failed" not in log
