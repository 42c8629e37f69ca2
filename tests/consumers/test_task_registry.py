"""A task type is one contract row (shared.tasks.TASK_SPECS) and one handler row
(consumers.registry.HANDLERS): every table that varies by type is derived from these two."""

from __future__ import annotations

import pytest

from consumers.__main__ import build_clients, concurrency, parse_args
from consumers.providers.offline import OfflineImageClient, OfflineLLMClient
from consumers.providers.offline_audio import OfflineSpeaker, OfflineTranscriber
from consumers.registry import HANDLERS, Providers, build_handlers, provider_kinds
from shared.config import load_settings
from shared.errors import ConfigError, InvalidPayloadError, UnknownTaskTypeError
from shared.queue.audio import AudioStore
from shared.tasks import TASK_SPECS, ProviderKind, TaskType, parse_payload

OFFLINE = {"_env_file": None, "llm_provider": "offline", "image_provider": "offline"}


def test_every_task_type_has_one_contract_and_one_handler() -> None:
    assert set(TASK_SPECS) == set(TaskType)
    assert set(HANDLERS) == set(TaskType)


async def test_each_handler_is_built_from_its_kind_of_provider_only() -> None:
    audio = AudioStore.connect(load_settings(**OFFLINE), "registry-test")  # never connects
    for task_type, spec in TASK_SPECS.items():
        stt = spec.provider is ProviderKind.STT
        only = Providers(
            llm=OfflineLLMClient() if spec.provider is ProviderKind.LLM else None,
            images=OfflineImageClient() if spec.provider is ProviderKind.IMAGE else None,
            stt=OfflineTranscriber() if stt else None,
            tts=OfflineSpeaker() if spec.provider is ProviderKind.TTS else None,
            audio=audio if stt else None,
        )
        assert task_type in build_handlers([task_type], only)
        with pytest.raises(ConfigError, match=spec.provider.value):
            build_handlers([task_type], Providers())
    await audio.aclose()


def test_a_consumer_builds_clients_only_for_the_kinds_its_types_call() -> None:
    settings = load_settings(**OFFLINE)
    assert provider_kinds([TaskType.GENERATE_REPLY]) == [ProviderKind.LLM]
    clients = build_clients(settings, [TaskType.GENERATE_IMAGE_PROMPT])
    assert clients.llm is not None
    assert clients.images is None
    clients = build_clients(settings, [TaskType.GENERATE_IMAGE])
    assert (clients.llm, clients.images is not None) == (None, True)


def test_concurrency_comes_from_each_types_setting_and_the_flags() -> None:
    settings = load_settings(**OFFLINE, max_concurrent_prompt_generations=7)
    limits = concurrency(parse_args([]), settings)
    assert limits == {t: spec.concurrency(settings) for t, spec in TASK_SPECS.items()}
    assert limits[TaskType.GENERATE_IMAGE_PROMPT] == 7
    args = parse_args(["--concurrency", "generate_reply=3", "--image-concurrency", "2"])
    limits = concurrency(args, settings)
    assert (limits[TaskType.GENERATE_REPLY], limits[TaskType.GENERATE_IMAGE]) == (3, 2)


@pytest.mark.parametrize(
    "pair", ["generate_reply", "generate_reply=", "generate_reply=x", "generate_reply=٣", "nope=2"]
)
def test_a_bad_concurrency_flag_is_refused(pair: str) -> None:
    settings = load_settings(**OFFLINE)
    with pytest.raises((ConfigError, UnknownTaskTypeError)):
        concurrency(parse_args(["--concurrency", pair]), settings)


def test_payloads_are_checked_by_the_registered_model() -> None:
    for task_type in TaskType:
        with pytest.raises(InvalidPayloadError, match=task_type.value):
            parse_payload(task_type, {"unexpected": 1})
