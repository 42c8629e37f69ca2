"""VeniceClient and VeniceImageClient against the loopback FakeVenice."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from consumers.providers.base import RetryPolicy
from consumers.providers.venice import VeniceClient
from consumers.providers.venice_image import VeniceImageClient
from shared.config_values import Secret
from shared.errors import ProviderRejectedError, ProviderUnavailableError
from tests.support.fakes.http import Reply, hang
from tests.support.fakes.venice import CHAT_PATH, IMAGE_PATH, FakeVenice

FAST = RetryPolicy(budget_seconds=3.0, max_attempts=4, initial_wait=0.01, max_wait=0.05)
MESSAGES = [
    {"role": "system", "content": "Ты Мира, весёлая бариста."},
    {"role": "user", "content": "Привет! Как прошёл день?"},
]


@pytest.fixture
async def venice() -> AsyncIterator[FakeVenice]:
    async with FakeVenice() as fake:
        yield fake


@pytest.fixture
async def chat(venice: FakeVenice) -> AsyncIterator[VeniceClient]:
    client = VeniceClient(
        Secret(venice.api_key), base_url=venice.url, model="m-test", timeout=2.0, retry=FAST
    )
    yield client
    await client.aclose()


@pytest.fixture
async def image(venice: FakeVenice) -> AsyncIterator[VeniceImageClient]:
    client = VeniceImageClient(
        Secret(venice.api_key),
        base_url=venice.url,
        model="img-test",
        safe_mode=False,
        default_negative_prompt="lowres",
        timeout=2.0,
        retry=FAST,
    )
    yield client
    await client.aclose()


async def test_chat_sends_contract_and_returns_content(
    chat: VeniceClient, venice: FakeVenice
) -> None:
    reply = await chat.chat(MESSAGES, max_tokens=300, temperature=0.8)

    assert reply == "Ответ на: Привет! Как прошёл день?"
    [sent] = venice.chat_requests
    assert sent.method == "POST"
    assert sent.headers["authorization"] == f"Bearer {venice.api_key}"
    assert sent.json == {
        "model": "m-test",
        "messages": MESSAGES,
        "temperature": 0.8,
        "max_completion_tokens": 300,
        "venice_parameters": {"include_venice_system_prompt": False},
    }


async def test_chat_omits_unset_options(chat: VeniceClient, venice: FakeVenice) -> None:
    await chat.chat(MESSAGES)

    assert "temperature" not in venice.chat_requests[0].json
    assert "max_completion_tokens" not in venice.chat_requests[0].json


async def test_chat_retries_429_after_retry_after(chat: VeniceClient, venice: FakeVenice) -> None:
    venice.script(
        Reply(429, {"error": "Rate limit exceeded"}, headers={"Retry-After": "1"}), path=CHAT_PATH
    )

    assert await chat.chat(MESSAGES)

    first, second = venice.chat_requests
    assert 0.95 <= second.at - first.at < 2.5


async def test_chat_honours_venice_reset_header(chat: VeniceClient, venice: FakeVenice) -> None:
    reset = str(time.time() + 0.6)  # epoch seconds, as Venice documents it
    venice.script(
        Reply(429, {"error": "Rate limit exceeded"}, headers={"x-ratelimit-reset-requests": reset})
    )

    assert await chat.chat(MESSAGES)

    first, second = venice.chat_requests
    assert 0.4 <= second.at - first.at < 2.0


async def test_chat_retries_500_then_succeeds(chat: VeniceClient, venice: FakeVenice) -> None:
    venice.script(Reply(500, {"error": "Inference failed"}), Reply(503, {"error": "offline"}))

    assert await chat.chat(MESSAGES)
    assert len(venice.chat_requests) == 3


async def test_chat_timeout_gives_up_after_bounded_retries(venice: FakeVenice) -> None:
    policy = RetryPolicy(budget_seconds=1.0, max_attempts=3, initial_wait=0.01, max_wait=0.02)
    client = VeniceClient(Secret(venice.api_key), base_url=venice.url, timeout=0.25, retry=policy)
    venice.script(hang(), hang(), hang(), hang())
    started = time.monotonic()
    try:
        with pytest.raises(ProviderUnavailableError) as caught:
            await client.chat(MESSAGES)
    finally:
        await client.aclose()

    assert caught.value.status is None
    assert "timed out" in str(caught.value)
    assert len(venice.chat_requests) == 3
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, {"error": "Invalid request", "issues": []}, "Invalid request"),
        (401, {"error": "Authentication failed"}, "Authentication failed"),
        (402, {"error": "Insufficient USD or Diem balance"}, "Insufficient USD"),
        (400, {"error": {"message": "context too long", "type": "invalid"}}, "context too long"),
    ],
)
async def test_chat_permanent_errors_fail_at_once(
    chat: VeniceClient, venice: FakeVenice, status: int, body: object, expected: str
) -> None:
    venice.script(Reply(status, body))

    with pytest.raises(ProviderRejectedError) as caught:
        await chat.chat(MESSAGES)

    assert caught.value.status == status
    assert caught.value.provider == "venice"
    assert expected in str(caught.value)
    assert len(venice.chat_requests) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"id": "x", "object": "chat.completion", "created": 1, "model": "m", "usage": {}},
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": "  "}}]},
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": None}}]},
    ],
)
async def test_chat_without_content_is_rejected(
    chat: VeniceClient, venice: FakeVenice, body: object
) -> None:
    venice.script(Reply(200, body))

    with pytest.raises(ProviderRejectedError, match=r"no choices|empty reply"):
        await chat.chat(MESSAGES)
    assert len(venice.chat_requests) == 1


async def test_chat_accepts_content_parts(chat: VeniceClient, venice: FakeVenice) -> None:
    parts = [{"type": "text", "text": "При"}, {"type": "text", "text": "вет"}]
    venice.script(Reply(200, {"choices": [{"message": {"role": "assistant", "content": parts}}]}))

    assert await chat.chat(MESSAGES) == "Привет"


async def test_image_sends_contract_and_decodes_png(
    image: VeniceImageClient, venice: FakeVenice
) -> None:
    data = await image.generate("anime girl in a cafe")

    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    [sent] = venice.image_requests
    assert sent.headers["authorization"] == f"Bearer {venice.api_key}"
    assert sent.json == {
        "model": "img-test",
        "prompt": "anime girl in a cafe",
        "negative_prompt": "lowres",
        "safe_mode": False,
        "format": "png",
        "return_binary": False,
    }


async def test_image_explicit_negative_prompt_wins(
    image: VeniceImageClient, venice: FakeVenice
) -> None:
    await image.generate("girl", negative_prompt="blurry")

    assert venice.image_requests[0].json["negative_prompt"] == "blurry"


async def test_image_retries_429_then_succeeds(
    image: VeniceImageClient, venice: FakeVenice
) -> None:
    venice.script(Reply(429, {"error": "busy"}, headers={"Retry-After": "1"}), path=IMAGE_PATH)

    assert await image.generate("girl")

    first, second = venice.image_requests
    assert 0.95 <= second.at - first.at < 2.5


async def test_image_retries_500_then_succeeds(
    image: VeniceImageClient, venice: FakeVenice
) -> None:
    venice.script(Reply(500, {"error": "Inference failed"}))

    assert await image.generate("girl")
    assert len(venice.image_requests) == 2


async def test_image_timeout_is_unavailable(venice: FakeVenice) -> None:
    policy = RetryPolicy(budget_seconds=0.6, max_attempts=2, initial_wait=0.01, max_wait=0.02)
    client = VeniceImageClient(
        Secret(venice.api_key), base_url=venice.url, timeout=0.25, retry=policy
    )
    venice.script(hang(), hang())
    try:
        with pytest.raises(ProviderUnavailableError):
            await client.generate("girl")
    finally:
        await client.aclose()
    assert len(venice.image_requests) == 2


async def test_image_content_policy_is_final(image: VeniceImageClient, venice: FakeVenice) -> None:
    venice.script(Reply(422, {"error": "Content policy violation"}))

    with pytest.raises(ProviderRejectedError, match="Content policy"):
        await image.generate("girl")
    assert len(venice.image_requests) == 1


async def test_image_bad_payload_is_rejected(image: VeniceImageClient, venice: FakeVenice) -> None:
    venice.script(Reply(200, {"id": "x", "images": []}), Reply(200, {"id": "y", "images": ["@@"]}))

    with pytest.raises(ProviderRejectedError, match="no images"):
        await image.generate("girl")
    with pytest.raises(ProviderRejectedError, match="invalid base64"):
        await image.generate("girl")


async def test_fake_rejects_wrong_key(venice: FakeVenice) -> None:
    client = VeniceClient(Secret("wrong"), base_url=venice.url, retry=FAST)
    try:
        with pytest.raises(ProviderRejectedError) as caught:
            await client.chat(MESSAGES)
    finally:
        await client.aclose()
    assert caught.value.status == 401
