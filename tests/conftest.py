"""Shared fixtures: real Redis on loopback with a unique key prefix per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from shared.config import Settings, load_settings
from shared.queue import QueueService

pytest_plugins = ["tests.fixtures_db", "tests.dashboard_helpers", "tests.bot_world"]

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def settings(prefix: str) -> Settings:
    return load_settings(
        _env_file=None,
        redis_url=REDIS_URL,
        redis_queue_prefix=f"{prefix}queue:",
        redis_result_prefix=f"{prefix}result:",
    )


@pytest.fixture
async def redis_client(prefix: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client for assertions; deletes every key of the test's prefix afterwards."""
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def queue(settings: Settings, redis_client: aioredis.Redis) -> AsyncIterator[QueueService]:
    """A connected QueueService on the test's prefix (its clients named after the prefix)."""
    service = QueueService(settings, client_name=f"{settings.redis_queue_prefix}producer")
    await service.connect()
    yield service
    await service.close()
