"""Replica acknowledgements: a write returns only once N replicas have it (REDIS_WAIT_REPLICAS).

Replication is asynchronous: a master can acknowledge an enqueue and die before its replica
has the entry, and the promoted replica then never heard of the task. WAIT closes that window
for the writes made before it on the same connection, so it travels in the same pipeline as
the steps it covers; on a cluster, one WAIT per node that took part, sent to that node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio import RedisCluster
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.config import Settings
from shared.queue.connection import RedisClient
from shared.queue.steps import Step

log = structlog.get_logger(__name__)

# WAITAOF (a write fsynced to the AOF on the master and its replicas) exists from Redis 7.2.
WAITAOF_SINCE = (7, 2)


def _version(raw: str) -> tuple[int, ...]:
    return tuple(int(part) for part in raw.split(".")[:2] if part.isdigit())


@dataclass(frozen=True, slots=True)
class ReplicaAcks:
    """How to wait: for `replicas` acknowledgements, at most `timeout_ms`; WAITAOF or WAIT."""

    replicas: int
    timeout_ms: int
    aof: bool = False

    @classmethod
    async def detect(cls, redis: RedisClient, settings: Settings) -> ReplicaAcks | None:
        """None when no wait is configured; WAITAOF on a Redis that has it and runs AOF.

        WAITAOF then also requires the replicas to run AOF; a replica without it never
        acknowledges, and the timeout warning says so.
        """
        if settings.redis_wait_replicas == 0:
            return None
        server: dict[str, Any] = await redis.info("server")
        persistence: dict[str, Any] = await redis.info("persistence")
        aof = _version(str(server["redis_version"])) >= WAITAOF_SINCE and bool(
            int(persistence.get("aof_enabled", 0))
        )
        return cls(settings.redis_wait_replicas, settings.redis_wait_timeout_ms, aof)

    def command(self) -> tuple[Any, ...]:
        if self.aof:
            return ("WAITAOF", 1, self.replicas, self.timeout_ms)
        return ("WAIT", self.replicas, self.timeout_ms)

    def acked(self, reply: Any) -> int:
        """Replicas that acknowledged, from a WAIT or WAITAOF reply."""
        if self.aof:
            return int(reply[1]) if int(reply[0]) >= 1 else 0
        return int(reply)

    def queue(
        self, redis: RedisClient, pipe: Pipeline | ClusterPipeline, steps: Sequence[Step]
    ) -> list[Waited]:
        """Queue one wait after the steps: per node on a cluster (which must be initialized)."""
        if not isinstance(redis, RedisCluster) or not isinstance(pipe, ClusterPipeline):
            pipe.execute_command(*self.command())
            return [Waited(None, list(range(len(steps))), [])]
        waits: dict[str, Waited] = {}
        for i, step in enumerate(steps):
            key = step.keys()[0]
            node = redis.get_node_from_key(key)
            if node is not None:
                wait = waits.setdefault(node.name, Waited(node, [], []))
                wait.steps.append(i)
                wait.keys.append(key)
        for wait in waits.values():
            # A cluster pipeline sends all of a node's commands on one connection, in order,
            # so this WAIT covers exactly the steps that went to that node.
            pipe.execute_command(*self.command(), target_nodes=wait.node)
        return list(waits.values())

    def unconfirmed(
        self, redis: RedisClient, replies: Sequence[Any], waits: Sequence[Waited]
    ) -> dict[int, Exception]:
        """The steps (by index) whose wait failed, with the error to report in their place.

        A wait cut by a dropped connection, or sent to a node that no longer owns the slot
        (a failover while the pipeline ran), says nothing about the replicas: the writes it
        covers may exist on the dead master only, so they must not be reported done (every
        step is idempotent; the caller repeats it). A wait that merely timed out with fewer
        acknowledgements is logged as `replica_wait_short` and the writes stand.
        """
        failed: dict[int, Exception] = {}
        for reply, wait in zip(replies, waits, strict=True):
            node = wait.node.name if wait.node is not None else None
            if isinstance(reply, Exception) or wait.moved(redis):
                error = reply if isinstance(reply, Exception) else _moved_error(node)
                log.warning("replica_wait_failed", node=node, error=str(error)[:200])
                failed |= dict.fromkeys(wait.steps, error)
                continue
            acked = self.acked(reply)
            if acked < self.replicas:
                log.warning(
                    "replica_wait_short",
                    wanted=self.replicas,
                    acked=acked,
                    timeout_ms=self.timeout_ms,
                    node=node,
                )
        return failed


def _moved_error(node: str | None) -> Exception:
    return RedisConnectionError(f"the slot left {node} during the write; not confirmed")


@dataclass(slots=True)
class Waited:
    """One WAIT: the cluster node it went to (None on one server), the steps it covers (by
    index in the pipeline) and their first keys."""

    node: ClusterNode | None
    steps: list[int]
    keys: list[str]

    def moved(self, redis: RedisClient) -> bool:
        """True when a covered slot changed owner while the pipeline ran (a failover): redis-py
        re-sent the steps to the new owner, and this WAIT says nothing about them."""
        if self.node is None or not isinstance(redis, RedisCluster):
            return False
        for key in self.keys:
            try:
                owner = redis.get_node_from_key(key)
            except Exception:  # noqa: BLE001 - a slot not covered right now has moved too
                return True
            if owner is None or owner.name != self.node.name:
                return True
        return False
