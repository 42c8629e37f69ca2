"""Past dialogs through the bot, on PostgreSQL and Redis: `/dialogs` lists them (character,
date, first words, photo counter), a button resumes one (only its owner's), `/reset` keeps the
old dialog listed."""

from __future__ import annotations

import base64

import pytest

from db.models import Character, Dialog
from db.repositories import active_dialog, bump_photo_counter
from producer import texts
from producer.keyboards import CharacterCallback, DialogCallback, PhotoCallback
from shared.config import Settings
from shared.queue import QueueService, TaskType
from shared.tasks import ImagePromptResult, ImageResult, ReplyResult
from tests.support.bot_feed import FedBot, chatting, press
from tests.support.bot_harness import ManualConsumer, wait_text
from tests.support.bot_world import eventually
from tests.support.consumer_helpers import ledger
from tests.support.fakes.http import make_png
from tests.support.fakes.telegram import FakeTelegram, Request
from tests.support.fixtures_db import Backend, Sessions, new_user_id

pytestmark = pytest.mark.timeout(90)

REPLY = TaskType.GENERATE_REPLY


async def say(bot: FedBot, consumer: ManualConsumer, user: int, text: str) -> int:
    """The user says `text` and gets an answer; returns the dialog it went to."""
    await bot.feed(bot.tg.user_message(user, text))
    task = await consumer.take(REPLY)
    dialog_id: int = task.task.data["dialog_id"]
    await consumer.complete(task, ReplyResult(reply=f"ответ: {text}", dialog_id=dialog_id))
    await wait_text(bot.tg, user, f"ответ: {text}")
    return dialog_id


async def dialogs_list(bot: FedBot, user: int) -> Request:
    before = len(bot.tg.sent("sendMessage", user))
    await bot.feed(bot.tg.user_message(user, "/dialogs"))
    found = await bot.tg.wait_for(
        "sendMessage", lambda r: r.chat_id == user, count=before + 1, timeout=10
    )
    return found[-1]


def buttons(message: Request) -> list[tuple[str, int]]:
    rows = message.params["reply_markup"]["inline_keyboard"]
    return [
        (row[0]["text"], DialogCallback.unpack(row[0]["callback_data"]).dialog_id) for row in rows
    ]


async def test_dialogs_lists_every_dialog_and_resumes_the_one_pressed(
    settings: Settings, pg: Sessions, postgresql_backend: Backend, queue: QueueService
) -> None:
    user, stranger = new_user_id(), new_user_id()
    consumer = ManualConsumer(queue)
    async with chatting(settings, pg, postgresql_backend, user) as bot:
        tg = bot.tg
        await bot.feed(tg.user_message(stranger, "/dialogs"))
        await wait_text(tg, stranger, texts.DIALOGS_EMPTY)
        first = await say(bot, consumer, user, "Привет, меня зовут Вася и я люблю долгие прогулки")
        async with pg.begin() as session:
            await bump_photo_counter(session, first, "photo-1")
        await bot.feed(tg.user_message(user, "/reset"))
        await wait_text(tg, user, "заново")
        second = await say(bot, consumer, user, "Второй диалог")
        greeting = await wait_text(tg, user, "Привет")
        other = greeting.params["reply_markup"]["inline_keyboard"][1][0]["callback_data"]
        assert CharacterCallback.unpack(other).character_id
        await bot.feed(press(tg, user, other))
        await wait_text(tg, user, "Твой собеседник", timeout=10)

        listed = await dialogs_list(bot, user)
        lines = str(listed.params["text"]).splitlines()
        assert lines[0] == texts.DIALOGS_TITLE
        assert lines[1].endswith(f"{texts.DIALOG_NOT_STARTED} · 📷 0 — сейчас")
        assert lines[2].endswith("«Второй диалог» · 📷 0")
        assert lines[3].endswith("«Привет, меня зовут Вася и я люблю долгие…» · 📷 1")
        assert [dialog for _, dialog in buttons(listed)][1:] == [second, first]

        # Someone else's press (a group, forged data) resumes nothing.
        first_button = DialogCallback(dialog_id=first).pack()
        await bot.feed(press(tg, stranger, first_button))
        await eventually(lambda: _answered(tg, texts.NOT_YOUR_BUTTON))
        await bot.feed(press(tg, user, first_button))
        await wait_text(tg, user, "Продолжаем диалог")
        await bot.feed(tg.user_message(user, "А вот и я"))
        task = await consumer.take(REPLY)
        assert task.task.data["dialog_id"] == first
        assert task.task.data["history"][0]["content"].startswith("Привет, меня зовут Вася")
        await consumer.complete(task, ReplyResult(reply="с возвращением", dialog_id=first))
        await wait_text(tg, user, "с возвращением")
    async with pg() as session:
        active = await active_dialog(session, user)
        assert active is not None and active.id == first
        assert await active_dialog(session, stranger) is None


async def _answered(tg: FakeTelegram, text: str) -> bool:
    return any(params.get("text") == text for params in tg.answered_callbacks.values())


async def test_the_photo_button_draws_its_own_dialog_after_a_switch_and_only_for_its_owner(
    settings: Settings, pg: Sessions, postgresql_backend: Backend, queue: QueueService
) -> None:
    user, stranger = new_user_id(), new_user_id()
    consumer = ManualConsumer(queue)
    async with chatting(settings, pg, postgresql_backend, user) as bot:
        tg = bot.tg
        first = await say(bot, consumer, user, "Сфотографируйся")
        reply = await wait_text(tg, user, "ответ: Сфотографируйся")
        photo = reply.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        assert PhotoCallback.unpack(photo).dialog_id == first
        async with pg() as session:
            first_character = await session.get(Dialog, first)
            assert first_character is not None
            character = await session.get(Character, first_character.character_id)
            assert character is not None

        greeting = await wait_text(tg, user, "Привет")
        other = greeting.params["reply_markup"]["inline_keyboard"][1][0]["callback_data"]
        await bot.feed(press(tg, user, other))
        await wait_text(tg, user, "Твой собеседник", timeout=10)

        await bot.feed(press(tg, stranger, photo))
        await eventually(lambda: _answered(tg, texts.NOT_YOUR_BUTTON))

        await bot.feed(press(tg, user, photo, chat_id=user))
        prompt = await consumer.take(TaskType.GENERATE_IMAGE_PROMPT)
        assert prompt.task.data["girl_name"] == character.name
        await consumer.complete(prompt, ImagePromptResult(prompt="portrait, cafe"))
        image = await consumer.take(TaskType.GENERATE_IMAGE)
        assert (image.task.data["dialog_id"], image.task.data["girl_id"]) == (first, character.id)
        png = make_png(4, 4)
        await consumer.complete(
            image,
            ImageResult(image_base64=base64.b64encode(png).decode(), image_size=len(png)),
        )
        await tg.wait_for("sendPhoto", timeout=10)
        assert await bot.services.deliveries.wait_idle(10)

        listed = await dialogs_list(bot, user)
        lines = str(listed.params["text"]).splitlines()
        assert lines[1].endswith(f"{texts.DIALOG_NOT_STARTED} · 📷 0 — сейчас")
        assert lines[2].endswith("«Сфотографируйся» · 📷 1")
    assert [kind for kind, _, _ in await ledger(pg, stranger)] == []
    assert [(kind, amount) for kind, amount, _ in await ledger(pg, user)] == [
        ("charge", -1),
        ("charge", -1),
    ]
