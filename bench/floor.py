"""The physical floor for the benchmark: a minimal hand-written Redis Streams loop.

No validation, no logging, no records beyond the result, no recovery: the producer XADDs
(pipelined in batches) and waits on one pub/sub connection; the consumer reads batches with
XREADGROUP and answers each batch with one pipeline of HSET result + XACK + XDEL + PUBLISH.
It is what any Streams queue on this Redis and this Python must at least pay, so the
pipeline's figures are reported as a ratio of it.
`python -m bench.floor --name N` runs the consumer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import uuid
from typing import Any

import orjson
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ResponseError

from shared.config import Settings, load_settings

GROUP = "floor"
COUNT = 256


def _keys(settings: Settings) -> tuple[str, str, str]:
    prefix = settings.redis_queue_prefix
    return f"{prefix}floor", f"{prefix}floor:done", settings.redis_result_prefix


class FloorProducer:
    """XADD tasks; one subscriber routes completions to futures."""

    def __init__(self, settings: Settings, client_name: str) -> None:
        # Bounded like the pipeline's pool, so 1,000 concurrent callers wait for a connection.
        pool = BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=64, client_name=client_name
        )
        self.redis = Redis.from_pool(pool)
        self.stream, self.channel, self.results = _keys(settings)
        self._futures: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen())
        await self._ready.wait()

    async def _listen(self) -> None:
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.channel)
        self._ready.set()
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            data = orjson.loads(message["data"])
            future = self._futures.get(data["id"])
            if future is not None and not future.done():
                future.set_result(data)

    async def enqueue_one(self, payload: dict[str, Any]) -> str:
        task_id = uuid.uuid4().hex
        self._futures[task_id] = asyncio.get_running_loop().create_future()
        await self.redis.xadd(self.stream, {"t": orjson.dumps({"id": task_id, "p": payload})})
        return task_id

    async def enqueue_batch(self, payloads: list[dict[str, Any]]) -> list[str]:
        ids = [uuid.uuid4().hex for _ in payloads]
        loop = asyncio.get_running_loop()
        pipe = self.redis.pipeline(transaction=False)
        for task_id, payload in zip(ids, payloads, strict=True):
            self._futures[task_id] = loop.create_future()
            pipe.xadd(self.stream, {"t": orjson.dumps({"id": task_id, "p": payload})})
        await pipe.execute()
        return ids

    async def wait(self, task_id: str, timeout: float) -> dict[str, Any]:
        future = self._futures[task_id]
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            del self._futures[task_id]

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self.redis.aclose()


async def serve(name: str) -> None:
    settings = load_settings()
    redis = Redis.from_url(settings.redis_url)
    stream, channel, results = _keys(settings)
    with contextlib.suppress(ResponseError):
        await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while not stop.is_set():
        try:
            reply: Any = await redis.xreadgroup(GROUP, name, {stream: ">"}, count=COUNT, block=500)
        except ResponseError:  # the run is over and its keys were deleted
            break
        if not reply:
            continue
        pipe = redis.pipeline(transaction=False)
        for entry_id, fields in reply[0][1]:
            task = orjson.loads(fields[b"t"])
            result = orjson.dumps({"id": task["id"], "result": {"prompt": task["p"]["girl_name"]}})
            pipe.hset(f"{results}{task['id']}", "result", result)
            pipe.expire(f"{results}{task['id']}", 3600)
            pipe.xack(stream, GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            pipe.publish(channel, result)
        await pipe.execute()
    await redis.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--name", required=True)
    asyncio.run(serve(parser.parse_args().name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
