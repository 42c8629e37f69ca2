"""No provider error, retry log or rendered traceback ever contains the API key or token."""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
import structlog
from structlog.testing import capture_logs

from consumers.providers.base import RetryPolicy
from consumers.providers.replicate import ReplicateImageClient
from consumers.providers.venice import VeniceClient
from consumers.providers.venice_image import VeniceImageClient
from shared.config_values import Secret
from shared.errors import ProviderError, ProviderRejectedError, ProviderUnavailableError
from tests.support.fakes.http import FakeServer, Reply, hang
from tests.support.fakes.replicate import FakeReplicate
from tests.support.fakes.venice import FakeVenice

SECRET = "sk-very-secret-key-4242"  # noqa: S105 - a fake credential
POLICY = RetryPolicy(budget_seconds=2.0, max_attempts=3, initial_wait=0.01, max_wait=0.02)
Call = Callable[[], Awaitable[Any]]


@asynccontextmanager
async def venice_chat(timeout: float) -> AsyncIterator[tuple[FakeServer, Call]]:
    async with FakeVenice(api_key=SECRET) as fake:
        client = VeniceClient(Secret(SECRET), base_url=fake.url, timeout=timeout, retry=POLICY)
        try:
            yield fake, lambda: client.chat([{"role": "user", "content": "hi"}])
        finally:
            await client.aclose()


@asynccontextmanager
async def venice_image(timeout: float) -> AsyncIterator[tuple[FakeServer, Call]]:
    async with FakeVenice(api_key=SECRET) as fake:
        client = VeniceImageClient(
            Secret(SECRET), base_url=fake.url, timeout=timeout, retry=POLICY
        )
        try:
            yield fake, lambda: client.generate("girl")
        finally:
            await client.aclose()


@asynccontextmanager
async def replicate(timeout: float) -> AsyncIterator[tuple[FakeServer, Call]]:
    async with FakeReplicate(token=SECRET) as fake:
        client = ReplicateImageClient(
            Secret(SECRET), base_url=fake.url, timeout=timeout, retry=POLICY, prefer_wait=1
        )
        try:
            yield fake, lambda: client.generate("girl")
        finally:
            await client.aclose()


PROVIDERS = [venice_chat, venice_image, replicate]


def assert_secret_absent(exc: ProviderError, logs: Sequence[Mapping[str, Any]]) -> None:
    # dict_tracebacks renders frame locals too, which is where a header dict would leak.
    rendered = structlog.processors.dict_tracebacks(None, "error", {"event": "x", "exc_info": exc})
    texts = [
        str(exc),
        repr(exc),
        repr(exc.args),
        "".join(traceback.format_exception(exc)),
        orjson.dumps(rendered, default=repr).decode(),
        orjson.dumps(logs, default=repr).decode(),
    ]
    for text in texts:
        assert SECRET not in text


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_echoed_secret_is_redacted(provider: Callable[..., Any]) -> None:
    async with provider(2.0) as (fake, call):
        # Some APIs echo the key they refused; the message must still not carry it.
        fake.script(
            Reply(500, {"error": f"upstream failed for Bearer {SECRET}"}),
            Reply(401, {"error": f"invalid key {SECRET}", "detail": SECRET}),
        )
        with capture_logs() as logs, pytest.raises(ProviderRejectedError) as caught:
            await call()

    assert [entry["event"] for entry in logs] == ["provider_retry"]
    assert "***" in str(caught.value)
    assert_secret_absent(caught.value, logs)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_timeout_traceback_has_no_secret(provider: Callable[..., Any]) -> None:
    async with provider(0.2) as (fake, call):
        fake.script(hang(), hang(), hang())
        with capture_logs() as logs, pytest.raises(ProviderUnavailableError) as caught:
            await call()

    assert len(logs) == 2
    assert_secret_absent(caught.value, logs)
