"""A provider's global limits on real Redis: leases, their expiry, the bucket, the pause.

Attacked the way they fail in production: many consumers racing for the last lease, holders
that stop renewing, and replies lost after a lease script ran (the client then repeats it).
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from shared.limits import parse_rate
from shared.queue import QueueService
from shared.queue.leases import ProviderLeases, ProviderLimit, provider_state
from shared.queue.lua import SCRIPTS
from shared.queue.scripts import script_sha
from tests.support.fakes.fault_proxy import FaultProxy

CAPPED = ProviderLimit("local", 2, None)


def sha(name: str) -> bytes:
    return script_sha(SCRIPTS[name]).encode()


def leases_of(
    queue: QueueService, limit: ProviderLimit = CAPPED, holder: str = "c1", ttl_ms: int = 3000
) -> ProviderLeases:
    return ProviderLeases(
        redis=queue.redis,
        scripts=queue.scripts,
        keys=queue.keys,
        limit=limit,
        holder=holder,
        ttl_ms=ttl_ms,
    )


async def held(redis_client: aioredis.Redis, queue: QueueService, provider: str) -> int:
    return int(await redis_client.zcard(queue.keys.leases(provider)))


@pytest.mark.topologies("single", "cluster")
async def test_the_cap_holds_and_a_release_frees_a_lease(queue: QueueService) -> None:
    leases = leases_of(queue)
    first = await leases.admit(3)
    assert len(first.granted) == 2 and first.at_cap
    assert (await leases.admit(1)).granted == []
    await leases.release(first.granted[:1], [])
    assert len((await leases.admit(1)).granted) == 1


@pytest.mark.topologies("single", "cluster")
async def test_racing_consumers_never_hold_more_than_the_cap(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    """Twenty consumers ask at once, over and over, for the one lease left."""
    contenders = [leases_of(queue, ProviderLimit("local", 1, None), f"c{i}") for i in range(20)]
    for _ in range(30):
        answers = await asyncio.gather(*(c.admit(1) for c in contenders))
        winners = [(c, a.granted) for c, a in zip(contenders, answers, strict=True) if a.granted]
        assert len(winners) == 1 and len(winners[0][1]) == 1
        assert await held(redis_client, queue, "local") == 1
        [(winner, granted)] = winners
        await winner.release(granted, [])


async def test_a_holder_that_stops_renewing_loses_its_leases_in_the_ttl(
    queue: QueueService,
) -> None:
    dead = leases_of(queue, holder="dead", ttl_ms=300)
    alive = leases_of(queue, holder="alive", ttl_ms=300)
    [kept] = (await alive.admit(1)).granted
    assert len((await dead.admit(5)).granted) == 1
    started = time.monotonic()
    while not (await alive.admit(1)).granted:
        await alive.renew([kept])
        await asyncio.sleep(0.05)
    assert time.monotonic() - started < 0.6
    # The renewed lease was never lost.
    assert await alive.renew([kept]) == []


async def test_an_expired_lease_is_reported_and_only_added_back_on_request(
    queue: QueueService,
) -> None:
    stalled = leases_of(queue, holder="stalled", ttl_ms=100)
    [lease, released] = (await stalled.admit(2)).granted
    await stalled.release([released], [])
    await asyncio.sleep(0.2)
    # Both are missing; a released lease must never come back, so renewing adds nothing.
    assert sorted(await stalled.renew([lease, released])) == sorted([lease, released])
    assert (await provider_state(queue.redis, queue.keys, CAPPED)).leases == 0
    assert await stalled.renew([lease], restore=True) == [lease]  # its call still runs
    assert (await provider_state(queue.redis, queue.keys, CAPPED)).leases == 1


async def test_the_bucket_limits_starts_and_unused_leases_give_tokens_back(
    queue: QueueService,
) -> None:
    limit = ProviderLimit("venice", 0, parse_rate("10/s:2"))
    leases = leases_of(queue, limit)
    first = await leases.admit(5)
    assert len(first.granted) == 2 and not first.at_cap
    assert 0 < first.token_wait <= 0.1
    assert (await leases.admit(1)).granted == []
    await leases.release([], first.granted)  # never called the provider
    assert len((await leases.admit(5)).granted) == 2
    await asyncio.sleep(0.12)
    assert len((await leases.admit(5)).granted) == 1  # one token refilled in 100 ms


async def test_a_pause_stops_every_admission_until_it_ends(queue: QueueService) -> None:
    one, other = leases_of(queue, holder="one"), leases_of(queue, holder="other")
    assert 0.25 < await one.pause(0.3) <= 0.3
    assert await other.pause(0.1) > 0.2  # a shorter pause does not shorten it
    refused = await other.admit(1)
    assert refused.granted == [] and 0 < refused.paused <= 0.3
    await asyncio.sleep(0.35)
    assert len((await other.admit(1)).granted) == 1


@pytest.mark.topologies("single", "cluster")
async def test_a_waiter_at_the_cap_wakes_on_a_release(queue: QueueService) -> None:
    holder, waiter = leases_of(queue, holder="holder"), leases_of(queue, holder="waiter")
    granted = (await holder.admit(2)).granted
    assert (await waiter.admit(1)).at_cap

    async def release_soon() -> None:
        await asyncio.sleep(0.2)
        await holder.release(granted[:1], [])

    started = time.monotonic()
    await asyncio.gather(waiter.wait_for_release(5.0), release_soon())
    assert 0.15 < time.monotonic() - started < 1.0
    assert len((await waiter.admit(1)).granted) == 1


async def test_admit_repeated_after_a_lost_reply_takes_nothing_twice(
    proxied: QueueService, proxy: FaultProxy, redis_client: aioredis.Redis
) -> None:
    limit = ProviderLimit("venice", 3, parse_rate("1/m:3"))
    leases = leases_of(proxied, limit)
    proxy.cut_reply_after(sha("admit"))
    answer = await leases.admit(2)
    assert proxy.cuts == 1 and len(answer.granted) == 2
    assert await held(redis_client, proxied, "venice") == 2
    # One token left of three: the repeat did not take the first run's tokens again.
    assert len((await leases.admit(5)).granted) == 1


async def test_a_race_for_the_last_lease_with_a_lost_reply_leaks_nothing(
    proxied: QueueService, proxy: FaultProxy, redis_client: aioredis.Redis
) -> None:
    limit = ProviderLimit("local", 1, None)
    mine, theirs = leases_of(proxied, limit, "mine"), leases_of(proxied, limit, "theirs")
    proxy.cut_reply_after(sha("admit"))
    answers = await asyncio.gather(mine.admit(1), theirs.admit(1))
    granted = [g for a in answers for g in a.granted]
    assert proxy.cuts == 1 and len(granted) == 1
    owner = mine if granted[0].startswith("mine:") else theirs
    await owner.release(granted, [])
    assert await held(redis_client, proxied, "local") == 0


async def test_release_and_pause_repeated_after_a_lost_reply_act_once(
    proxied: QueueService, proxy: FaultProxy, redis_client: aioredis.Redis
) -> None:
    limit = ProviderLimit("venice", 0, parse_rate("1/m:3"))
    leases = leases_of(proxied, limit)
    granted = (await leases.admit(2)).granted  # one token left
    proxy.cut_reply_after(sha("release"))
    await leases.release([], granted[:1])
    assert proxy.cuts == 1
    # The unused lease gave its token back once: two now, not three.
    assert len((await leases.admit(5)).granted) == 2
    proxy.cut_reply_after(sha("pause"))
    # The repeat answers with the same pause; its lower bound allows a loaded machine's delay.
    assert 0.5 < await leases.pause(1.0) <= 1.0
    assert proxy.cuts == 2
    assert 500 < await redis_client.pttl(proxied.keys.paused("venice")) <= 1000
