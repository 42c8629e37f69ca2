"""Streaming LLM calls: VeniceClient's SSE against the fake, and the offline word stream."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from consumers.providers.base import LLMClient, RetryPolicy
from consumers.providers.offline import OfflineLLMClient
from consumers.providers.venice import VeniceClient
from shared.config_values import Secret
from shared.errors import ProviderRejectedError, ProviderUnavailableError, StreamCutError
from tests.support.fakes.http import Reply, hang
from tests.support.fakes.venice import FakeVenice, StreamPlan

FAST = RetryPolicy(budget_seconds=3.0, max_attempts=3, initial_wait=0.01, max_wait=0.05)
MESSAGES = [{"role": "user", "content": "Привет! Как прошёл день?"}]
REPLY = "Ответ на: Привет! Как прошёл день?"


@pytest.fixture
async def venice() -> AsyncIterator[FakeVenice]:
    async with FakeVenice() as fake:
        yield fake


@pytest.fixture
async def client(venice: FakeVenice) -> AsyncIterator[VeniceClient]:
    llm = VeniceClient(Secret(venice.api_key), base_url=venice.url, timeout=1.0, retry=FAST)
    yield llm
    await llm.aclose()


async def collect(llm: LLMClient) -> list[str]:
    return [delta async for delta in llm.stream(MESSAGES)]


async def test_stream_yields_deltas_skipping_keepalives_until_done(
    client: VeniceClient, venice: FakeVenice
) -> None:
    deltas = await collect(client)

    assert "".join(deltas) == REPLY
    assert len(deltas) == len(REPLY.split())  # one chunk per word, the pings skipped
    request = venice.chat_requests[0].json
    assert request["stream"] is True
    assert request["venice_parameters"] == {"include_venice_system_prompt": False}
    assert venice.streams[0].closed_by_client_at is None


async def test_stream_that_breaks_before_any_text_is_retried_from_scratch(
    client: VeniceClient, venice: FakeVenice
) -> None:
    venice.plan_streams(StreamPlan(cut_after=0), StreamPlan(cut_after=0, truncate=True))

    assert "".join(await collect(client)) == REPLY
    assert len(venice.streams) == 3


@pytest.mark.parametrize(
    "plan",
    [
        StreamPlan(cut_after=2),
        StreamPlan(cut_after=2, truncate=True),
        StreamPlan(done=False),
    ],
    ids=["dropped", "truncated-json", "no-done"],
)
async def test_stream_that_breaks_after_text_keeps_it_and_says_cut(
    client: VeniceClient, venice: FakeVenice, plan: StreamPlan
) -> None:
    venice.plan_streams(plan)
    got: list[str] = []

    with pytest.raises(StreamCutError):
        async for delta in client.stream(MESSAGES):
            got.append(delta)  # noqa: PERF401 - what arrived before the break is the point

    expected = REPLY.split() if plan.done else None
    if expected is not None:
        assert "".join(got) == "".join(w + " " for w in expected[:2])
    else:
        assert "".join(got) == REPLY
    assert len(venice.streams) == 1  # never retried: the text was already shown


async def test_stream_refuses_at_once_on_4xx_and_retries_5xx(
    client: VeniceClient, venice: FakeVenice
) -> None:
    venice.script(Reply(503, {"error": "offline"}))
    assert "".join(await collect(client)) == REPLY
    assert len(venice.chat_requests) == 2

    venice.script(Reply(402, {"error": "Insufficient USD or Diem balance"}))
    with pytest.raises(ProviderRejectedError, match="Insufficient USD") as caught:
        await collect(client)
    assert caught.value.status == 402
    assert len(venice.chat_requests) == 3


async def test_stream_timeouts_are_retried_within_the_budget(venice: FakeVenice) -> None:
    policy = RetryPolicy(budget_seconds=1.0, max_attempts=2, initial_wait=0.01, max_wait=0.02)
    llm = VeniceClient(Secret(venice.api_key), base_url=venice.url, timeout=0.2, retry=policy)
    venice.script(hang(), hang())
    try:
        with pytest.raises(ProviderUnavailableError, match="timed out"):
            await collect(llm)
        venice.plan_streams(StreamPlan(first_delay=0.05, delay=0.5))  # stalls after text
        with pytest.raises(StreamCutError, match="timed out"):
            await collect(llm)
    finally:
        await llm.aclose()
    assert len(venice.chat_requests) == 3


async def test_a_server_that_ignores_stream_gives_its_whole_answer_once(
    client: VeniceClient, venice: FakeVenice
) -> None:
    venice.plan_streams(StreamPlan(ignore_stream=True))

    assert await collect(client) == [REPLY]
    assert len(venice.chat_requests) == 1
    assert venice.chat_requests[0].json["stream"] is True

    venice.reply = "  "
    venice.plan_streams(StreamPlan(ignore_stream=True))
    with pytest.raises(ProviderRejectedError, match="empty reply"):
        await collect(client)
    assert len(venice.chat_requests) == 2  # a refusal is final, not retried


async def test_stream_without_text_is_rejected(client: VeniceClient, venice: FakeVenice) -> None:
    venice.reply = "   "
    with pytest.raises(ProviderRejectedError, match="empty reply"):
        await collect(client)


async def test_closing_the_stream_closes_the_connection(
    client: VeniceClient, venice: FakeVenice
) -> None:
    venice.plan_streams(StreamPlan(delay=0.2))
    async with contextlib.aclosing(client.stream(MESSAGES)) as deltas:
        async for _ in deltas:
            break
    closed_at = time.monotonic()
    assert await venice.stream_closed_at(0) - closed_at < 0.1
    assert venice.streams[0].chunks_sent == 1


async def test_cancelling_a_reader_closes_the_connection(
    client: VeniceClient, venice: FakeVenice
) -> None:
    venice.plan_streams(StreamPlan(delay=0.2))

    async def read() -> None:
        async with contextlib.aclosing(client.stream(MESSAGES)) as deltas:
            async for _ in deltas:
                pass

    job = asyncio.create_task(read())
    await asyncio.sleep(0.1)
    job.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await job
    await venice.stream_closed_at(0)


async def test_offline_streams_word_by_word_with_its_delay() -> None:
    llm = OfflineLLMClient(word_delay=0.02)
    started = time.perf_counter()
    deltas = await collect(llm)

    assert "".join(deltas) == await llm.chat(MESSAGES)
    assert len(deltas) > 3
    assert all(d.strip() and " " not in d.strip() for d in deltas)
    assert time.perf_counter() - started >= 0.02 * (len(deltas) - 1)
