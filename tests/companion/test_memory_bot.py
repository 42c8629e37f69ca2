"""Long-term memory through the bot, on PostgreSQL and Redis: a summary task when turns leave
the window (one per dialog in flight, never charged), every reply carrying the latest summary,
a failed summary asked again by the next message, `/memory` and its owner-only clear button."""

from __future__ import annotations

import contextlib

import pytest
from sqlalchemy import select

from db.models import ChatMessage, Dialog
from producer import texts
from producer.keyboards import MemoryCallback
from shared.config import Settings
from shared.queue import QueueService, TaskEntry, TaskType
from shared.tasks import ReplyResult, SummaryResult
from tests.support import bot_feed
from tests.support.bot_feed import FedBot, press
from tests.support.bot_harness import ManualConsumer, texts_to, wait_text
from tests.support.bot_world import eventually
from tests.support.consumer_helpers import ledger
from tests.support.fakes.telegram import FakeTelegram
from tests.support.fixtures_db import Backend, Sessions, new_user_id

pytestmark = pytest.mark.timeout(90)

REPLY = TaskType.GENERATE_REPLY
SUMMARY = TaskType.SUMMARIZE_DIALOG
WINDOW = 4


def chatting(
    settings: Settings, pg: Sessions, postgresql_backend: Backend, user: int
) -> contextlib.AbstractAsyncContextManager[FedBot]:
    return bot_feed.chatting(
        settings, pg, postgresql_backend, user, history_messages=WINDOW, start_energy=20
    )


async def exchange(bot: FedBot, consumer: ManualConsumer, user: int, number: int) -> TaskEntry:
    """The user's message `number`, answered; returns the reply's task."""
    await bot.feed(bot.tg.user_message(user, f"сообщение {number}"))
    task = await consumer.take(REPLY)
    dialog_id = task.task.data["dialog_id"]
    await consumer.complete(task, ReplyResult(reply=f"ответ {number}", dialog_id=dialog_id))
    await wait_text(bot.tg, user, f"ответ {number}")
    return task


def sent_turns(task: TaskEntry, key: str = "history") -> list[str]:
    return [turn["content"] for turn in task.task.data[key]]


async def message_id(db: Sessions, dialog_id: int, content: str) -> int:
    async with db() as session:
        found = await session.scalar(
            select(ChatMessage.id).where(
                ChatMessage.dialog_id == dialog_id, ChatMessage.content == content
            )
        )
    assert found is not None
    return found


async def dialog_of(db: Sessions, dialog_id: int) -> Dialog:
    async with db() as session:
        found = await session.get(Dialog, dialog_id)
    assert found is not None
    return found


async def unfinished(queue: QueueService, task_type: TaskType) -> int:
    return (await queue.get_queue_depth(task_type)).unfinished


async def summary_stored(db: Sessions, dialog_id: int, text: str) -> None:
    async def stored() -> bool:
        return (await dialog_of(db, dialog_id)).summary == text

    await eventually(stored, timeout=10)


async def test_turns_leaving_the_window_are_summarized_once_and_every_reply_remembers(
    settings: Settings, pg: Sessions, postgresql_backend: Backend, queue: QueueService
) -> None:
    user = new_user_id()
    consumer = ManualConsumer(queue)
    async with chatting(settings, pg, postgresql_backend, user) as bot:
        for number in (1, 2, 3):
            await exchange(bot, consumer, user, number)
        assert await unfinished(queue, SUMMARY) == 0  # the window still holds everything

        fourth = await exchange(bot, consumer, user, 4)
        dialog_id: int = fourth.task.data["dialog_id"]
        asked = await consumer.take(SUMMARY)
        assert sent_turns(asked, "turns") == ["сообщение 1", "ответ 1"]
        assert asked.task.data["upto"] == await message_id(pg, dialog_id, "ответ 1")
        assert "summary" not in asked.task.data
        # Its reply did not wait: no summary yet, and the two turns being folded still shown.
        assert "summary" not in fourth.task.data
        assert sent_turns(fourth)[:2] == ["сообщение 1", "ответ 1"]

        # While that summary is in flight, more turns leave the window: no second task.
        fifth = await exchange(bot, consumer, user, 5)
        assert await unfinished(queue, SUMMARY) == 1
        assert sent_turns(fifth) == ["сообщение 3", "ответ 3", "сообщение 4", "ответ 4"]

        result = SummaryResult(
            summary="- зовут Вася", dialog_id=dialog_id, upto=asked.task.data["upto"]
        )
        await consumer.complete(asked, result)
        await summary_stored(pg, dialog_id, "- зовут Вася")

        sixth = await exchange(bot, consumer, user, 6)
        assert sixth.task.data["summary"] == "- зовут Вася"
        following = await consumer.take(SUMMARY)
        assert following.task.data["summary"] == "- зовут Вася"
        assert sent_turns(following, "turns") == [
            "сообщение 2",
            "ответ 2",
            "сообщение 3",
            "ответ 3",
        ]
        upto = following.task.data["upto"]
        await consumer.complete(
            following, SummaryResult(summary="- Вася, 2-3", dialog_id=dialog_id, upto=upto)
        )
        await summary_stored(pg, dialog_id, "- Вася, 2-3")
    # Six messages, six charges: summaries cost the user nothing.
    assert [kind for kind, _, _ in await ledger(pg, user)] == ["charge"] * 6


