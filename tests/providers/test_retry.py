"""The shared retry policy and Retry-After parsing (pure functions, no network)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from structlog.testing import capture_logs

from consumers.providers.base import RetryPolicy, call_with_retries, parse_retry_after
from shared.errors import ProviderRejectedError, ProviderUnavailableError

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "reset_header", "expected"),
    [
        ({"retry-after": "3"}, None, 3.0),
        ({"retry-after": "1.5"}, None, 1.5),
        ({"retry-after": "-4"}, None, 0.0),
        ({"retry-after": "soon"}, None, None),
        ({"x-ratelimit-reset-requests": str(NOW + 7)}, "x-ratelimit-reset-requests", 7.0),
        ({"x-ratelimit-reset-requests": "12"}, "x-ratelimit-reset-requests", 12.0),
        ({"x-ratelimit-reset-requests": "12"}, None, None),
        ({"x-ratelimit-reset-requests": "1m"}, "x-ratelimit-reset-requests", None),
        (
            {"retry-after": "2", "x-ratelimit-reset-requests": "30"},
            "x-ratelimit-reset-requests",
            2.0,
        ),
        ({}, "x-ratelimit-reset-requests", None),
    ],
)
def test_parse_retry_after(
    headers: dict[str, str], reset_header: str | None, expected: float | None
) -> None:
    assert parse_retry_after(headers, reset_header, now=NOW) == pytest.approx(expected)


def test_parse_retry_after_http_date() -> None:
    moment = datetime.fromtimestamp(NOW, UTC) + timedelta(seconds=20)

    assert (
        parse_retry_after({"retry-after": format_datetime(moment, usegmt=True)}, now=NOW) == 20.0
    )


async def test_retry_after_longer_than_budget_fails_fast() -> None:
    calls = 0

    async def throttled() -> str:
        nonlocal calls
        calls += 1
        raise ProviderUnavailableError("busy", "p", 429, retry_after=60.0)

    started = time.monotonic()
    with pytest.raises(ProviderUnavailableError):
        await call_with_retries("p", RetryPolicy(budget_seconds=5.0), throttled)

    assert calls == 1
    assert time.monotonic() - started < 0.5


async def test_rejected_errors_are_not_retried() -> None:
    calls = 0

    async def refuse() -> str:
        nonlocal calls
        calls += 1
        raise ProviderRejectedError("no", "p", 400)

    with pytest.raises(ProviderRejectedError):
        await call_with_retries("p", RetryPolicy(), refuse)
    assert calls == 1


async def test_attempt_cap_and_retry_logs() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        raise ProviderUnavailableError("down", "p", 503)

    policy = RetryPolicy(budget_seconds=5.0, max_attempts=3, initial_wait=0.01, max_wait=0.02)
    with capture_logs() as logs, pytest.raises(ProviderUnavailableError):
        await call_with_retries("p", policy, flaky)

    assert calls == 3
    retries = [entry for entry in logs if entry["event"] == "provider_retry"]
    assert [entry["attempt"] for entry in retries] == [1, 2]
    assert all(entry["provider"] == "p" and entry["status"] == 503 for entry in retries)
    assert all(0 < entry["wait"] <= 0.02 for entry in retries)


async def test_success_after_retry_returns_value() -> None:
    calls = 0

    async def once_down() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ProviderUnavailableError("down", "p")
        return "ok"

    policy = RetryPolicy(initial_wait=0.01, max_wait=0.02)
    assert await call_with_retries("p", policy, once_down) == "ok"
