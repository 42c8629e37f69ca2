"""Runs the Lua steps by SHA, reloading them if Redis lost its script cache (a restart, or a
replica promoted in a failover), on one server or on a cluster."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import RedisCluster
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline
from redis.exceptions import NoScriptError

from shared.queue.connection import RedisClient
from shared.queue.lua import SCRIPTS
from shared.queue.replicas import ReplicaAcks
from shared.queue.steps import Step

_PUBLISH = "redis.call('PUBLISH',"
_SPUBLISH = "redis.call('SPUBLISH',"


def script_bodies(sharded: bool) -> dict[str, str]:
    """The scripts as loaded. Sharded: completions go out by SPUBLISH, to the one shard that
    owns the type's channel (same hash tag as its stream), not as a broadcast to every node."""
    if not sharded:
        return dict(SCRIPTS)
    return {name: body.replace(_PUBLISH, _SPUBLISH) for name, body in SCRIPTS.items()}


class Scripts:
    """EVALSHA with a reload on NOSCRIPT; batches of steps go out as one pipeline.

    `acks` makes durable batches wait for replica acknowledgements (REDIS_WAIT_REPLICAS).
    """

    def __init__(
        self, redis: RedisClient, *, sharded: bool = False, acks: ReplicaAcks | None = None
    ) -> None:
        self._redis = redis
        self._bodies = script_bodies(sharded)
        self._sha = {
            name: hashlib.sha1(body.encode(), usedforsecurity=False).hexdigest()
            for name, body in self._bodies.items()
        }
        self.acks = acks

    async def load(self) -> None:
        """SCRIPT LOAD every step: in one pipeline, or on a cluster (whose pipelines refuse
        SCRIPT LOAD) one call each, which redis-py sends to every master at once."""
        if isinstance(self._redis, RedisCluster):
            for body in self._bodies.values():
                await self._redis.script_load(body)
            return
        pipe = self._redis.pipeline(transaction=False)
        for body in self._bodies.values():
            pipe.script_load(body)
        await pipe.execute()

    async def run(self, step: Step) -> Any:
        keys, args = step.keys(), step.args()
        try:
            return await self._redis.evalsha(self._sha[step.name()], len(keys), *keys, *args)
        except NoScriptError:
            await self.load()
            return await self._redis.evalsha(self._sha[step.name()], len(keys), *keys, *args)

    def queue(self, pipe: Pipeline | ClusterPipeline, step: Step) -> None:
        keys = step.keys()
        # execute_command: a cluster pipeline refuses pipe.evalsha() but routes this by the
        # first key like any keyed command, and every step's keys share one slot.
        pipe.execute_command("EVALSHA", self._sha[step.name()], len(keys), *keys, *step.args())

    async def run_all(
        self,
        steps: Sequence[Step],
        *,
        durable: bool = False,
        raise_on_error: bool = True,
        then: Callable[[Pipeline | ClusterPipeline], None] | None = None,
    ) -> list[Any]:
        """Run the steps in one pipelined round trip (one per node on a cluster).

        A step that got NOSCRIPT did not run: only those run again, after a reload (a promoted
        replica may have an empty cache while the other shards' calls went through). With
        `durable` and replica acknowledgements configured, the batch returns once the
        replicas have it or the wait timed out (logged). Errors are raised, or returned in
        place of their result when `raise_on_error` is false. `then` queues plain commands
        after the steps, in the same round trip (their replies are dropped; they are not
        repeated with the steps that got NOSCRIPT).
        """
        if not steps:
            return []
        results = await self._pipeline(steps, durable, then)
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            await self.load()
            again = await self._pipeline([steps[i] for i in missing], durable, None)
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        if raise_on_error:
            for result in results:
                if isinstance(result, Exception):
                    raise result
        return results

    async def _pipeline(
        self,
        steps: Sequence[Step],
        durable: bool,
        then: Callable[[Pipeline | ClusterPipeline], None] | None,
    ) -> list[Any]:
        if isinstance(self._redis, RedisCluster):
            await self._redis.initialize()  # the slot map is needed to address the waits
        pipe = self._redis.pipeline(transaction=False)
        for step in steps:
            self.queue(pipe, step)
        if then is not None:
            then(pipe)
        extra = len(pipe) - len(steps)
        acks = self.acks if durable else None
        waits = acks.queue(self._redis, pipe, steps) if acks else []
        replies = list(await pipe.execute(raise_on_error=False))
        results = replies[: len(steps)]
        if acks:
            unconfirmed = acks.unconfirmed(self._redis, replies[len(steps) + extra :], waits)
            for i, error in unconfirmed.items():
                if not isinstance(results[i], Exception):  # a NOSCRIPT must stay visible
                    results[i] = error
        return results
