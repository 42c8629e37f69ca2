"""LiveWriter batching and LiveReader: many tasks on one connection, wakes, reconnect resume."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from bench.live import measure
from shared.config import Settings
from shared.queue.keys import Keys
from shared.queue.live import END_DONE, LiveChunk, LiveReader, LiveWriter
from shared.tasks import TaskType

REPLY = TaskType.GENERATE_REPLY


@pytest.fixture
async def reader(settings: Settings) -> AsyncIterator[LiveReader]:
    live = LiveReader(settings, client_name=f"{settings.redis_queue_prefix}live")
    await live.start()
    yield live
    await live.aclose()


def writer(redis: aioredis.Redis, settings: Settings, task_id: str, **kw: float) -> LiveWriter:
    key = Keys.from_settings(settings).live(REPLY, task_id)
    return LiveWriter(redis, key, ttl=60, **kw)  # type: ignore[arg-type]


async def entries(redis: aioredis.Redis, key: str) -> list[dict[bytes, bytes]]:
    rows: Any = await redis.xrange(key)
    return [fields for _, fields in rows]


async def collect(reader: LiveReader, task_id: str, after: str = "0-0") -> list[LiveChunk]:
    return [chunk async for chunk in reader.follow(REPLY, task_id, after)]


async def test_first_delta_is_written_at_once_and_later_ones_coalesce(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    live = writer(redis_client, settings, "t1", flush_ms=200, flush_chars=1000)
    await live.add("При")
    assert await entries(redis_client, live.key) == [{b"d": "При".encode()}]
    for part in ("вет", ",", " как", " дела"):
        await live.add(part)
    assert len(await entries(redis_client, live.key)) == 1  # buffered, within 200 ms
    await asyncio.sleep(0.3)
    rows = await entries(redis_client, live.key)
    assert [r[b"d"].decode() for r in rows] == ["При", "вет, как дела"]
    await live.close(END_DONE)
    assert (await entries(redis_client, live.key))[-1] == {b"end": b"done"}
    assert 0 < await redis_client.ttl(live.key) <= 60


async def test_a_flush_happens_once_enough_characters_wait(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    live = writer(redis_client, settings, "t2", flush_ms=10_000, flush_chars=10)
    await live.add("a")
    await live.add("12345")
    await live.add("67890")  # 10 characters buffered: written without waiting for the timer
    rows = await entries(redis_client, live.key)
    assert [r[b"d"] for r in rows] == [b"a", b"1234567890"]
    await live.close("stopped")
    assert (await entries(redis_client, live.key))[-1] == {b"end": b"stopped"}


async def test_close_flushes_the_buffer_and_refuses_an_unknown_end(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    live = writer(redis_client, settings, "t3", flush_ms=10_000)
    await live.add("a")
    await live.add("b")
    with pytest.raises(ValueError, match="unknown live end"):
        await live.close("finished")
    await live.close("cut")
    rows = await entries(redis_client, live.key)
    assert rows == [{b"d": b"a"}, {b"d": b"b"}, {b"end": b"cut"}]
    await live.add("late")  # after the end marker nothing more is written
    assert len(await entries(redis_client, live.key)) == 3


async def test_reader_follows_many_tasks_on_one_connection(
    settings: Settings, redis_client: aioredis.Redis, reader: LiveReader
) -> None:
    ids = [f"many-{i}" for i in range(20)]
    followers = [asyncio.create_task(collect(reader, task_id)) for task_id in ids]
    await asyncio.sleep(0.05)
    writers = [writer(redis_client, settings, task_id, flush_ms=0) for task_id in ids]
    for word in ("один ", "два ", "три"):
        for live in writers:
            await live.add(word)
    for live in writers:
        await live.close(END_DONE)
    results = await asyncio.wait_for(asyncio.gather(*followers), 5)
    for chunks in results:
        assert "".join(c.text for c in chunks) == "один два три"
        assert chunks[-1].end == END_DONE
    names = [c["name"] for c in await redis_client.client_list()]
    assert names.count(f"{settings.redis_queue_prefix}live") == 1


async def test_a_task_added_while_the_read_blocks_is_seen_at_once(
    settings: Settings, redis_client: aioredis.Redis, reader: LiveReader
) -> None:
    first = asyncio.create_task(collect(reader, "blocking"))
    await asyncio.sleep(0.2)  # the reader is now blocked in XREAD for 2 s
    live = writer(redis_client, settings, "late", flush_ms=0)
    await live.add("hi")
    await live.close(END_DONE)
    started = time.perf_counter()
    chunks = await asyncio.wait_for(collect(reader, "late"), 1.5)
    assert time.perf_counter() - started < 0.2
    assert "".join(c.text for c in chunks) == "hi"
    first.cancel()


async def test_unfollowing_stops_delivery_and_a_missing_stream_yields_nothing(
    settings: Settings, reader: LiveReader
) -> None:
    async def first_chunk() -> LiveChunk:
        async for chunk in reader.follow(REPLY, "never"):
            return chunk
        raise AssertionError("unreachable")

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(first_chunk(), 0.3)
    assert reader.following() == 0


async def test_reader_resumes_from_last_ids_after_its_connection_is_killed(
    settings: Settings, redis_client: aioredis.Redis, reader: LiveReader
) -> None:
    got: list[LiveChunk] = []
    task_id = uuid.uuid4().hex

    async def follow() -> None:
        async for chunk in reader.follow(REPLY, task_id):
            got.append(chunk)  # noqa: PERF401 - read while the stream is still going

    follower = asyncio.create_task(follow())
    live = writer(redis_client, settings, task_id, flush_ms=0)
    await live.add("до ")
    await asyncio.sleep(0.2)
    assert "".join(c.text for c in got) == "до "
    assert await _kill(redis_client, f"{settings.redis_queue_prefix}live") == 1
    await live.add("после")
    await live.close(END_DONE)
    await asyncio.wait_for(follower, 5)
    assert "".join(c.text for c in got) == "до после"
    assert got[-1].end == END_DONE


async def _kill(redis: aioredis.Redis, name: str) -> int:
    ids = [c["id"] for c in await redis.client_list() if c["name"] == name]
    for client_id in ids:
        await redis.execute_command("CLIENT", "KILL", "ID", client_id)  # type: ignore[no-untyped-call]
    return len(ids)


async def test_a_rerun_voids_what_was_shown(
    settings: Settings, redis_client: aioredis.Redis, reader: LiveReader
) -> None:
    first = writer(redis_client, settings, "rerun", flush_ms=0)
    await first.add("старый ")
    await first.abandon()
    second = LiveWriter(redis_client, first.key, flush_ms=0, ttl=60, reset=True)
    await second.add("новый")
    await second.close(END_DONE)
    chunks = await asyncio.wait_for(collect(reader, "rerun"), 2)
    assert chunks[-1].reset
    assert chunks[-1].text == "новый"


async def test_the_live_latency_benchmark_runs_in_short(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    report = await measure(settings, streams=5, deltas=3, gap_ms=5)
    assert report["streams"] == 5
    for figure in ("first_delta_to_reader", "follow_join_to_first_chunk"):
        values = report[figure]
        assert isinstance(values, dict) and 0 < values["p50_ms"] <= values["p95_ms"] < 1000
