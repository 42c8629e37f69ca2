"""A consumer process SIGKILLed in the middle of a transcription, and in the middle of a
synthesis: another consumer runs the task again, and the user is charged once and gets the
answer once (the bot on PostgreSQL, real consumer processes, the fake audio server holding
the first call)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from consumers.providers.offline_audio import silent_ogg_opus
from producer import texts
from shared.config import Settings
from shared.queue import QueueService, TaskStatus, TaskType
from tests.support.bot_harness import balances, texts_to, wait_text
from tests.support.consumer_helpers import consumer_env, ledger, start_consumer, stop_process
from tests.support.fakes.audio import FakeAudio
from tests.support.fixtures_db import Backend, Sessions, new_user_id
from tests.voice.voice_helpers import button, chatting, click

pytestmark = pytest.mark.timeout(120)

HEARD = "Спой мне песню"
TYPES = ("--types", "generate_reply,transcribe_voice,synthesize_voice")


def audio_env(settings: Settings, audio: FakeAudio) -> dict[str, str]:
    """Replies from the offline LLM; speech to text and back through the fake server."""
    voice = {"BASE_URL": audio.url, "API_KEY": audio.api_key, "PROVIDER": "venice"}
    extra = {f"{kind}_{name}": value for kind in ("STT", "TTS") for name, value in voice.items()}
    return consumer_env(settings, "", **extra)


async def kill_and_rescue(
    audio: FakeAudio, procs: list[subprocess.Popen[bytes]], env: dict[str, str], logs: Path
) -> None:
    """Once the fake holds the victim's call, SIGKILL it and start a rescuer."""
    await asyncio.wait_for(audio.held.wait(), 30)
    procs[0].kill()
    procs[0].wait()
    procs.append(start_consumer(env, "rescuer", logs / "rescuer.log", *TYPES))


async def test_a_transcription_killed_mid_call_is_charged_and_answered_once(
    settings: Settings,
    pg: Sessions,
    postgresql_backend: Backend,
    queue: QueueService,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    user = new_user_id()
    async with FakeAudio(transcript=HEARD) as audio:
        env = audio_env(settings, audio)
        procs.append(start_consumer(env, "victim", tmp_path / "victim.log", *TYPES))
        async with chatting(settings, pg, postgresql_backend, user) as bot:
            audio.hold_next()
            update = bot.tg.voice.user_voice(user, silent_ogg_opus(3.0), duration=3)
            feeding = asyncio.create_task(bot.feed(update))
            await kill_and_rescue(audio, procs, env, tmp_path)
            await wait_text(bot.tg, user, f"Ты написал: «{HEARD}»", timeout=40)
            await feeding
        assert await stop_process(procs[1]) == 0

    said = texts_to(bot.tg, user)
    assert said.count(texts.heard(HEARD)) == 1
    assert len([text for text in said if f"Ты написал: «{HEARD}»" in text]) == 1
    assert [kind for kind, _, _ in await ledger(pg, user)] == ["charge"]
    assert await balances(pg, user) == (9, 2)
    # The killed call and its rerun each got the whole file.
    assert len(audio.uploads) == 2
    assert audio.uploads[0]["file"].data == audio.uploads[1]["file"].data
    for name in ("victim", "rescuer"):  # keys never reach a log
        assert audio.api_key not in (tmp_path / f"{name}.log").read_text()
    (task_id,) = [t for k, _, t in await ledger(pg, user) if k == "charge"]
    reply = await queue.get_task(task_id, TaskType.GENERATE_REPLY)
    assert reply is not None and reply.status is TaskStatus.COMPLETED


async def test_a_synthesis_killed_mid_call_is_charged_and_sent_once(
    settings: Settings,
    pg: Sessions,
    postgresql_backend: Backend,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    user = new_user_id()
    async with FakeAudio() as audio:
        env = audio_env(settings, audio)
        procs.append(start_consumer(env, "victim", tmp_path / "victim.log", *TYPES))
        async with chatting(settings, pg, postgresql_backend, user) as bot:
            await bot.feed(bot.tg.user_message(user, "привет"))
            reply = await wait_text(bot.tg, user, "Ты написал: «привет»", timeout=30)
            audio.hold_next()
            assert await click(bot, user, button(reply, texts.VOICE_BUTTON)) == (
                texts.VOICE_OUT_STARTED
            )
            await kill_and_rescue(audio, procs, env, tmp_path)
            await bot.tg.wait_for("sendVoice", timeout=40)
            assert await bot.services.deliveries.wait_idle(20)
        assert await stop_process(procs[1]) == 0

    (sent,) = bot.tg.voice.sent(user)
    assert bot.tg.voice.audio_of(sent) == audio.speech
    assert len(audio.syntheses) == 2
    assert [kind for kind, _, _ in await ledger(pg, user)] == ["charge", "charge"]
    assert await balances(pg, user) == (9, 1)
