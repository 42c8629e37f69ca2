"""Live output latency: from a consumer's first XADD of a delta to the LiveReader's chunk.

`python -m bench.live --streams 50` follows that many replies at once on one reader
connection (they start at random moments, so most follows join while the read blocks) and
prints p50/p95 of two delays: first delta written -> chunk received, and a follow joining
an already-written stream -> its first chunk (the wake path). Writer and reader share this
process and its clock; the keys live under a throwaway prefix and expire.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from collections.abc import Sequence

import orjson

from shared.config import Settings, load_settings
from shared.queue.connection import create_redis
from shared.queue.live import END_DONE, LiveReader, LiveWriter
from shared.tasks import TaskType

REPLY = TaskType.GENERATE_REPLY


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2), "p95_ms": round(p95 * 1000, 2)}


async def _first_chunk(reader: LiveReader, task_id: str) -> float:
    """The moment the first chunk arrives; the follow then drains to the end marker."""
    first = 0.0
    async for chunk in reader.follow(REPLY, task_id):
        first = first or time.perf_counter()
        if chunk.end:
            break
    return first


async def _one(reader: LiveReader, writer: LiveWriter, deltas: int, gap: float) -> float:
    following = asyncio.create_task(_first_chunk(reader, writer.key.rpartition(":")[2]))
    await asyncio.sleep(random.uniform(0.0, 0.3))
    written = time.perf_counter()
    await writer.add("первое ")
    for _ in range(deltas - 1):
        await asyncio.sleep(gap)
        await writer.add("слово ")
    await writer.close(END_DONE)
    return await following - written


async def _join(reader: LiveReader, writer: LiveWriter) -> float:
    await writer.add("уже написано ")
    joined = time.perf_counter()
    first = await _first_chunk_only(reader, writer.key.rpartition(":")[2])
    await writer.close(END_DONE)
    return first - joined


async def _first_chunk_only(reader: LiveReader, task_id: str) -> float:
    async for _ in reader.follow(REPLY, task_id):
        return time.perf_counter()
    raise AssertionError("the live stream ended without a chunk")


async def measure(
    settings: Settings, streams: int, deltas: int, gap_ms: float
) -> dict[str, object]:
    reader = LiveReader(settings, client_name="bench-live")
    redis = create_redis(settings, "bench-live-writer")
    await reader.start()
    try:
        writers = [
            LiveWriter.for_task(redis, settings, REPLY, uuid.uuid4().hex, 1)
            for _ in range(streams * 2)
        ]
        first = await asyncio.gather(
            *(_one(reader, w, deltas, gap_ms / 1000) for w in writers[:streams])
        )
        busy = [
            asyncio.create_task(_one(reader, w, deltas, gap_ms / 1000))
            for w in writers[streams:-1]
        ]
        joins = [
            await _join(reader, LiveWriter.for_task(redis, settings, REPLY, uuid.uuid4().hex, 1))
            for _ in range(20)
        ]
        await asyncio.gather(*busy)
    finally:
        await reader.aclose()
        await redis.aclose()
    return {
        "streams": streams,
        "first_delta_to_reader": _percentiles(list(first)),
        "follow_join_to_first_chunk": _percentiles(joins),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.live", description=__doc__)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--deltas", type=int, default=20)
    parser.add_argument("--gap-ms", type=float, default=20.0, help="time between deltas")
    args = parser.parse_args(argv)
    prefix = f"bench:live:{uuid.uuid4().hex[:8]}:"
    settings = load_settings(
        redis_queue_prefix=f"{prefix}queue:",
        redis_result_prefix=f"{prefix}result:",
        redis_bot_prefix=f"{prefix}bot:",
    )
    report = asyncio.run(measure(settings, args.streams, args.deltas, args.gap_ms))
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
