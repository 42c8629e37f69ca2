"""The voice providers as a consumer builds and checks them from the settings: they follow
LLM_PROVIDER and Venice's URL and key unless told otherwise, a missing key stops the start
naming its variable, and the start checks the voice server with the voice key."""

from __future__ import annotations

from typing import Any

import pytest

from consumers.preflight import check_providers, planned_checks
from consumers.providers.audio import OpenAISpeaker, OpenAITranscriber
from consumers.providers.factory import build_stt_client, build_tts_client, provider_for
from consumers.providers.offline_audio import OfflineSpeaker, OfflineTranscriber
from shared.config import Settings, load_settings
from shared.errors import ConfigError
from shared.tasks import TaskType
from tests.support.fakes.audio import FakeAudio

VOICE = [TaskType.TRANSCRIBE_VOICE, TaskType.SYNTHESIZE_VOICE]


def voice_settings(**values: Any) -> Settings:
    return load_settings(_env_file=None, **values)


async def test_voice_follows_the_llm_provider_unless_chosen() -> None:
    offline = voice_settings(llm_provider="offline")
    assert isinstance(build_stt_client(offline), OfflineTranscriber)
    assert isinstance(build_tts_client(offline), OfflineSpeaker)
    assert {provider_for(offline, t) for t in VOICE} == {"offline"}
    venice = voice_settings(venice_api_key="k", tts_provider="offline")
    stt = build_stt_client(venice)
    assert isinstance(stt, OpenAITranscriber) and stt.model == "openai/whisper-large-v3"
    assert isinstance(build_tts_client(venice), OfflineSpeaker)
    assert provider_for(venice, TaskType.TRANSCRIBE_VOICE) == "venice"
    await stt.aclose()


async def test_a_voice_server_of_its_own_takes_its_own_url_and_key() -> None:
    settings = voice_settings(
        venice_api_key="venice-key", tts_base_url="http://127.0.0.1:9/v1", tts_api_key="tts-key"
    )
    tts = build_tts_client(settings)
    assert isinstance(tts, OpenAISpeaker)
    assert str(tts._http.client.base_url) == "http://127.0.0.1:9/v1/"
    assert tts._http.client.headers["authorization"] == "Bearer tts-key"
    await tts.aclose()


def test_a_missing_key_stops_the_start_naming_the_variable() -> None:
    settings = voice_settings(llm_provider="offline", stt_provider="venice")
    with pytest.raises(ConfigError, match="STT_API_KEY"):
        build_stt_client(settings)
    with pytest.raises(ConfigError, match="STT_BASE_URL"):
        voice_settings(stt_base_url="not a url")


async def test_the_start_checks_the_voice_server_with_the_voice_key() -> None:
    async with FakeAudio() as audio:
        venice_own = voice_settings(venice_api_key=audio.api_key, venice_base_url=audio.url)
        assert list(planned_checks(venice_own, VOICE)) == ["venice"]
        own = {"venice_api_key": "v", "stt_base_url": audio.url, "tts_base_url": audio.url}
        good = voice_settings(**own, stt_api_key=audio.api_key, tts_api_key=audio.api_key)
        assert sorted(planned_checks(good, VOICE)) == ["stt", "tts"]
        await check_providers(good, VOICE)
        wrong = voice_settings(**own, stt_api_key="wrong-key-7", tts_api_key=audio.api_key)
        with pytest.raises(ConfigError, match="STT_API_KEY was refused") as caught:
            await check_providers(wrong, VOICE)
    assert "wrong-key-7" not in str(caught.value)
