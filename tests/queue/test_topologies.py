"""What the topology changes: the client the factory builds, sharded completions on a
cluster, and a claim after an outage (every heartbeat old) that judges nobody dead."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.config import Settings, load_settings
from shared.errors import ConfigError
from shared.queue import Ending, QueueService, TaskEntry
from shared.queue.connection import (
    FastSentinelConnection,
    RedisClient,
    SentinelRedis,
    create_redis,
)
from shared.queue.lua import SCRIPTS
from shared.queue.scripts import script_text
from shared.tasks import TaskStatus, TaskType, dumps
from tests.support.private_redis import PrivateRedis, free_port

PROMPT = TaskType.GENERATE_IMAGE_PROMPT
PAYLOAD = {"girl_name": "Мира", "girl_description": "бариста"}


async def test_one_setting_picks_the_client(settings: Settings) -> None:
    single = create_redis(settings, "t")
    cluster = create_redis(settings.replace(redis_cluster=True), "t")
    sentinel = create_redis(settings.replace(redis_sentinels=["127.0.0.1:1"]), "t")
    try:
        assert type(single) is aioredis.Redis
        assert isinstance(cluster, aioredis.RedisCluster)
        assert isinstance(sentinel, SentinelRedis)
    finally:
        for client in (single, cluster, sentinel):
            await client.aclose()
    with pytest.raises(ConfigError, match="exclude each other"):
        load_settings(_env_file=None, redis_cluster=True, redis_sentinels="127.0.0.1:26379")
    with pytest.raises(ConfigError, match="REDIS_SENTINELS"):
        load_settings(_env_file=None, redis_sentinels="no-port")


_PUBLISH_BY_HAND = re.compile(r"""call\(\s*['"]s?publish['"]""", re.IGNORECASE)


def test_scripts_announce_through_the_topologys_publish_and_never_by_hand() -> None:
    """Completions and cancels go by SPUBLISH on a cluster, PUBLISH otherwise: every script
    announces through the `publish()` the runner defines, none names either command."""
    announcing = {name for name, body in SCRIPTS.items() if "publish(" in body}
    finishes = {"finish", "finish_batch", "finish_early", "finish_fair"}
    assert announcing == {*finishes, "fail", "cancel", "fail_fair"}
    for name, body in SCRIPTS.items():
        assert not _PUBLISH_BY_HAND.search(body), name
        sharded, plain = script_text(body, sharded=True), script_text(body)
        assert sharded.endswith(body) and plain.endswith(body)
        assert "'SPUBLISH'" in sharded and "'PUBLISH'" not in sharded
        assert "'PUBLISH'" in plain and "'SPUBLISH'" not in plain


async def _complete_one(queue: QueueService) -> str:
    task_id = await queue.enqueue_task(PROMPT, 1, PAYLOAD)
    consumer = queue.consumer("c1")
    [delivery] = await consumer.read(PROMPT, 1, block_ms=500)
    assert isinstance(delivery, TaskEntry)
    [n] = await consumer.start([delivery], time.time())
    outcome = Ending(delivery, TaskStatus.COMPLETED, n, time.time(), dumps({"prompt": "p"}))
    assert await consumer.finish([outcome]) == [True]
    return task_id


async def _next(pubsub: Any, kind: str, sharded: bool) -> Any:
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        get = pubsub.get_sharded_message if sharded else pubsub.get_message
        message = await get(timeout=0.1)
        if message is not None and message["type"] == kind:
            return message
    return None


@pytest.mark.topologies("cluster")
async def test_on_a_cluster_completions_are_published_on_the_type_s_shard_only(
    queue: QueueService, redis_client: RedisClient
) -> None:
    assert isinstance(redis_client, aioredis.RedisCluster)
    channel = queue.keys.channel(PROMPT)
    await redis_client.initialize()  # ssubscribe routes by a slot map it does not fetch
    sharded = redis_client.pubsub()
    await sharded.ssubscribe(channel)
    await _next(sharded, "ssubscribe", sharded=True)
    # A classic subscriber on the very node that owns the channel: PUBLISH would reach it.
    owner = redis_client.get_node_from_key(channel)
    assert owner is not None
    classic_client = aioredis.Redis(host=owner.host, port=int(owner.port))
    classic = classic_client.pubsub()
    await classic.subscribe(channel)
    try:
        task_id = await _complete_one(queue)
        message = await _next(sharded, "smessage", sharded=True)
        assert message is not None and task_id.encode() in message["data"]
        assert await _next(classic, "message", sharded=False) is None
    finally:
        await sharded.aclose()
        await classic.aclose()  # type: ignore[no-untyped-call]
        await classic_client.aclose()


@pytest.mark.topologies("single", "cluster")
async def test_after_an_outage_a_claimer_with_an_old_heartbeat_takes_nothing_by_liveness(
    settings: Settings,
) -> None:
    """While Redis was unreachable (a failover) nobody could beat: every heartbeat is old,
    and a consumer that judged its peers dead then would take work they are still running."""
    queue = QueueService(settings.replace(consumer_dead_seconds=0.3))
    await queue.connect()
    try:
        await queue.enqueue_task(PROMPT, 1, PAYLOAD)
        owner, peer = queue.consumer("owner"), queue.consumer("peer")
        await owner.heartbeat([PROMPT])
        await peer.heartbeat([PROMPT])
        assert len(await owner.read(PROMPT, 1, block_ms=500)) == 1
        await asyncio.sleep(0.5)  # the outage: no beat from anyone
        assert await peer.claim(PROMPT, 10, min_idle_ms=3_600_000) == []
        await peer.heartbeat([PROMPT])  # back: the peer beats first, the owner has not yet
        assert len(await peer.claim(PROMPT, 10, min_idle_ms=3_600_000)) == 1
    finally:
        await queue.close()


class _Sentinels:
    """What the sentinels answer for the master's address, one answer per question: first a
    sentinel that has not caught up with a failover, then the rest."""

    def __init__(self, *answers: tuple[str, int]) -> None:
        self.answers = list(answers)
        self.asked = 0

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        self.asked += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


async def test_a_connection_through_sentinel_refuses_a_replica_named_as_the_master() -> None:
    """The old master is back as a replica (empty, as while it syncs) and one sentinel still
    names it: a read there would find nothing, so the connection asks again."""
    master = PrivateRedis()
    stale = PrivateRedis(extra=["--replicaof", "127.0.0.1", str(free_port())])
    master.start()
    stale.start()
    sentinels = _Sentinels(("127.0.0.1", stale.port), ("127.0.0.1", master.port))
    pool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
        "queue",
        sentinels,
        connection_class=FastSentinelConnection,
        retry=Retry(NoBackoff(), 3),
        retry_on_error=[RedisConnectionError],
    )
    client = aioredis.Redis.from_pool(pool)
    try:
        async with aioredis.Redis(port=master.port) as admin:
            await admin.set("record", "there")
        assert await client.get("record") == b"there"
        assert sentinels.asked == 2
    finally:
        await client.aclose()
        master.cleanup()
        stale.cleanup()
