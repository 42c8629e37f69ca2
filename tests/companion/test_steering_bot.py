"""Regenerate (🔄) and continue (▶️) through the bot, on PostgreSQL and Redis: charged like a
message and refunded when they fail, one task for two presses, only the latest reply, only by
the dialog's owner; the new text replaces the old one in the chat and in the history."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, update

from db.models import ChatMessage, User
from producer import texts
from producer.keyboards import ContinueCallback, RegenerateCallback
from shared.config import Settings
from shared.queue import QueueService, TaskEntry, TaskType
from shared.tasks import ReplyResult
from tests.support.bot_feed import FedBot, chatting, press
from tests.support.bot_harness import ManualConsumer, balances, wait_text
from tests.support.bot_world import eventually
from tests.support.consumer_helpers import ledger
from tests.support.fakes.telegram import FakeTelegram, Request
from tests.support.fixtures_db import Backend, Sessions, new_user_id

pytestmark = pytest.mark.timeout(90)

REPLY = TaskType.GENERATE_REPLY


async def answered(
    bot: FedBot, consumer: ManualConsumer, user: int, text: str, **result: Any
) -> Request:
    """The user says `text`; the reply `ответ: <text>` arrives; returns its message."""
    await bot.feed(bot.tg.user_message(user, text))
    await complete(consumer, f"ответ: {text}", **result)
    return await wait_text(bot.tg, user, f"ответ: {text}")


async def complete(consumer: ManualConsumer, reply: str, **result: Any) -> TaskEntry:
    task = await consumer.take(REPLY)
    dialog_id = task.task.data["dialog_id"]
    await consumer.complete(task, ReplyResult(reply=reply, dialog_id=dialog_id, **result))
    return task


def button(message: Request, text: str) -> str:
    rows = message.params["reply_markup"]["inline_keyboard"]
    data: str = next(b["callback_data"] for row in rows for b in row if b["text"] == text)
    return data


async def click(bot: FedBot, user: int, data: str, message: Request) -> str:
    """Press `data` under `message`; returns what the button answered."""
    update = press(bot.tg, user, data, chat_id=message.chat_id)
    callback = next(
        u["callback_query"]["id"] for u in bot.tg.pending_updates if u["update_id"] == update
    )
    await bot.feed(update)
    await eventually(lambda: _has_answer(bot.tg, callback), timeout=10)
    return str(bot.tg.answered_callbacks[callback].get("text"))


async def _has_answer(tg: FakeTelegram, callback: str) -> bool:
    return callback in tg.answered_callbacks


async def dialog_history(db: Sessions, dialog_id: int) -> list[str]:
    async with db() as session:
        rows = await session.scalars(
            select(ChatMessage.content)
            .where(ChatMessage.dialog_id == dialog_id)
            .order_by(ChatMessage.id)
        )
    return list(rows)


async def test_two_presses_regenerate_once_and_the_new_reply_replaces_the_old(
    settings: Settings, pg: Sessions, postgresql_backend: Backend, queue: QueueService
) -> None:
    user = new_user_id()
    consumer = ManualConsumer(queue)
    async with chatting(settings, pg, postgresql_backend, user) as bot:
        first = await answered(bot, consumer, user, "привет")
        await answered(bot, consumer, user, "как дела?")
        last = await wait_text(bot.tg, user, "ответ: как дела?")
        data = button(last, texts.REGENERATE_BUTTON)
        old_task = RegenerateCallback.unpack(data).task_id

        assert await click(bot, user, data, last) == texts.REGENERATING
        assert await click(bot, user, data, last) == texts.STEERING_ALREADY
        task = await consumer.take(REPLY)
        assert (await queue.get_queue_depth(REPLY)).unfinished == 1
        asked = task.task.data
        assert asked["replaces"] == old_task
        assert asked["user_message"] == "как дела?"
        # The same turn again: its history ends before the user's message, no old reply.
        assert [t["content"] for t in asked["history"]] == ["привет", "ответ: привет"]
        dialog_id: int = asked["dialog_id"]
        await consumer.complete(task, ReplyResult(reply="новый ответ", dialog_id=dialog_id))

        # It takes the old reply's place: its message edited, its history row replaced.
        edit = (await bot.tg.wait_for("editMessageText", timeout=10))[0]
        assert edit.params["message_id"] == last.result["message_id"]
        assert edit.params["text"] == "новый ответ"
        await eventually(
            lambda: _history_is(
                pg, dialog_id, ["привет", "ответ: привет", "как дела?", "новый ответ"]
            )
        )
        # The first reply's button, and the replaced one's, are too late now.
        assert await click(bot, user, button(first, texts.REGENERATE_BUTTON), first) == (
            texts.TOO_LATE
        )
        assert await click(bot, user, data, last) == texts.TOO_LATE
        # The new reply can be regenerated in turn.
        again = button(edit, texts.REGENERATE_BUTTON)
        assert RegenerateCallback.unpack(again).task_id == task.task.task_id
        assert await click(bot, user, again, last) == texts.REGENERATING
        await complete(consumer, "третий ответ")
        await bot.tg.wait_for("editMessageText", count=2, timeout=10)
    # Two messages and two regenerations charged; the second press charged nothing.
    assert [kind for kind, _, _ in await ledger(pg, user)] == ["charge"] * 4
    assert await balances(pg, user) == (6, 2)
    assert len(bot.tg.sent("sendMessage", user)) == 4  # greeting, choice, two replies


async def _history_is(db: Sessions, dialog_id: int, expected: list[str]) -> bool:
    return await dialog_history(db, dialog_id) == expected


async def test_only_the_dialogs_owner_can_regenerate_or_continue(
    settings: Settings, pg: Sessions, postgresql_backend: Backend, queue: QueueService
) -> None:
    user, stranger = new_user_id(), new_user_id()
    consumer = ManualConsumer(queue)
    async with chatting(settings, pg, postgresql_backend, user) as bot:
        await bot.choose_character(stranger)
        last = await answered(bot, consumer, user, "привет", cut=True)
        for text in (texts.REGENERATE_BUTTON, texts.CONTINUE_BUTTON):
            assert await click(bot, stranger, button(last, text), last) == texts.NOT_YOUR_BUTTON
        assert (await queue.get_queue_depth(REPLY)).unfinished == 0
    assert [kind for kind, _, _ in await ledger(pg, stranger)] == []


async def test_a_press_without_energy_is_answered_and_charges_nothing(
    settings: Settings, pg: Sessions, postgresql_backend: Backend, queue: QueueService
) -> None:
    user = new_user_id()
    consumer = ManualConsumer(queue)
    async with chatting(settings, pg, postgresql_backend, user) as bot:
        last = await answered(bot, consumer, user, "привет", cut=True)
        async with pg.begin() as session:
            await session.execute(update(User).where(User.id == user).values(energy=0))
        shortage = texts.not_enough("energy", 0, settings.reply_energy_cost)

        def told(request: Request) -> bool:
            return request.chat_id == user and request.params.get("text") == shortage

        # The errors router answers the press (no spinner is left) and points to the shop.
        for number, text in enumerate((texts.REGENERATE_BUTTON, texts.CONTINUE_BUTTON), 1):
            assert await click(bot, user, button(last, text), last) == str(None)
            await bot.tg.wait_for("sendMessage", told, count=number)
        assert (await queue.get_queue_depth(REPLY)).unfinished == 0
    assert [kind for kind, _, _ in await ledger(pg, user)] == ["charge"]


async def test_a_failed_regeneration_is_refunded_and_keeps_the_old_reply(
    settings: Settings, pg: Sessions, postgresql_backend: Backend, queue: QueueService
) -> None:
    user = new_user_id()
    consumer = ManualConsumer(queue)
    async with chatting(settings, pg, postgresql_backend, user) as bot:
        last = await answered(bot, consumer, user, "привет")
        data = button(last, texts.REGENERATE_BUTTON)
        assert await click(bot, user, data, last) == texts.REGENERATING
        failed = await consumer.take(REPLY)
        await consumer.fail(failed)
        await wait_text(bot.tg, user, texts.REPLY_FAILED)
        assert not bot.tg.sent("editMessageText")  # the old reply stays shown
        dialog_id: int = failed.task.data["dialog_id"]
        assert await dialog_history(pg, dialog_id) == ["привет", "ответ: привет"]
        assert await balances(pg, user) == (9, 2)

        # The same button again is a new attempt (the failed one is over), charged again.
        assert await click(bot, user, data, last) == texts.REGENERATING
        retry = await complete(consumer, "второй ответ")
        assert retry.task.task_id != failed.task.task_id
        await bot.tg.wait_for("editMessageText", timeout=10)
        await eventually(lambda: _history_is(pg, dialog_id, ["привет", "второй ответ"]))
    assert [kind for kind, _, _ in await ledger(pg, user)] == [
        "charge",
        "charge",
        "refund",
        "charge",
    ]
    assert await balances(pg, user) == (8, 2)


async def test_a_stopped_reply_is_continued_and_the_continuation_appended(
    settings: Settings, pg: Sessions, postgresql_backend: Backend, queue: QueueService
) -> None:
    user = new_user_id()
    consumer = ManualConsumer(queue)
    async with chatting(settings, pg, postgresql_backend, user) as bot:
        full = await answered(bot, consumer, user, "привет")
        assert texts.CONTINUE_BUTTON not in str(full.params["reply_markup"])
        await bot.feed(bot.tg.user_message(user, "расскажи сказку"))
        task = await consumer.take(REPLY)
        dialog_id: int = task.task.data["dialog_id"]
        partial = ReplyResult(reply="Жила-была", dialog_id=dialog_id, stopped=True)
        await consumer.stop(task, partial)
        stopped = await wait_text(bot.tg, user, texts.STOPPED_MARK)
        data = button(stopped, texts.CONTINUE_BUTTON)
        assert ContinueCallback.unpack(data).task_id == task.task.task_id

        assert await click(bot, user, data, stopped) == texts.CONTINUING
        assert await click(bot, user, data, stopped) == texts.STEERING_ALREADY
        going_on = await consumer.take(REPLY)
        asked = going_on.task.data
        assert (asked["prefill"], asked["user_message"]) == ("Жила-была", "расскажи сказку")
        await consumer.complete(going_on, ReplyResult(reply="принцесса.", dialog_id=dialog_id))
        continued = await wait_text(bot.tg, user, "принцесса.")
        assert continued.result["message_id"] != stopped.result["message_id"]
        expected = ["привет", "ответ: привет", "расскажи сказку", "Жила-была принцесса."]
        await eventually(lambda: _history_is(pg, dialog_id, expected))
        assert await click(bot, user, data, stopped) == texts.TOO_LATE
    assert [kind for kind, _, _ in await ledger(pg, user)] == ["charge"] * 3


async def test_undo_removes_the_last_exchange_from_what_the_model_sees(
    settings: Settings, pg: Sessions, postgresql_backend: Backend, queue: QueueService
) -> None:
    user = new_user_id()
    consumer = ManualConsumer(queue)
    async with chatting(settings, pg, postgresql_backend, user) as bot:
        tg = bot.tg
        await answered(bot, consumer, user, "первое")
        second = await answered(bot, consumer, user, "второе")

        # While a reply is being written, an undo would miss it: refused.
        await bot.feed(tg.user_message(user, "третье"))
        in_flight = await consumer.take(REPLY)
        await bot.feed(tg.user_message(user, "/undo"))
        await wait_text(tg, user, texts.UNDO_BUSY)
        dialog_id: int = in_flight.task.data["dialog_id"]
        await consumer.complete(in_flight, ReplyResult(reply="ответ: третье", dialog_id=dialog_id))
        await wait_text(tg, user, "ответ: третье")

        await bot.feed(tg.user_message(user, "/undo"))
        await wait_text(tg, user, texts.UNDO_DONE)
        expected = ["первое", "ответ: первое", "второе", "ответ: второе"]
        assert await dialog_history(pg, dialog_id) == expected
        # The reply before it is the latest again: it can be regenerated.
        assert await click(bot, user, button(second, texts.REGENERATE_BUTTON), second) == (
            texts.REGENERATING
        )
        regenerated = await complete(consumer, "ответ заново")
        assert [t["content"] for t in regenerated.task.data["history"]] == expected[:2]
        await eventually(lambda: _history_is(pg, dialog_id, [*expected[:3], "ответ заново"]))

        await bot.feed(tg.user_message(user, "/undo"))
        await bot.feed(tg.user_message(user, "/undo"))
        await bot.feed(tg.user_message(user, "/undo"))
        await wait_text(tg, user, texts.UNDO_NOTHING)
        assert await dialog_history(pg, dialog_id) == []
        await answered(bot, consumer, user, "заново")
        assert [kind for kind, _, _ in await ledger(pg, user)] == ["charge"] * 5
