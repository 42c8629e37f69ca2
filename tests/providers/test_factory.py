"""Provider choice and start-up validation in consumers.providers.factory."""

from __future__ import annotations

from typing import Any

import pytest

from consumers.providers.factory import build_image_client, build_llm_client, choose_image_provider
from consumers.providers.offline import OfflineImageClient, OfflineLLMClient
from consumers.providers.replicate import ReplicateImageClient
from consumers.providers.sd import SDImageClient
from consumers.providers.venice import VeniceClient
from consumers.providers.venice_image import VeniceImageClient
from shared.config import Settings, load_settings
from shared.errors import ConfigError

# Every provider switch is pinned so a developer's environment cannot change the outcome.
NEUTRAL: dict[str, Any] = {
    "_env_file": None,
    "llm_provider": "venice",
    "image_provider": None,
    "use_live3d": False,
    "use_replicate": False,
    "venice_api_key": None,
    "replicate_api_token": None,
}


def settings(**overrides: Any) -> Settings:
    return load_settings(**(NEUTRAL | overrides))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, "local"),
        ({"use_replicate": True}, "replicate"),
        ({"use_live3d": True}, "live3d"),
        ({"use_live3d": True, "use_replicate": True}, "live3d"),
        ({"use_live3d": True, "image_provider": "venice"}, "venice"),
        ({"use_replicate": True, "image_provider": "offline"}, "offline"),
        ({"image_provider": "local"}, "local"),
    ],
)
def test_image_provider_choice(overrides: dict[str, Any], expected: str) -> None:
    assert choose_image_provider(settings(**overrides)) == expected


def test_live3d_is_a_config_error_naming_alternatives() -> None:
    with pytest.raises(ConfigError) as caught:
        build_image_client(settings(use_live3d=True))

    message = str(caught.value)
    assert "Live3D has no public API" in message
    assert "IMAGE_PROVIDER=local|replicate|venice|offline" in message


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"use_replicate": True}, "REPLICATE_API_TOKEN"),
        ({"image_provider": "replicate", "replicate_api_token": "  "}, "REPLICATE_API_TOKEN"),
        ({"image_provider": "venice"}, "VENICE_API_KEY"),
    ],
)
def test_missing_image_credentials_name_the_variable(
    overrides: dict[str, Any], variable: str
) -> None:
    with pytest.raises(ConfigError, match=variable):
        build_image_client(settings(**overrides))


def test_venice_llm_needs_key() -> None:
    with pytest.raises(ConfigError, match="VENICE_API_KEY"):
        build_llm_client(settings())


@pytest.mark.parametrize(
    ("overrides", "kind"),
    [
        ({}, SDImageClient),
        ({"use_replicate": True, "replicate_api_token": "r8_x"}, ReplicateImageClient),
        ({"image_provider": "venice", "venice_api_key": "k"}, VeniceImageClient),
        ({"image_provider": "offline"}, OfflineImageClient),
    ],
)
async def test_image_client_kinds(overrides: dict[str, Any], kind: type) -> None:
    client = build_image_client(settings(**overrides))
    try:
        assert isinstance(client, kind)
    finally:
        await client.aclose()


async def test_llm_client_kinds() -> None:
    venice = build_llm_client(settings(venice_api_key="k", venice_model="m1"))
    offline = build_llm_client(settings(llm_provider="offline"))
    try:
        assert isinstance(venice, VeniceClient)
        assert venice.model == "m1"
        assert isinstance(offline, OfflineLLMClient)
    finally:
        await venice.aclose()
        await offline.aclose()


async def test_venice_image_takes_settings() -> None:
    client = build_image_client(
        settings(
            image_provider="venice",
            venice_api_key="k",
            venice_image_model="lustify-sdxl",
            venice_safe_mode=False,
        )
    )
    try:
        assert isinstance(client, VeniceImageClient)
        assert (client.model, client.safe_mode) == ("lustify-sdxl", False)
    finally:
        await client.aclose()
