"""Runs the Lua steps by SHA, reloading them once if Redis lost its script cache (a restart)."""

from __future__ import annotations

import hashlib
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from shared.queue.lua import SCRIPTS
from shared.queue.steps import Step


class Scripts:
    """EVALSHA with one reload on NOSCRIPT; pipelines queue calls without extra round trips."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._sha = {
            name: hashlib.sha1(body.encode(), usedforsecurity=False).hexdigest()
            for name, body in SCRIPTS.items()
        }

    async def load(self) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for body in SCRIPTS.values():
            pipe.script_load(body)
        await pipe.execute()

    async def run(self, step: Step) -> Any:
        keys, args = step.keys(), step.args()
        try:
            return await self._redis.evalsha(self._sha[step.name()], len(keys), *keys, *args)
        except NoScriptError:
            await self.load()
            return await self._redis.evalsha(self._sha[step.name()], len(keys), *keys, *args)

    def queue(self, pipe: Pipeline, step: Step) -> None:
        keys = step.keys()
        pipe.evalsha(self._sha[step.name()], len(keys), *keys, *step.args())

    async def execute(self, pipe: Pipeline) -> list[Any]:
        """Execute a pipeline of queued scripts; on NOSCRIPT reload and run it once more.

        After a restart the cache is empty for every script, so no call of the first attempt
        ran and repeating the whole pipeline does nothing twice.
        """
        commands = list(pipe.command_stack)
        try:
            return await pipe.execute()
        except NoScriptError:
            await self.load()
            retry = self._redis.pipeline(transaction=False)
            for command in commands:
                retry.execute_command(*command[0], **command[1])
            return await retry.execute()
