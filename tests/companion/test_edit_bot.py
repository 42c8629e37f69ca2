"""Editing the last message through the bot, on PostgreSQL and Redis: the reply is produced
again for the edited text, replaces the old one in the history, the turn is charged once, and
an edit racing the first reply ends with one reply, for the edited text."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from db.models import ChatMessage
from shared.config import Settings
from shared.queue import QueueService, TaskStatus, TaskType
from shared.tasks import ReplyResult
from tests.support.bot_feed import FedBot, chatting, press
from tests.support.bot_harness import ManualConsumer, balances, texts_to, wait_text
from tests.support.bot_world import eventually
from tests.support.consumer_helpers import ledger
from tests.support.fixtures_db import Backend, Sessions, new_user_id

pytestmark = pytest.mark.timeout(90)

REPLY = TaskType.GENERATE_REPLY


def message_id_of(bot: FedBot, update_id: int) -> int:
    update = next(u for u in bot.tg.pending_updates if u["update_id"] == update_id)
    return int(update["message"]["message_id"])


async def history(db: Sessions, dialog_id: int) -> list[str]:
    async with db() as session:
        rows = await session.scalars(
            select(ChatMessage.content)
            .where(ChatMessage.dialog_id == dialog_id)
            .order_by(ChatMessage.id)
        )
    return list(rows)


async def _history_is(db: Sessions, dialog_id: int, expected: list[str]) -> bool:
    return await history(db, dialog_id) == expected


async def test_an_edit_after_the_reply_is_answered_again_and_charged_once(
    settings: Settings, pg: Sessions, postgresql_backend: Backend, queue: QueueService
) -> None:
    user = new_user_id()
    consumer = ManualConsumer(queue)
    async with chatting(settings, pg, postgresql_backend, user) as bot:
        tg = bot.tg
        sent = tg.user_message(user, "прывет")
        await bot.feed(sent)
        first = await consumer.take(REPLY)
        dialog_id: int = first.task.data["dialog_id"]
        await consumer.complete(first, ReplyResult(reply="ответ: прывет", dialog_id=dialog_id))
        await wait_text(tg, user, "ответ: прывет")

        edit = tg.edit_message(user, message_id_of(bot, sent), "привет")
        await bot.feed(edit)
        await bot.feed(edit)  # the same update again changes nothing
        redo = await consumer.take(REPLY)
        assert redo.task.data["user_message"] == "привет"
        assert redo.task.data["history"] == []  # the old reply is not shown to the model
        assert (await queue.get_queue_depth(REPLY)).unfinished == 1
        await consumer.complete(redo, ReplyResult(reply="ответ: привет", dialog_id=dialog_id))
        await wait_text(tg, user, "ответ: привет")
        await eventually(lambda: _history_is(pg, dialog_id, ["привет", "ответ: привет"]))

        # An edit of a message that is no longer the last one changes nothing.
        later = tg.user_message(user, "как дела?")
        await bot.feed(later)
        await consumer.complete(
            await consumer.take(REPLY), ReplyResult(reply="хорошо", dialog_id=dialog_id)
        )
        await wait_text(tg, user, "хорошо")
        await bot.feed(tg.edit_message(user, message_id_of(bot, sent), "здравствуй"))
        await asyncio.sleep(0.3)
        assert (await queue.get_queue_depth(REPLY)).unfinished == 0
    kinds = [kind for kind, _, _ in await ledger(pg, user)]
    assert kinds == ["charge", "refund", "charge", "charge"]
    assert await balances(pg, user) == (8, 2)  # two turns, each charged once


async def test_an_edit_racing_the_first_reply_ends_with_one_reply_for_the_edited_text(
    settings: Settings, pg: Sessions, postgresql_backend: Backend, queue: QueueService
) -> None:
    user = new_user_id()
    consumer = ManualConsumer(queue)
    async with chatting(settings, pg, postgresql_backend, user) as bot:
        tg = bot.tg
        sent = tg.user_message(user, "сколко времени?")
        await bot.feed(sent)
        first = await consumer.take(REPLY)  # being written when the edit comes
        dialog_id: int = first.task.data["dialog_id"]
        await bot.feed(tg.edit_message(user, message_id_of(bot, sent), "сколько времени?"))
        redo = await consumer.take(REPLY)
        # The first reply was asked to stop; it finishes anyway, racing the edit.
        stopping = await queue.get_task(first.task.task_id, REPLY)
        assert stopping is not None and stopping.status is TaskStatus.PROCESSING
        await consumer.complete(
            first, ReplyResult(reply="ответ: сколко времени?", dialog_id=dialog_id)
        )
        await consumer.complete(
            redo, ReplyResult(reply="ответ: сколько времени?", dialog_id=dialog_id)
        )
        await wait_text(tg, user, "ответ: сколько времени?")
        expected = ["сколько времени?", "ответ: сколько времени?"]
        await eventually(lambda: _history_is(pg, dialog_id, expected))
        assert await bot.services.deliveries.wait_idle(10)
    assert not [text for text in texts_to(tg, user) if "сколко" in text]
    assert texts_to(tg, user).count("ответ: сколько времени?") == 1
    assert [kind for kind, _, _ in await ledger(pg, user)] == ["charge", "refund", "charge"]
    assert await balances(pg, user) == (9, 2)


async def test_an_edit_supersedes_a_regeneration_in_flight_too(
    settings: Settings, pg: Sessions, postgresql_backend: Backend, queue: QueueService
) -> None:
    user = new_user_id()
    consumer = ManualConsumer(queue)
    async with chatting(settings, pg, postgresql_backend, user) as bot:
        tg = bot.tg
        sent = tg.user_message(user, "прывет")
        await bot.feed(sent)
        first = await consumer.take(REPLY)
        dialog_id: int = first.task.data["dialog_id"]
        await consumer.complete(first, ReplyResult(reply="ответ: прывет", dialog_id=dialog_id))
        reply = await wait_text(tg, user, "ответ: прывет")
        regenerate = reply.params["reply_markup"]["inline_keyboard"][1][0]["callback_data"]
        await bot.feed(press(tg, user, regenerate))
        regenerating = await consumer.take(REPLY)

        await bot.feed(tg.edit_message(user, message_id_of(bot, sent), "привет"))
        redo = await consumer.take(REPLY)
        await consumer.complete(
            regenerating, ReplyResult(reply="ответ заново: прывет", dialog_id=dialog_id)
        )
        await consumer.complete(redo, ReplyResult(reply="ответ: привет", dialog_id=dialog_id))
        await wait_text(tg, user, "ответ: привет")
        await eventually(lambda: _history_is(pg, dialog_id, ["привет", "ответ: привет"]))
        assert await bot.services.deliveries.wait_idle(10)
    assert not [r for r in tg.sent("editMessageText") if "заново" in str(r.params["text"])]
    kinds = [kind for kind, _, _ in await ledger(pg, user)]
    assert kinds == ["charge", "charge", "refund", "refund", "charge"]
    assert await balances(pg, user) == (9, 2)
