"""SDImageClient against the loopback FakeSD (AUTOMATIC1111 / Forge txt2img contract)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from consumers.providers.base import RetryPolicy
from consumers.providers.sd import SDImageClient
from shared.errors import ProviderRejectedError, ProviderUnavailableError
from tests.support.fakes.http import Reply, hang
from tests.support.fakes.sd import FakeSD

FAST = RetryPolicy(budget_seconds=3.0, max_attempts=4, initial_wait=0.01, max_wait=0.05)


@pytest.fixture
async def sd() -> AsyncIterator[FakeSD]:
    async with FakeSD() as fake:
        yield fake


@pytest.fixture
async def client(sd: FakeSD) -> AsyncIterator[SDImageClient]:
    client = SDImageClient(
        base_url=sd.url, default_negative_prompt="lowres", steps=20, timeout=2.0, retry=FAST
    )
    yield client
    await client.aclose()


async def test_txt2img_sends_contract_and_decodes_png(client: SDImageClient, sd: FakeSD) -> None:
    data = await client.generate("1girl, cafe")

    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    [sent] = sd.txt2img_requests
    assert sent.method == "POST"
    assert "authorization" not in sent.headers
    assert sent.json == {
        "prompt": "1girl, cafe",
        "negative_prompt": "lowres",
        "steps": 20,
        "width": 512,
        "height": 768,
        "cfg_scale": 7.0,
        "sampler_name": "Euler a",
        "seed": -1,
        "batch_size": 1,
        "n_iter": 1,
    }


async def test_explicit_negative_prompt_wins(client: SDImageClient, sd: FakeSD) -> None:
    await client.generate("1girl", negative_prompt="bad hands")

    assert sd.txt2img_requests[0].json["negative_prompt"] == "bad hands"


async def test_retries_429_after_retry_after(client: SDImageClient, sd: FakeSD) -> None:
    sd.script(Reply(429, {"detail": "busy"}, headers={"Retry-After": "1"}))

    assert await client.generate("1girl")

    first, second = sd.txt2img_requests
    assert 0.95 <= second.at - first.at < 2.5


async def test_retries_500_then_succeeds(client: SDImageClient, sd: FakeSD) -> None:
    a1111_error = {
        "error": "RuntimeError",
        "detail": "CUDA out of memory",
        "body": "",
        "errors": "",
    }
    sd.script(Reply(500, a1111_error))

    assert await client.generate("1girl")
    assert len(sd.txt2img_requests) == 2


async def test_timeout_is_unavailable_after_bounded_retries(sd: FakeSD) -> None:
    policy = RetryPolicy(budget_seconds=1.0, max_attempts=3, initial_wait=0.01, max_wait=0.02)
    client = SDImageClient(base_url=sd.url, timeout=0.25, retry=policy)
    sd.script(hang(), hang(), hang())
    started = time.monotonic()
    try:
        with pytest.raises(ProviderUnavailableError) as caught:
            await client.generate("1girl")
    finally:
        await client.aclose()
    assert caught.value.status is None
    assert len(sd.txt2img_requests) == 3
    assert time.monotonic() - started < 2.5


async def test_validation_error_is_final_and_reads_detail(
    client: SDImageClient, sd: FakeSD
) -> None:
    detail = [{"loc": ["body", "steps"], "msg": "value is not a valid integer", "type": "int"}]
    sd.script(Reply(422, {"detail": detail}))

    with pytest.raises(ProviderRejectedError, match="not a valid integer") as caught:
        await client.generate("1girl")
    assert caught.value.status == 422
    assert len(sd.txt2img_requests) == 1


async def test_forge_style_400_is_final(client: SDImageClient, sd: FakeSD) -> None:
    sd.script(Reply(400, {"detail": "Sampler not found"}))

    with pytest.raises(ProviderRejectedError, match="Sampler not found"):
        await client.generate("1girl")
    assert len(sd.txt2img_requests) == 1


async def test_empty_images_is_rejected(client: SDImageClient, sd: FakeSD) -> None:
    sd.script(Reply(200, {"images": [], "parameters": {}, "info": "{}"}))

    with pytest.raises(ProviderRejectedError, match="no images"):
        await client.generate("1girl")


async def test_connection_refused_is_unavailable() -> None:
    async with FakeSD() as fake:
        url = fake.url
    policy = RetryPolicy(budget_seconds=0.3, max_attempts=2, initial_wait=0.01, max_wait=0.02)
    client = SDImageClient(base_url=url, timeout=1.0, retry=policy)
    try:
        with pytest.raises(ProviderUnavailableError, match="ConnectError"):
            await client.generate("1girl")
    finally:
        await client.aclose()