async def test_a_failed_summary_is_not_refunded_and_the_next_message_asks_again(
    settings: Settings, pg: Sessions, postgresql_backend: Backend, queue: QueueService
) -> None:
    user = new_user_id()
    consumer = ManualConsumer(queue)
    async with chatting(settings, pg, postgresql_backend, user) as bot:
        for number in (1, 2, 3, 4):
            await exchange(bot, consumer, user, number)
        failed = await consumer.take(SUMMARY)
        dialog_id: int = failed.task.data["dialog_id"]
        await consumer.fail(failed)

        async def freed() -> bool:
            return (await dialog_of(pg, dialog_id)).summary_task_id is None

        await eventually(freed, timeout=10)
        await exchange(bot, consumer, user, 5)
        again = await consumer.take(SUMMARY)
        assert again.task.task_id != failed.task.task_id
        # The same turns, and those that left since: nothing was folded by the failure.
        assert sent_turns(again, "turns") == [
            "сообщение 1",
            "ответ 1",
            "сообщение 2",
            "ответ 2",
        ]
        await consumer.complete(
            again,
            SummaryResult(summary="- 1-2", dialog_id=dialog_id, upto=again.task.data["upto"]),
        )
        await summary_stored(pg, dialog_id, "- 1-2")
    assert [kind for kind, _, _ in await ledger(pg, user)] == ["charge"] * 5


def memory_button(bot: FedBot, user: int) -> str:
    shown = [r for r in bot.tg.sent("sendMessage", user) if "помнит" in str(r.params["text"])]
    data: str = shown[-1].params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    return data


async def test_memory_shows_the_summary_and_only_its_owner_can_clear_it(
    settings: Settings, pg: Sessions, postgresql_backend: Backend, queue: QueueService
) -> None:
    user, stranger = new_user_id(), new_user_id()
    consumer = ManualConsumer(queue)
    async with chatting(settings, pg, postgresql_backend, user) as bot:
        tg = bot.tg
        await bot.feed(tg.user_message(user, "/memory"))
        await wait_text(tg, user, "В долгой памяти персонажа")
        for number in (1, 2, 3, 4):
            await exchange(bot, consumer, user, number)
        asked = await consumer.take(SUMMARY)
        dialog_id: int = asked.task.data["dialog_id"]
        result = SummaryResult(
            summary="- любит кофе", dialog_id=dialog_id, upto=asked.task.data["upto"]
        )
        await consumer.complete(asked, result)
        await summary_stored(pg, dialog_id, "- любит кофе")

        await bot.feed(tg.user_message(user, "/memory"))
        await wait_text(tg, user, "- любит кофе")
        data = memory_button(bot, user)
        assert MemoryCallback.unpack(data).dialog_id == dialog_id

        # Someone else pressing it (a forwarded message, a group, forged data) changes nothing.
        await bot.feed(press(tg, stranger, data))
        await eventually(lambda: _answered(tg, texts.NOT_YOUR_BUTTON))
        assert (await dialog_of(pg, dialog_id)).summary == "- любит кофе"

        await bot.feed(press(tg, user, data))
        await wait_text(tg, user, texts.MEMORY_CLEARED)
        assert (await dialog_of(pg, dialog_id)).summary is None

        await bot.feed(tg.user_message(user, "/reset"))
        await wait_text(tg, user, "заново")
        await bot.feed(tg.user_message(user, "/memory"))

        async def empty_again() -> bool:
            return sum("В долгой памяти" in text for text in texts_to(tg, user)) == 2

        await eventually(empty_again)


async def _answered(tg: FakeTelegram, text: str) -> bool:
    return any(params.get("text") == text for params in tg.answered_callbacks.values())
