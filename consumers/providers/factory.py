"""Build the configured LLM and image clients from Settings; misconfiguration fails at start."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consumers.providers.audio import (
    OpenAISpeaker,
    OpenAITranscriber,
    SpeechToTextClient,
    TextToSpeechClient,
)
from consumers.providers.base import ImageClient, LLMClient, RetryPolicy
from consumers.providers.live3d import NO_API_MESSAGE
from consumers.providers.offline import OfflineImageClient, OfflineLLMClient
from consumers.providers.offline_audio import OfflineSpeaker, OfflineTranscriber
from consumers.providers.plugins import is_plugin, load_image_plugin
from consumers.providers.replicate import ReplicateImageClient
from consumers.providers.sd import SDImageClient
from consumers.providers.venice import VeniceClient
from consumers.providers.venice_image import VeniceImageClient
from shared.config import ImageProvider, LLMProvider, Settings
from shared.config_values import Secret
from shared.errors import ConfigError
from shared.tasks import TASK_SPECS, ProviderKind, TaskType

LIVE3D = "live3d"


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(budget_seconds=settings.provider_retry_seconds)


def build_llm_client(settings: Settings, *, retry: RetryPolicy | None = None) -> LLMClient:
    """LLM_PROVIDER=venice (default) needs VENICE_API_KEY; offline needs nothing."""
    if settings.llm_provider is LLMProvider.OFFLINE:
        word_delay = settings.offline_stream_delay_ms / 1000
        return OfflineLLMClient(settings.offline_delay_seconds, word_delay)
    return VeniceClient(
        _require(settings.venice_api_key, "VENICE_API_KEY", "LLM_PROVIDER=venice"),
        base_url=settings.venice_base_url,
        model=settings.venice_model,
        timeout=settings.provider_timeout_seconds,
        retry=retry or retry_policy(settings),
    )


def choose_image_provider(settings: Settings) -> str:
    """IMAGE_PROVIDER wins; otherwise the seed's order: USE_LIVE3D, USE_REPLICATE, local SD."""
    if settings.image_provider is not None:
        return str(settings.image_provider)
    if settings.use_live3d:
        return LIVE3D
    if settings.use_replicate:
        return ImageProvider.REPLICATE.value
    return ImageProvider.LOCAL.value


def provider_for(settings: Settings, task_type: TaskType) -> str:
    """The provider a task type's handler calls: LLM_PROVIDER, the image provider, or the
    voice providers (named like LLM_PROVIDER's, so `venice` bounds them all together)."""
    kind = TASK_SPECS[task_type].provider
    if kind is ProviderKind.IMAGE:
        return choose_image_provider(settings)
    if kind is ProviderKind.STT:
        return voice_provider(settings, settings.stt_provider).value
    if kind is ProviderKind.TTS:
        return voice_provider(settings, settings.tts_provider).value
    return settings.llm_provider.value


def voice_provider(settings: Settings, chosen: LLMProvider | None) -> LLMProvider:
    """STT_PROVIDER or TTS_PROVIDER; unset, the same as LLM_PROVIDER."""
    return settings.llm_provider if chosen is None else chosen


def voice_endpoint(
    settings: Settings, base_url: str | None, api_key: Secret | None
) -> tuple[str, Secret | None]:
    """A voice provider's base URL and key; each unset one is Venice's."""
    return base_url or settings.venice_base_url, api_key or settings.venice_api_key


def build_stt_client(
    settings: Settings, *, retry: RetryPolicy | None = None
) -> SpeechToTextClient:
    """STT_PROVIDER=venice (any OpenAI-compatible server) needs a key; offline nothing."""
    if voice_provider(settings, settings.stt_provider) is LLMProvider.OFFLINE:
        return OfflineTranscriber(settings.offline_delay_seconds)
    return OpenAITranscriber(
        **_voice_client(settings, "STT", settings.stt_base_url, settings.stt_api_key, retry),
        model=settings.stt_model,
    )


def build_tts_client(
    settings: Settings, *, retry: RetryPolicy | None = None
) -> TextToSpeechClient:
    """TTS_PROVIDER=venice (any OpenAI-compatible server) needs a key; offline nothing."""
    if voice_provider(settings, settings.tts_provider) is LLMProvider.OFFLINE:
        return OfflineSpeaker(settings.offline_delay_seconds)
    return OpenAISpeaker(
        **_voice_client(settings, "TTS", settings.tts_base_url, settings.tts_api_key, retry),
        model=settings.tts_model,
    )


def _voice_client(
    settings: Settings,
    kind: str,
    base_url: str | None,
    api_key: Secret | None,
    retry: RetryPolicy | None,
) -> dict[str, Any]:
    base, key = voice_endpoint(settings, base_url, api_key)
    return {
        "api_key": _require(key, f"{kind}_API_KEY (or VENICE_API_KEY)", f"{kind}_PROVIDER=venice"),
        "base_url": base,
        "timeout": settings.provider_timeout_seconds,
        "retry": retry or retry_policy(settings),
    }


def build_image_client(settings: Settings, *, retry: RetryPolicy | None = None) -> ImageClient:
    """Raise ConfigError for Live3D, a chosen provider whose credentials are missing, or a
    plugin (`module:Class`) that cannot be loaded."""
    choice = choose_image_provider(settings)
    if choice == LIVE3D:
        raise ConfigError(f"USE_LIVE3D=true: {NO_API_MESSAGE}")
    if is_plugin(choice):
        return load_image_plugin(choice)
    builders: dict[str, Callable[[Settings, RetryPolicy], ImageClient]] = {
        ImageProvider.LOCAL.value: _build_sd,
        ImageProvider.REPLICATE.value: _build_replicate,
        ImageProvider.VENICE.value: _build_venice_image,
        ImageProvider.OFFLINE.value: lambda s, _retry: OfflineImageClient(
            delay=s.offline_delay_seconds
        ),
    }
    return builders[choice](settings, retry or retry_policy(settings))


def _build_sd(settings: Settings, retry: RetryPolicy) -> ImageClient:
    return SDImageClient(
        base_url=settings.image_api_url,
        default_negative_prompt=settings.image_default_negative_prompt,
        steps=settings.sd_steps,
        width=settings.sd_width,
        height=settings.sd_height,
        cfg_scale=settings.sd_cfg_scale,
        sampler_name=settings.sd_sampler,
        timeout=settings.provider_timeout_seconds,
        retry=retry,
    )


def _build_replicate(settings: Settings, retry: RetryPolicy) -> ImageClient:
    return ReplicateImageClient(
        _require(settings.replicate_api_token, "REPLICATE_API_TOKEN", "the replicate provider"),
        base_url=settings.replicate_base_url,
        model=settings.replicate_model,
        timeout=settings.provider_timeout_seconds,
        retry=retry,
    )


def _build_venice_image(settings: Settings, retry: RetryPolicy) -> ImageClient:
    return VeniceImageClient(
        _require(settings.venice_api_key, "VENICE_API_KEY", "IMAGE_PROVIDER=venice"),
        base_url=settings.venice_base_url,
        model=settings.venice_image_model,
        safe_mode=settings.venice_safe_mode,
        default_negative_prompt=settings.image_default_negative_prompt,
        timeout=settings.provider_timeout_seconds,
        retry=retry,
    )


def _require(secret: Secret | None, variable: str, needed_by: str) -> Secret:
    if secret is None or not secret.get_secret_value().strip():
        raise ConfigError(f"{variable} is required for {needed_by} but is not set")
    return secret
