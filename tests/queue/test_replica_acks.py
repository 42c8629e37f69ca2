"""REDIS_WAIT_REPLICAS: enqueue and finish return once replicas have the write, or log that
the wait timed out; on a cluster the wait goes to the shard that took the write."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import pytest
from structlog.testing import capture_logs

from shared.config import Settings
from shared.queue import Ending, QueueService, TaskEntry
from shared.queue.replicas import ReplicaAcks
from shared.tasks import TaskStatus, TaskType, dumps
from tests.support.private_cluster import PrivateCluster

PROMPT = TaskType.GENERATE_IMAGE_PROMPT
PAYLOAD = {"girl_name": "Мира", "girl_description": "бариста"}


async def connected(settings: Settings, **changes: Any) -> QueueService:
    queue = QueueService(settings.replace(**changes), client_name="acks-test")
    await queue.connect()
    return queue


def short_waits(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == "replica_wait_short"]


@contextmanager
def frozen(pid: int) -> Iterator[None]:
    """SIGSTOP a redis-server briefly (well under the node timeout): it acknowledges nothing."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_without_replicas_a_wait_times_out_and_says_so(settings: Settings) -> None:
    """The machine's Redis has no replica: asking for one costs the timeout and a warning,
    and the task is queued all the same."""
    queue = await connected(settings, redis_wait_replicas=1, redis_wait_timeout_ms=100)
    try:
        with capture_logs() as logs:
            started = time.monotonic()
            task_id = await queue.enqueue_task(PROMPT, 1, PAYLOAD)
            elapsed = time.monotonic() - started
        assert elapsed >= 0.1
        [warning] = short_waits(logs)
        assert warning["wanted"] == 1 and warning["acked"] == 0
        assert await queue.get_task(task_id) is not None
    finally:
        await queue.close()
    quiet = await connected(settings)  # REDIS_WAIT_REPLICAS=0: no wait at all
    try:
        with capture_logs() as logs:
            await quiet.enqueue_task(PROMPT, 1, PAYLOAD)
        assert short_waits(logs) == []
    finally:
        await quiet.close()


async def test_waitaof_only_on_a_redis_that_has_it_and_runs_aof(settings: Settings) -> None:
    queue = await connected(settings)
    try:
        asked = settings.replace(redis_wait_replicas=2)
        acks = await ReplicaAcks.detect(queue.redis, asked)
        assert await ReplicaAcks.detect(queue.redis, settings) is None
        version = (await queue.redis.info("server"))["redis_version"]
        aof_on = (await queue.redis.info("persistence"))["aof_enabled"] == 1
    finally:
        await queue.close()
    assert acks is not None and acks.replicas == 2
    has_waitaof = tuple(int(p) for p in version.split(".")[:2]) >= (7, 2)
    timeout = settings.redis_wait_timeout_ms
    if has_waitaof and aof_on:
        assert acks.command() == ("WAITAOF", 1, 2, timeout)
    else:  # Redis 7.0 on this project's machines, without AOF: WAIT
        assert acks.command() == ("WAIT", 2, timeout)
    aof = ReplicaAcks(1, 250, aof=True)
    assert aof.command() == ("WAITAOF", 1, 1, 250)
    # WAITAOF answers [local fsyncs, replica fsyncs]; without the local one nothing counts.
    assert (aof.acked([1, 1]), aof.acked([0, 1])) == (1, 0)
    assert ReplicaAcks(2, 250).acked(2) == 2


@pytest.mark.topologies("cluster")
async def test_on_a_cluster_enqueue_and_finish_wait_for_the_owning_shard_s_replica(
    settings: Settings, redis_cluster: PrivateCluster
) -> None:
    queue = await connected(settings, redis_wait_replicas=1, redis_wait_timeout_ms=300)
    stream = queue.keys.stream(PROMPT)
    replica = redis_cluster.replica_of(redis_cluster.master_of(stream))
    assert replica.proc is not None
    try:
        with capture_logs() as logs:
            await queue.enqueue_task(PROMPT, 1, PAYLOAD)  # the replica is healthy: no wait
            with frozen(replica.proc.pid):
                task_id = await queue.enqueue_task(PROMPT, 1, PAYLOAD)
                consumer = queue.consumer("c1")
                entries = await consumer.read(PROMPT, 10, block_ms=100)
                deliveries = [e for e in entries if isinstance(e, TaskEntry)]
                await consumer.start(deliveries, time.time())
                outcomes = [
                    Ending(d, TaskStatus.COMPLETED, 1, time.time(), dumps({"prompt": "p"}))
                    for d in deliveries
                ]
                assert await consumer.finish(outcomes) == [True, True]
        warnings = short_waits(logs)
        # One for the enqueue, one for the finish, both from the shard that owns the type.
        assert [w["acked"] for w in warnings] == [0, 0]
        owner = redis_cluster.master_of(stream)
        assert {w["node"] for w in warnings} == {f"127.0.0.1:{owner.port}"}
        done = await queue.get_task(task_id)
        assert done is not None and done.status is TaskStatus.COMPLETED
    finally:
        await queue.close()
