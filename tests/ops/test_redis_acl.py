"""A consumer runs under a Redis ACL user limited to the queue's keys, channels and commands."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError

from scripts.redis_acl import consumer_rules
from shared.config import load_settings
from shared.queue import QueueService
from shared.tasks import TaskStatus, TaskType
from tests.support.consumer_helpers import consumer_env, start_consumer, stop_process
from tests.support.private_redis import PrivateRedis


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.cleanup()


async def test_a_consumer_needs_no_more_than_the_acl_allows(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    admin = aioredis.Redis.from_url(private_redis.url)
    rules = consumer_rules("q:", "r:")
    await admin.acl_setuser("consumer", enabled=True, reset=True, passwords=["+s3cret"])
    await admin.execute_command(  # type: ignore[no-untyped-call]
        "ACL", "SETUSER", "consumer", *rules
    )
    await admin.set("bot:secret", "x")
    settings = load_settings(
        _env_file=None,
        redis_url=private_redis.url,
        redis_queue_prefix="q:",
        redis_result_prefix="r:",
    )
    queue = QueueService(settings, "producer")
    await queue.connect()
    ids = [
        await queue.enqueue_task(
            TaskType.GENERATE_REPLY, 1, {"system_prompt": "s", "dialog_id": 1, "user_message": m}
        )
        for m in ("a", "b", "c")
    ]
    consumer_url = f"redis://consumer:s3cret@127.0.0.1:{private_redis.port}/0"
    env = consumer_env(settings.replace(redis_url=consumer_url), "unused")
    env.pop("DATABASE_URL")
    proc = start_consumer(env, "acl-1", tmp_path / "acl.log", "--types", "generate_reply")
    try:
        tasks = await asyncio.gather(*(queue.wait_for_task_result(i, 20) for i in ids))
        assert all(t.status is TaskStatus.COMPLETED for t in tasks)
    finally:
        assert await stop_process(proc) == 0
        await queue.close()
    log = (tmp_path / "acl.log").read_text()
    assert "NOPERM" not in log and "s3cret" not in log
    limited = aioredis.Redis.from_url(consumer_url)
    with pytest.raises(NoPermissionError):
        await limited.get("bot:secret")
    with pytest.raises(NoPermissionError):
        await limited.flushall()
    await limited.aclose()
    await admin.aclose()
