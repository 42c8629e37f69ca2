"""Helpers for the voice tests: a bot fed by hand on PostgreSQL, and an in-process consumer
whose voice clients call the fake audio server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from consumers.providers.audio import OpenAISpeaker, OpenAITranscriber
from consumers.providers.base import RetryPolicy
from consumers.providers.offline import OfflineLLMClient
from consumers.registry import Providers, build_handlers
from consumers.runner import ConsumerRunner, RunnerOptions
from shared.config import Settings
from shared.config_values import Secret
from shared.queue import QueueService, TaskType
from shared.queue.audio import AudioStore
from tests.support import bot_feed
from tests.support.bot_feed import FedBot, press
from tests.support.bot_world import eventually
from tests.support.fakes.audio import FakeAudio
from tests.support.fakes.telegram import Request
from tests.support.fixtures_db import Backend, Sessions

FAST = RetryPolicy(budget_seconds=2.0, max_attempts=2, initial_wait=0.01, max_wait=0.05)
TYPES = [TaskType.GENERATE_REPLY, TaskType.TRANSCRIBE_VOICE, TaskType.SYNTHESIZE_VOICE]


@contextlib.asynccontextmanager
async def voice_consumer(queue: QueueService, audio: FakeAudio) -> AsyncIterator[None]:
    """Replies from the offline LLM, voice through the fake audio server, until the end."""
    key = Secret(audio.api_key)
    stt = OpenAITranscriber(key, base_url=audio.url, model="stt-test", timeout=5, retry=FAST)
    tts = OpenAISpeaker(key, base_url=audio.url, model="tts-test", timeout=5, retry=FAST)
    providers = Providers(
        llm=OfflineLLMClient(), stt=stt, tts=tts, audio=AudioStore(queue.redis, queue.settings)
    )
    options = RunnerOptions(limits=dict.fromkeys(TYPES, 4), max_deliveries=2)
    runner = ConsumerRunner(queue.consumer("voice"), build_handlers(TYPES, providers), options)
    running = asyncio.create_task(runner.run())
    try:
        yield
    finally:
        runner.stop()
        await running
        await stt.aclose()
        await tts.aclose()


def chatting(
    settings: Settings, pg: Sessions, backend: Backend, *users: int, **extra: Any
) -> contextlib.AbstractAsyncContextManager[FedBot]:
    """A bot whose `users` chose a character; voice tasks take longer to settle (20 s)."""
    return bot_feed.chatting(settings, pg, backend, *users, idle_seconds=20, **extra)


def button(message: Request, text: str) -> str:
    rows = message.params["reply_markup"]["inline_keyboard"]
    data: str = next(b["callback_data"] for row in rows for b in row if b["text"] == text)
    return data


async def click(bot: FedBot, user: int, data: str) -> str:
    """`user` presses `data` (in their own chat); returns what the button answered."""
    update = press(bot.tg, user, data)
    query = next(
        u["callback_query"]["id"] for u in bot.tg.pending_updates if u["update_id"] == update
    )
    await bot.feed(update)

    async def answered() -> bool:
        return query in bot.tg.answered_callbacks

    await eventually(answered, timeout=10)
    return str(bot.tg.answered_callbacks[query].get("text"))
