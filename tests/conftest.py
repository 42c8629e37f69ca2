"""Shared fixtures: real Redis on loopback with a unique key prefix per test.

A test module marked `pytest.mark.topologies("single", "cluster")` runs each of its tests
that uses `settings` on the machine's Redis and again on a private 3-master, 3-replica
Redis Cluster (one per test process, started on first use); `single_node` tests stay off it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis

from db.engine import create_engine, create_sessionmaker
from shared.config import Settings, load_settings
from shared.queue import QueueService
from shared.queue.connection import RedisClient
from tests.support.fakes.fault_proxy import FaultProxy
from tests.support.private_cluster import PrivateCluster

if TYPE_CHECKING:
    # Not imported at run time: the module is a pytest plugin (below), asserts rewritten.
    from tests.support.fixtures_db import Backend, Sessions

pytest_plugins = [
    "tests.support.fixtures_db",
    "tests.support.dashboard_helpers",
    "tests.support.bot_world",
]

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SINGLE, CLUSTER = "single", "cluster"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("topologies")
    if marker is None or "topology" not in metafunc.fixturenames:
        return
    topologies = list(marker.args)
    if metafunc.definition.get_closest_marker("single_node"):
        topologies = [SINGLE]
    metafunc.parametrize("topology", topologies, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the cluster the database does not matter: its tests run with SQLite only."""
    dropped = [item for item in items if _cluster_with_postgres(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]


def _cluster_with_postgres(item: pytest.Item) -> bool:
    params = getattr(getattr(item, "callspec", None), "params", {})
    return bool(params.get("topology") == CLUSTER and params.get("backend") == "postgresql")


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[PrivateCluster]:
    cluster = PrivateCluster(masters=3, replicas=1, node_timeout_ms=2000)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def topology(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", SINGLE))


@pytest.fixture
def redis_url(topology: str, request: pytest.FixtureRequest) -> str:
    if topology == CLUSTER:
        cluster: PrivateCluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    return REDIS_URL


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def settings(prefix: str, topology: str, redis_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        _env_file=None,
        redis_url=redis_url,
        redis_cluster=topology == CLUSTER,
        redis_queue_prefix=f"{prefix}queue:",
        redis_result_prefix=f"{prefix}result:",
        dashboard_redis_prefix=f"{prefix}dashboard:",
        redis_bot_prefix=f"{prefix}bot:",
        # Each test's own payment journal: a bot replays whatever it finds there.
        payment_spool_dir=str(tmp_path / "payment-spool"),
    )


@pytest.fixture
async def redis_client(prefix: str, settings: Settings) -> AsyncIterator[RedisClient]:
    """A plain client for assertions; deletes every key of the test's prefix afterwards."""
    client: RedisClient
    if settings.redis_cluster:
        client = aioredis.RedisCluster.from_url(settings.redis_url)
    else:
        client = aioredis.Redis.from_url(settings.redis_url)
    yield client
    pipe = client.pipeline(transaction=False)
    async for key in client.scan_iter(match=f"{prefix}*", count=1000):
        pipe.delete(key)  # one DEL per key: on a cluster the keys live in different slots
    await pipe.execute()
    await client.aclose()


@pytest.fixture
async def queue(settings: Settings, redis_client: aioredis.Redis) -> AsyncIterator[QueueService]:
    """A connected QueueService on the test's prefix (its clients named after the prefix)."""
    service = QueueService(settings, client_name=f"{settings.redis_queue_prefix}producer")
    await service.connect()
    yield service
    await service.close()


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    """A proxy to the shared Redis that can drop a reply after Redis ran the command."""
    async with FaultProxy(6379) as running:
        yield running


@pytest.fixture
async def proxied(settings: Settings, proxy: FaultProxy) -> AsyncIterator[QueueService]:
    """A queue service whose every command goes through `proxy`."""
    service = QueueService(settings.replace(redis_url=proxy.url), "proxied")
    await service.connect()
    yield service
    await service.close()


@pytest.fixture
async def pg(postgresql_backend: Backend) -> AsyncIterator[Sessions]:
    """Sessions on this test process's PostgreSQL schema."""
    engine = create_engine(postgresql_backend.url, schema=postgresql_backend.schema)
    yield create_sessionmaker(engine)
    await engine.dispose()
