"""The per-chat send budget in Redis: shared by processes, finals never starved by drafts,
a 429 holds the whole chat."""

from __future__ import annotations

import asyncio
import itertools
import time

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from producer.send_budget import SendBudget
from shared.queue.keys import BotKeys
from shared.queue.scripts import Scripts

CHAT = 501
GROUP = -1001


def budget(client: aioredis.Redis, prefix: str, interval: float = 0.2) -> SendBudget:
    keys = BotKeys(f"{prefix}bot:")
    return SendBudget(Scripts(client), keys, chat_interval=interval, group_interval=interval * 2)


async def test_two_processes_share_one_pace_per_chat(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    # Two instances stand for two bot processes: they share nothing but Redis.
    first, second = budget(redis_client, prefix), budget(redis_client, prefix)
    started = time.monotonic()
    stamps: list[float] = []

    async def send(instance: SendBudget) -> None:
        await instance.take(CHAT)
        stamps.append(time.monotonic() - started)
        await instance.answered(CHAT)  # the Bot API answered at once

    await asyncio.gather(*(send(first if n % 2 else second) for n in range(4)))
    stamps.sort()
    gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    assert stamps[0] < 0.05
    assert all(gap >= 0.18 for gap in gaps), gaps
    # Another chat is not held back by this one.
    other = time.monotonic()
    await first.take(CHAT + 1)
    assert time.monotonic() - other < 0.05
    await first.answered(CHAT + 1)


async def test_a_booked_call_waits_for_the_call_before_to_be_answered(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    shared = budget(redis_client, prefix)
    await shared.take(CHAT)  # starts at once, and is in flight ...
    started = time.monotonic()
    booked = asyncio.create_task(shared.take(CHAT))
    await asyncio.sleep(0.4)  # ... past the next slot (0.2 s)
    assert not booked.done()
    await shared.answered(CHAT)
    await booked
    # The next call goes an interval after the answer, not at its booked slot.
    assert time.monotonic() - started >= 0.58


async def test_a_skippable_call_takes_only_a_free_slot(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    shared = budget(redis_client, prefix)
    assert await shared.try_take(CHAT) == 0.0
    assert await shared.try_take(CHAT) > 0  # in flight: not free
    await shared.answered(CHAT)
    wait = await shared.try_take(CHAT)
    assert 0.1 < wait <= 0.2
    # A final message books the next slot at once; drafts then see the chat busy past it.
    started = time.monotonic()
    await shared.take(CHAT)
    assert 0.1 < time.monotonic() - started < 0.3
    await shared.answered(CHAT)
    assert await shared.try_take(CHAT) > 0.1


async def test_retry_after_holds_the_whole_chat(redis_client: aioredis.Redis, prefix: str) -> None:
    shared = budget(redis_client, prefix)
    await shared.answered(GROUP, retry_after=0.5)
    assert await shared.try_take(GROUP) > 0.4
    started = time.monotonic()
    await shared.take(GROUP)
    assert time.monotonic() - started >= 0.45
    assert shared.interval(GROUP) == 0.4
    assert shared.interval(CHAT) == 0.2


async def test_redis_away_keeps_the_pace_in_process(prefix: str) -> None:
    gone = aioredis.Redis(host="127.0.0.1", port=9, retry=Retry(NoBackoff(), 0))
    try:
        local = budget(gone, prefix)
        started = time.monotonic()
        await local.take(CHAT)
        await local.answered(CHAT)
        await local.take(CHAT)
        assert time.monotonic() - started >= 0.18
        assert await local.try_take(CHAT) > 0  # the second call is in flight
    finally:
        await gone.aclose()
