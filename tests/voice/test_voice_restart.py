"""A transcript that finished while the bot was down is shown and answered once by the next
bot process (its delivery row resumed), under the one charge taken when the voice came."""

from __future__ import annotations

import asyncio

import pytest

from consumers.providers.offline_audio import silent_ogg_opus
from producer import texts
from shared.config import Settings
from shared.queue import QueueService, TaskType
from shared.tasks import ReplyResult
from shared.voice_tasks import TranscriptResult
from tests.support.bot_feed import fed_bot, open_deliveries
from tests.support.bot_harness import ManualConsumer, balances, bot_settings, texts_to, wait_text
from tests.support.consumer_helpers import ledger
from tests.support.fakes.telegram import FakeTelegram
from tests.support.fixtures_db import Backend, Sessions, new_user_id

pytestmark = pytest.mark.timeout(60)

HEARD = "Как тебя зовут?"


async def test_a_transcript_finished_while_the_bot_was_down_is_answered_once_on_restart(
    settings: Settings, pg: Sessions, postgresql_backend: Backend, queue: QueueService
) -> None:
    user = new_user_id()
    consumer = ManualConsumer(queue)
    async with FakeTelegram() as tg:
        config = bot_settings(settings, postgresql_backend.url, tg.base_url, start_energy=10)
        # The voice holds its chat's turn at most a second here, then the bot goes down
        # while the voice is still being transcribed.
        async with fed_bot(config.replace(reply_wait_seconds=1), pg, tg) as bot:
            await bot.choose_character(user)
            spoken = tg.voice.user_voice(user, silent_ogg_opus(1.0), duration=1)
            feeding = asyncio.create_task(bot.feed(spoken))
            taken = await consumer.take(TaskType.TRANSCRIBE_VOICE)
            await feeding
        message_id = taken.task.data["message_id"]
        await consumer.complete(taken, TranscriptResult(text=HEARD, message_id=message_id))

        async with fed_bot(config, pg, tg, name="bot-2") as again:
            assert await again.services.deliveries.resume() == 1
            reply = await consumer.take(TaskType.GENERATE_REPLY)
            assert reply.task.data["user_message"] == HEARD
            dialog_id = reply.task.data["dialog_id"]
            await consumer.complete(
                reply, ReplyResult(reply="Меня зовут Мира", dialog_id=dialog_id)
            )
            await wait_text(tg, user, "Меня зовут Мира")
            assert await again.services.deliveries.wait_idle(10)

    assert texts_to(tg, user).count(texts.heard(HEARD)) == 1
    assert [kind for kind, _, _ in await ledger(pg, user)] == ["charge"]
    assert await balances(pg, user) == (9, 2)
    assert await open_deliveries(pg, user) == []
    audio_key = queue.keys.audio(TaskType.TRANSCRIBE_VOICE, taken.task.task_id)
    assert await queue.redis.exists(audio_key) == 0
