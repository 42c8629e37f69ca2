"""A consumer checks its providers at start, against the fake servers and a closed port."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest
from structlog.testing import capture_logs

from consumers.preflight import check_providers
from shared.config import Settings, load_settings
from shared.errors import ConfigError
from shared.tasks import TaskType
from tests.support.consumer_helpers import ROOT, SlowVenice, consumer_env
from tests.support.fakes.replicate import FakeReplicate
from tests.support.fakes.sd import FakeSD
from tests.support.fakes.venice import FakeVenice
from tests.support.ops_helpers import unused_port

ALL = list(TaskType)
TEXT = [TaskType.GENERATE_REPLY, TaskType.GENERATE_IMAGE_PROMPT]
IMAGES = [TaskType.GENERATE_IMAGE]


def provider_settings(**values: Any) -> Settings:
    return load_settings(_env_file=None, **values)


async def test_reachable_providers_with_good_keys_pass() -> None:
    async with FakeVenice() as venice, FakeSD() as sd:
        settings = provider_settings(
            venice_api_key=venice.api_key, venice_base_url=venice.url, image_api_url=sd.url
        )
        with capture_logs() as logs:
            await check_providers(settings, ALL)
    ready = sorted(e["provider"] for e in logs if e["event"] == "provider_ready")
    assert ready == ["sd", "venice"]
    assert venice.requests_to("/api/v1/api_keys/rate_limits")
    assert sd.requests_to("/sdapi/v1/sd-models")


async def test_a_refused_venice_key_stops_the_start_without_showing_it() -> None:
    async with FakeVenice() as venice:
        settings = provider_settings(
            venice_api_key="wrong-key-0123456789", venice_base_url=venice.url
        )
        with pytest.raises(ConfigError) as refused:
            await check_providers(settings, TEXT)
    message = str(refused.value)
    assert "VENICE_API_KEY was refused" in message
    assert "HTTP 401" in message
    assert "wrong-key-0123456789" not in message


async def test_missing_local_stable_diffusion_is_named_with_the_alternatives() -> None:
    # The newcomer's case: only VENICE_API_KEY set, so images default to a local WebUI.
    async with FakeVenice() as venice:
        settings = provider_settings(
            venice_api_key=venice.api_key,
            venice_base_url=venice.url,
            image_api_url=f"http://127.0.0.1:{unused_port()}",
        )
        with pytest.raises(ConfigError) as missing:
            await check_providers(settings, ALL)
    message = str(missing.value)
    assert "IMAGE_PROVIDER is unset and USE_REPLICATE is false" in message
    assert "does not answer" in message
    assert "IMAGE_PROVIDER=venice" in message
    # Venice itself answered: only the image provider is named as missing.
    assert "VENICE_API_KEY was refused" not in message


async def test_replicate_token_is_checked() -> None:
    async with FakeReplicate() as replicate:
        good = provider_settings(
            image_provider="replicate",
            replicate_api_token=replicate.token,
            replicate_base_url=replicate.origin,
        )
        await check_providers(good, IMAGES)
        bad = provider_settings(
            image_provider="replicate",
            replicate_api_token="r8_wrong_token_0123456789",  # noqa: S106 - a wrong one
            replicate_base_url=replicate.origin,
        )
        with pytest.raises(ConfigError, match="REPLICATE_API_TOKEN was refused"):
            await check_providers(bad, IMAGES)


async def test_an_openai_compatible_server_without_key_endpoint_passes() -> None:
    async with SlowVenice(0) as server:  # only chat completions: the rest answers 404
        settings = provider_settings(venice_api_key=server.api_key, venice_base_url=server.url)
        await check_providers(settings, TEXT)


async def test_warn_only_logs_and_off_checks_nothing() -> None:
    closed = f"http://127.0.0.1:{unused_port()}"
    warn = provider_settings(image_api_url=closed, provider_preflight="warn")
    with capture_logs() as logs:
        await check_providers(warn, IMAGES)
    assert [e["event"] for e in logs] == ["provider_check_failed"]
    off = provider_settings(image_api_url=closed, provider_preflight="off")
    await check_providers(off, IMAGES)


async def test_offline_providers_need_no_check() -> None:
    settings = provider_settings(llm_provider="offline", image_provider="offline")
    with capture_logs() as logs:
        await check_providers(settings, ALL)
    assert logs == []


async def test_consumer_process_refuses_to_start_without_its_image_provider(
    settings: Settings,
) -> None:
    async with FakeVenice() as venice:
        env = consumer_env(
            settings,
            "sqlite+aiosqlite:///:memory:",
            LLM_PROVIDER="venice",
            VENICE_API_KEY=venice.api_key,
            VENICE_BASE_URL=venice.url,
            IMAGE_API_URL=f"http://127.0.0.1:{unused_port()}",
        )
        env.pop("IMAGE_PROVIDER")
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "consumers", "--name", "newcomer"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    refusal = [line for line in done.stderr.splitlines() if "cannot start" in line]
    assert len(refusal) == 1
    assert "IMAGE_API_URL" in refusal[0]
    assert "consumer_started" not in done.stderr
    assert venice.api_key not in done.stderr
