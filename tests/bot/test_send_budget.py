"""The per-chat send budget in Redis: shared by processes, finals never starved by drafts,
a 429 holds the whole chat."""

from __future__ import annotations

import asyncio
import itertools
import time

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from producer.send_budget import SWEEP_AT_LEAST, SendBudget
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


async def _pace_once(instance: SendBudget, chat_id: int) -> None:
    await instance.take(chat_id)
    await instance.answered(chat_id)


async def test_a_long_running_bot_forgets_the_chats_that_went_quiet(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    """The in-process pacing (kept for while Redis is away) holds the chats of the last
    moments, not one entry for every chat the bot ever talked to."""
    instance = budget(redis_client, prefix, interval=0.01)
    for first in range(1, 3001, 100):
        await asyncio.gather(*(_pace_once(instance, chat) for chat in range(first, first + 100)))
    await asyncio.sleep(0.1)  # every chat's interval is over
    await _pace_once(instance, 5000)
    assert instance.chats_in_memory() <= 2


async def test_with_redis_away_quiet_chats_are_forgotten_and_busy_ones_kept(prefix: str) -> None:
    gone = aioredis.Redis(host="127.0.0.1", port=9, retry=Retry(NoBackoff(), 0))
    try:
        instance = budget(gone, prefix, interval=0.01)
        for chat in range(1, 2001):
            await _pace_once(instance, chat)
        await asyncio.sleep(0.1)
        await instance.take(CHAT)  # in flight: kept, and still holds its chat
        for chat in range(3001, 3101):
            await _pace_once(instance, chat)
        assert instance.chats_in_memory() <= 101
        assert await instance.try_take(CHAT) > 0
    finally:
        await gone.aclose()


async def test_a_chat_held_by_a_long_flood_wait_does_not_keep_the_others(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    instance = budget(redis_client, prefix, interval=0.01)
    await instance.answered(CHAT, retry_after=60)  # the oldest chat stays quiet for a minute
    for first in range(10_001, 14_001, 100):
        await asyncio.gather(*(_pace_once(instance, chat) for chat in range(first, first + 100)))
    assert instance.chats_in_memory() <= 2 * SWEEP_AT_LEAST
    assert await instance.try_take(CHAT) > 30  # and it is still held
