"""Runs the Lua steps by SHA, reloading them if Redis lost its script cache (a restart, or a
replica promoted in a failover), on one server or on a cluster.

Every step goes through here, whoever owns its script: the queue's (`lua.py`) are loaded at
connect, another owner's (the bot's) on first use, and all are reloaded after a NOSCRIPT.
"""

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

# A script announces with `publish()`, defined before its body for the topology: on a cluster
# a completion goes by SPUBLISH to the one shard that owns its channel (same hash tag as its
# stream), not as a broadcast to every node. Defined, not substituted into the text: a
# script cannot announce in a way the topology does not know.
_PUBLISH = {
    False: "local function publish(ch, msg) return redis.call('PUBLISH', ch, msg) end\n",
    True: "local function publish(ch, msg) return redis.call('SPUBLISH', ch, msg) end\n",
}


def script_text(body: str, sharded: bool = False) -> str:
    """A script as loaded: the topology's `publish`, then the body."""
    return _PUBLISH[sharded] + body


def script_sha(body: str, sharded: bool = False) -> str:
    """The SHA a script is run by (what EVALSHA carries)."""
    return hashlib.sha1(script_text(body, sharded).encode(), usedforsecurity=False).hexdigest()


class Scripts:
    """EVALSHA with a reload on NOSCRIPT; batches of steps go out as one pipeline.

    `acks` makes durable batches wait for replica acknowledgements (REDIS_WAIT_REPLICAS).
    """

    def __init__(
        self, redis: RedisClient, *, sharded: bool = False, acks: ReplicaAcks | None = None
    ) -> None:
        self._redis = redis
        self._sharded = sharded
        self._texts: dict[str, str] = {}
        self._sha: dict[str, str] = {}
        for name, body in SCRIPTS.items():
            self._learn(name, body)
        self.acks = acks

    def _learn(self, name: str, body: str) -> str:
        """Remember a script (reloaded with the others after a NOSCRIPT); its loaded text."""
        text = self._texts[name] = script_text(body, self._sharded)
        self._sha[name] = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
        return text

    def sha(self, step: Step) -> str:
        """The SHA of the step's script; another owner's script is learned on first use."""
        name = step.name()
        if name not in self._sha:
            self._learn(name, step.body())
        return self._sha[name]

    async def load(self) -> None:
        """SCRIPT LOAD every script known: in one pipeline, or on a cluster (whose pipelines
        refuse SCRIPT LOAD) one call each, which redis-py sends to every master at once."""
        if isinstance(self._redis, RedisCluster):
            for text in list(self._texts.values()):
                await self._redis.script_load(text)
            return
        pipe = self._redis.pipeline(transaction=False)
        for text in self._texts.values():
            pipe.script_load(text)
        await pipe.execute()

    async def run(self, step: Step) -> Any:
        name = step.name()
        if name not in self._sha:  # another owner's script, run for the first time
            await self._redis.script_load(self._learn(name, step.body()))
        sha, keys, args = self._sha[name], step.keys(), step.args()
        try:
            return await self._redis.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.load()
            return await self._redis.evalsha(sha, len(keys), *keys, *args)

    def queue(self, pipe: Pipeline | ClusterPipeline, step: Step) -> None:
        keys = step.keys()
        # execute_command: a cluster pipeline refuses pipe.evalsha() but routes this by the
        # first key like any keyed command, and every step's keys share one slot.
        pipe.execute_command("EVALSHA", self.sha(step), len(keys), *keys, *step.args())

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
