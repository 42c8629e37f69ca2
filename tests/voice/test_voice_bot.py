"""Voice through the bot, on PostgreSQL and Redis, with the real voice clients calling the
fake audio server: a voice message is answered like a typed one (charged once, in the chat's
order), refused when too long or too big (nothing charged), refunded once when it cannot be
transcribed; 🔊 sends the reply as a voice note, priced, refunded when it fails, pressed only
by the dialog's owner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from consumers.providers.offline_audio import silent_ogg_opus
from db import repositories as repo
from db.models import Character
from producer import texts
from producer.jobs import task_id_for
from shared.config import Settings
from shared.queue import QueueService, TaskType
from tests.support.bot_feed import FedBot, update, user_messages
from tests.support.bot_harness import TOKEN, balances, texts_to, wait_text
from tests.support.consumer_helpers import ledger
from tests.support.fakes.audio import SPEECH_PATH, TRANSCRIPTIONS_PATH, FakeAudio, parse_multipart
from tests.support.fakes.http import Reply
from tests.support.fixtures_db import Backend, Sessions, new_user_id
from tests.voice.voice_helpers import button, chatting, click, voice_consumer

pytestmark = pytest.mark.timeout(90)

VOICE = silent_ogg_opus(2.0)
HEARD = "Расскажи мне сказку"


@dataclass
class VoiceWorld:
    settings: Settings
    pg: Sessions
    backend: Backend
    queue: QueueService
    audio: FakeAudio

    @contextlib.asynccontextmanager
    async def chat(self, *users: int, **extra: Any) -> AsyncIterator[FedBot]:
        """The bot with `users` at a character, and a consumer serving the voice types."""
        async with (
            voice_consumer(self.queue, self.audio),
            chatting(self.settings, self.pg, self.backend, *users, **extra) as bot,
        ):
            yield bot


@pytest.fixture
async def world(
    settings: Settings, pg: Sessions, postgresql_backend: Backend, queue: QueueService
) -> AsyncIterator[VoiceWorld]:
    async with FakeAudio(transcript=HEARD) as audio:
        yield VoiceWorld(settings, pg, postgresql_backend, queue, audio)


async def test_a_voice_message_is_answered_like_a_typed_one_in_the_chats_order(
    world: VoiceWorld,
) -> None:
    pg, queue, audio = world.pg, world.queue, world.audio
    user = new_user_id()
    async with world.chat(user) as bot:
        tg = bot.tg
        spoken = tg.voice.user_voice(user, VOICE, duration=2)
        typed = tg.user_message(user, "а теперь текстом")
        # Both at once: the typed message, sent later, must wait for the voice's transcript.
        feeding = asyncio.gather(bot.feed(spoken), bot.feed(typed))
        await wait_text(tg, user, f"Ты написал: «{HEARD}»", timeout=20)
        await wait_text(tg, user, "Ты написал: «а теперь текстом»", timeout=20)
        await feeding
        message_id = update(tg, spoken)["message"]["message_id"]

    said = texts_to(tg, user)
    heard_at = said.index(texts.heard(HEARD))
    answer_at = next(i for i, text in enumerate(said) if f"«{HEARD}»" in text and i != heard_at)
    typed_at = next(i for i, text in enumerate(said) if "«а теперь текстом»" in text)
    assert heard_at < answer_at < typed_at
    assert await user_messages(pg, [HEARD, "а теперь текстом"]) == [HEARD, "а теперь текстом"]
    assert [kind for kind, _, _ in await ledger(pg, user)] == ["charge", "charge"]
    assert await balances(pg, user) == (8, 2)
    (upload,) = audio.uploads
    assert upload["file"].data == VOICE
    # The audio lived in Redis only until the transcript was applied.
    task_id = task_id_for("voice", user, message_id)
    assert await queue.redis.exists(queue.keys.audio(TaskType.TRANSCRIBE_VOICE, task_id)) == 0


async def test_too_long_or_too_big_is_refused_and_nothing_is_charged(world: VoiceWorld) -> None:
    pg, queue, audio = world.pg, world.queue, world.audio
    user = new_user_id()
    big = silent_ogg_opus(30.0)
    limits = {"voice_max_seconds": 60, "voice_max_bytes": len(big) - 1}
    async with world.chat(user, **limits) as bot:
        tg = bot.tg
        await bot.feed(tg.voice.user_voice(user, VOICE, duration=61))
        await wait_text(tg, user, texts.voice_too_long(60))
        await bot.feed(tg.voice.user_voice(user, big, duration=30))
        # Without file_size (optional in the Bot API) the download itself is measured.
        await bot.feed(tg.voice.user_voice(user, big, duration=30, file_size=None))
        too_big = texts.voice_too_big(len(big) - 1)
        assert texts_to(tg, user).count(too_big) == 2
        assert "Ничего не списано" in too_big

    assert audio.transcriptions == []
    assert await ledger(pg, user) == []
    assert await balances(pg, user) == (10, 2)
    assert (await queue.get_queue_depth(TaskType.TRANSCRIBE_VOICE)).waiting == 0


async def test_a_voice_without_energy_is_refused_and_its_audio_dropped(world: VoiceWorld) -> None:
    pg, queue, audio = world.pg, world.queue, world.audio
    user = new_user_id()
    async with world.chat(user, start_energy=0) as bot:
        spoken = bot.tg.voice.user_voice(user, VOICE, duration=2)
        await bot.feed(spoken)
        await wait_text(bot.tg, user, texts.not_enough("energy", 0, 1))
        message_id = update(bot.tg, spoken)["message"]["message_id"]

    task_id = task_id_for("voice", user, message_id)
    assert await queue.redis.exists(queue.keys.audio(TaskType.TRANSCRIBE_VOICE, task_id)) == 0
    assert audio.transcriptions == []
    assert await ledger(pg, user) == []


async def test_a_voice_that_cannot_be_fetched_is_told_and_the_token_never_logged(
    world: VoiceWorld,
) -> None:
    pg, audio = world.pg, world.audio
    user = new_user_id()
    async with world.chat(user) as bot:
        tg = bot.tg
        spoken = tg.voice.user_voice(user, VOICE, duration=2)
        file_id = update(tg, spoken)["message"]["voice"]["file_id"]
        tg.lost_downloads.add(tg.files[file_id].file_path)
        with capture_logs() as logs:
            await bot.feed(spoken)
        await wait_text(tg, user, texts.VOICE_UNAVAILABLE)

    failed = [e for e in logs if e["event"] == "voice_fetch_failed"]
    assert [e["error"] for e in failed] == ["download: HTTP 404"]
    assert TOKEN not in repr(logs)
    assert audio.transcriptions == []
    assert await ledger(pg, user) == []


async def test_a_failed_transcription_is_refunded_once(world: VoiceWorld) -> None:
    pg, audio = world.pg, world.audio
    user = new_user_id()
    audio.script(Reply(status=400, json={"error": "unsupported audio"}), path=TRANSCRIPTIONS_PATH)
    async with world.chat(user) as bot:
        await bot.feed(bot.tg.voice.user_voice(user, VOICE, duration=2, kind="audio"))
        await wait_text(bot.tg, user, texts.VOICE_FAILED, timeout=20)

    assert [kind for kind, _, _ in await ledger(pg, user)] == ["charge", "refund"]
    assert await balances(pg, user) == (10, 2)
    assert texts_to(bot.tg, user).count(texts.VOICE_FAILED) == 1
    assert not [t for t in texts_to(bot.tg, user) if t.startswith("🎤")]
    (request,) = audio.transcriptions  # a 400 is final: no second call
    parts = parse_multipart(request.headers["content-type"], request.body)
    assert (parts["file"].filename, parts["file"].data) == ("audio", VOICE)


async def test_the_voice_button_sends_a_voice_note_priced_and_only_for_its_owner(
    world: VoiceWorld,
) -> None:
    pg, audio = world.pg, world.audio
    user, stranger = new_user_id(), new_user_id()
    async with world.chat(user, stranger) as bot:
        tg = bot.tg
        await bot.feed(tg.user_message(user, "привет"))
        reply = await wait_text(tg, user, "Ты написал: «привет»", timeout=20)
        speak = button(reply, texts.VOICE_BUTTON)

        # Callback data can be forged: the owner is read from the reply's dialog.
        assert await click(bot, stranger, speak) == texts.NOT_YOUR_BUTTON
        assert await click(bot, user, speak) == texts.VOICE_OUT_STARTED
        sent = (await tg.wait_for("sendVoice", timeout=20))[0]
        assert sent.chat_id == user
        assert tg.voice.audio_of(sent) == audio.speech
        assert audio.syntheses[0].json["input"] == reply.params["text"]

        # A failed synthesis: told, and the diamond comes back.
        audio.script(Reply(status=400, json={"error": "bad voice"}), path=SPEECH_PATH)
        assert await click(bot, user, speak) == texts.VOICE_OUT_STARTED
        await wait_text(tg, user, texts.VOICE_OUT_FAILED, timeout=20)

    assert len(tg.voice.sent(user)) == 1
    assert tg.voice.sent(stranger) == []
    assert len(audio.syntheses) == 2
    charges = [(kind, amount) for kind, amount, _ in await ledger(pg, user)]
    assert charges == [("charge", -1), ("charge", -1), ("charge", -1), ("refund", 1)]
    assert await balances(pg, user) == (9, 1)
    assert await ledger(pg, stranger) == []


async def test_the_voice_button_speaks_in_the_characters_own_voice(world: VoiceWorld) -> None:
    """A character's own voice (a card's `extensions.voice`) is the one 🔊 asks for; without
    one, TTS_VOICE."""
    user = new_user_id()
    async with world.chat(user) as bot:
        tg = bot.tg
        await bot.feed(tg.user_message(user, "раз"))
        first = await wait_text(tg, user, "Ты написал: «раз»", timeout=20)
        assert await click(bot, user, button(first, texts.VOICE_BUTTON)) == (
            texts.VOICE_OUT_STARTED
        )
        await tg.wait_for("sendVoice", timeout=20)
        async with world.pg() as session:
            dialog = await repo.active_dialog(session, user)
        assert dialog is not None
        await _set_voice(world.pg, dialog.character_id, "af_nicole")
        try:
            await bot.feed(tg.user_message(user, "два"))
            second = await wait_text(tg, user, "Ты написал: «два»", timeout=20)
            assert await click(bot, user, button(second, texts.VOICE_BUTTON)) == (
                texts.VOICE_OUT_STARTED
            )
            await tg.wait_for("sendVoice", lambda _: len(tg.voice.sent(user)) == 2, timeout=20)
        finally:
            await _set_voice(world.pg, dialog.character_id, None)
    voices = [synthesis.json["voice"] for synthesis in world.audio.syntheses]
    assert voices == [world.settings.tts_voice, "af_nicole"]


async def _set_voice(pg: Sessions, character_id: int, voice: str | None) -> None:
    async with pg.begin() as session:
        await session.execute(
            sa.update(Character).where(Character.id == character_id).values(voice=voice)
        )
