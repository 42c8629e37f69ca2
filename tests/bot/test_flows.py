"""The bot in process on the fake Telegram, with the consumer's part played by hand."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from producer import texts
from producer.jobs import DeliveryKind, Job
from producer.keyboards import PhotoCallback
from shared.config import Settings
from shared.tasks import ImagePromptResult, ImageResult, ReplyResult, TaskType
from tests.support.bot_harness import (
    InProcessBot,
    ManualConsumer,
    balances,
    bot_settings,
    choose_first_character,
    in_process_bot,
    migrated_sqlite,
    texts_to,
    wait_text,
)
from tests.support.fakes.telegram import FakeTelegram

USER = 7001
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def bot_config(settings: Settings, tmp_path: Path, tg: FakeTelegram) -> Settings:
    return bot_settings(settings, migrated_sqlite(tmp_path), tg.base_url)


@pytest.fixture
async def app(
    bot_config: Settings, tg: FakeTelegram, redis_client: object
) -> AsyncIterator[InProcessBot]:
    async with in_process_bot(bot_config, tg) as running:
        yield running


@pytest.fixture
def consumer(app: InProcessBot) -> ManualConsumer:
    return ManualConsumer(app.queue)


async def test_chat_reply_and_photo_button(
    app: InProcessBot, tg: FakeTelegram, consumer: ManualConsumer
) -> None:
    await choose_first_character(tg, USER)
    tg.user_message(USER, "Привет!")
    reply_task = await consumer.take(TaskType.GENERATE_REPLY)
    assert reply_task.task.data["user_message"] == "Привет!"
    assert reply_task.task.charge_id == reply_task.task.task_id
    await consumer.complete(reply_task, ReplyResult(reply="Привет-привет!", dialog_id=1))
    reply = await wait_text(tg, USER, "Привет-привет!")
    assert reply.params["reply_markup"]["inline_keyboard"][0][0]["text"] == texts.PHOTO_BUTTON
    assert await balances(app.db, USER) == (4, 2)

    tg.callback(USER, PhotoCallback().pack())
    prompt_task = await consumer.take(TaskType.GENERATE_IMAGE_PROMPT)
    assert prompt_task.task.data["recent_dialogue"][0]["content"] == "Привет!"
    await consumer.complete(prompt_task, ImagePromptResult(prompt="1girl, cafe"))
    image_task = await consumer.take(TaskType.GENERATE_IMAGE)
    # One charge covers the chain: whichever step fails refunds the same charge id.
    assert image_task.task.charge_id == prompt_task.task.charge_id == image_task.task.task_id
    assert image_task.task.data["prompt"] == "1girl, cafe"
    assert image_task.task.data["negative_prompt"] == app.settings.image_default_negative_prompt
    await consumer.complete(image_task, ImageResult(image_base64=PNG, image_size=40))
    photo = (await tg.wait_for("sendPhoto"))[0]
    assert photo.files["photo"][1].startswith(b"\x89PNG")
    assert await balances(app.db, USER) == (4, 1)
    assert len(tg.answered_callbacks) == 2


async def test_refusals_charge_nothing_and_queue_nothing(
    app: InProcessBot, tg: FakeTelegram
) -> None:
    await choose_first_character(tg, USER)
    tg.user_message(USER, "а" * (app.settings.max_message_chars + 1))
    await wait_text(tg, USER, "слишком длинное")
    tg.user_message(USER, "/generate")
    await wait_text(tg, USER, "/generate в летнем")
    tg.user_message(USER, "/generate " + "б" * (app.settings.max_prompt_chars + 1))
    await wait_text(tg, USER, "Описание слишком длинное")
    for _ in range(3):
        tg.user_message(USER, "/generate в парке")
    await wait_text(tg, USER, "Не хватает алмазов: нужно 1 💎, у тебя 0 💎")
    depth = await app.queue.get_queue_depth(TaskType.GENERATE_IMAGE)
    assert depth.waiting == 2
    assert await balances(app.db, USER) == (5, 0)
    assert (await app.queue.get_queue_depth(TaskType.GENERATE_REPLY)).waiting == 0


async def test_throttle_answers_and_queues_nothing(
    settings: Settings, tmp_path: Path, tg: FakeTelegram, redis_client: object
) -> None:
    config = bot_settings(
        settings, migrated_sqlite(tmp_path), tg.base_url, user_messages_per_minute=2
    )
    async with in_process_bot(config, tg) as app:
        await choose_first_character(tg, USER)
        for number in range(3):
            tg.user_message(USER, f"сообщение {number}")
        await wait_text(tg, USER, "слишком часто")
        await asyncio.sleep(0.2)
        assert (await app.queue.get_queue_depth(TaskType.GENERATE_REPLY)).waiting == 2
        assert await balances(app.db, USER) == (3, 2)


async def test_double_press_charges_and_generates_once(
    app: InProcessBot, tg: FakeTelegram, consumer: ManualConsumer
) -> None:
    await choose_first_character(tg, USER)
    tg.callback(USER, PhotoCallback().pack())
    tg.callback(USER, PhotoCallback().pack())
    await wait_text(tg, USER, "Фото уже готовится")
    prompt_task = await consumer.take(TaskType.GENERATE_IMAGE_PROMPT)
    assert (await app.queue.get_queue_depth(TaskType.GENERATE_IMAGE_PROMPT)).waiting == 0
    assert await balances(app.db, USER) == (5, 1)
    # The lock is released once the photo is delivered, so a later press works again.
    await consumer.complete(prompt_task, ImagePromptResult(prompt="1girl"))
    await consumer.complete(
        await consumer.take(TaskType.GENERATE_IMAGE), ImageResult(image_base64=PNG, image_size=1)
    )
    await tg.wait_for("sendPhoto")
    tg.callback(USER, PhotoCallback().pack())
    await consumer.take(TaskType.GENERATE_IMAGE_PROMPT)
    assert await balances(app.db, USER) == (5, 0)


async def test_failed_image_is_announced_once_and_refunded(
    app: InProcessBot, tg: FakeTelegram, consumer: ManualConsumer
) -> None:
    await choose_first_character(tg, USER)
    tg.user_message(USER, "/generate в шляпе")
    image_task = await consumer.take(TaskType.GENERATE_IMAGE)
    assert "в шляпе" in image_task.task.data["prompt"]
    assert await balances(app.db, USER) == (5, 1)
    # A second watcher (as after a restart, or a second bot process) sees the same result.
    app.services.deliveries.watch(Job(image_task.task.task_id, DeliveryKind.IMAGE, USER))
    await consumer.fail(image_task)
    await wait_text(tg, USER, texts.IMAGE_FAILED)
    await asyncio.sleep(0.3)
    assert texts_to(tg, USER).count(texts.IMAGE_FAILED) == 1
    assert await balances(app.db, USER) == (5, 2)


async def test_two_completion_signals_send_one_message(
    app: InProcessBot, tg: FakeTelegram, consumer: ManualConsumer
) -> None:
    await choose_first_character(tg, USER)
    tg.user_message(USER, "Как дела?")
    task = await consumer.take(TaskType.GENERATE_REPLY)
    await app.services.deliveries.resume()  # watches the same open delivery a second time
    await consumer.complete(task, ReplyResult(reply="Отлично!", dialog_id=1))
    await consumer.complete(task, ReplyResult(reply="Отлично!", dialog_id=1))
    await wait_text(tg, USER, "Отлично!")
    await asyncio.sleep(0.3)
    assert texts_to(tg, USER).count("Отлично!") == 1


async def test_slow_reply_is_announced_then_delivered(
    settings: Settings, tmp_path: Path, tg: FakeTelegram, redis_client: object
) -> None:
    config = bot_settings(settings, migrated_sqlite(tmp_path), tg.base_url, reply_wait_seconds=0.5)
    async with in_process_bot(config, tg) as app:
        consumer = ManualConsumer(app.queue)
        await choose_first_character(tg, USER)
        tg.user_message(USER, "Ты тут?")
        task = await consumer.take(TaskType.GENERATE_REPLY)
        await wait_text(tg, USER, texts.TAKES_LONGER)
        # A streamed reply shows "typing" only once no text came for a moment.
        (action,) = await tg.wait_for("sendChatAction", lambda r: r.chat_id == USER)
        assert action.params["action"] == "typing"
        await consumer.complete(task, ReplyResult(reply="Да, я тут.", dialog_id=1))
        await wait_text(tg, USER, "Да, я тут.")


async def test_long_reply_is_split_and_the_button_comes_last(
    app: InProcessBot, tg: FakeTelegram, consumer: ManualConsumer
) -> None:
    await choose_first_character(tg, USER)
    tg.user_message(USER, "Расскажи историю")
    task = await consumer.take(TaskType.GENERATE_REPLY)
    paragraph = "Жили-были кот и пёс. " * 100
    story = "\n\n".join([paragraph.strip()] * 3)
    await consumer.complete(task, ReplyResult(reply=story, dialog_id=1))
    await tg.wait_for(
        "sendMessage", lambda r: "Жили" in str(r.params) and "reply_markup" in r.params
    )
    parts = [r for r in tg.sent("sendMessage", USER) if "Жили" in str(r.params["text"])]
    # Cut at paragraph boundaries, not in the middle of a word or sentence.
    assert [str(p.params["text"]) for p in parts] == [paragraph.strip()] * 3
    assert "reply_markup" in parts[-1].params
    assert all("reply_markup" not in p.params for p in parts[:-1])


async def test_admin_queue_report_and_commands_menu(
    settings: Settings, tmp_path: Path, tg: FakeTelegram, redis_client: object
) -> None:
    config = bot_settings(settings, migrated_sqlite(tmp_path), tg.base_url, admin_ids=[USER])
    async with in_process_bot(config, tg):
        assert {c["command"] for c in tg.my_commands()} >= {"start", "generate", "delete_me"}
        tg.user_message(USER + 1, "/queue")
        await wait_text(tg, USER + 1, "Не знаю такой команды")
        tg.user_message(USER, "/queue")
        report = await wait_text(tg, USER, "generate_image:")
        assert "generate_reply: 0 / 0 / 0" in str(report.params["text"])


async def test_delete_me_asks_then_deletes(app: InProcessBot, tg: FakeTelegram) -> None:
    await choose_first_character(tg, USER)
    tg.user_message(USER, "/delete_me")
    question = await wait_text(tg, USER, "Удалить все")
    buttons = question.params["reply_markup"]["inline_keyboard"][0]
    tg.callback(USER, buttons[0]["callback_data"])
    await wait_text(tg, USER, texts.DELETE_DONE)
    tg.user_message(USER, "Привет")
    await wait_text(tg, USER, texts.NO_DIALOG)
    tg.user_message(USER, "/balance")
    await wait_text(tg, USER, "5 ⚡ энергии и 2 💎")


async def test_queue_place_is_told_when_others_wait(app: InProcessBot, tg: FakeTelegram) -> None:
    await choose_first_character(tg, USER)
    await choose_first_character(tg, USER + 1)
    tg.user_message(USER, "/generate раз")
    for _ in range(100):
        if (await app.queue.get_queue_depth(TaskType.GENERATE_IMAGE)).waiting == 1:
            break
        await asyncio.sleep(0.05)
    tg.user_message(USER + 1, "/generate два")
    await wait_text(tg, USER + 1, "твоё место в очереди — 2")
    assert not [t for t in texts_to(tg, USER) if "очереди" in t]


async def test_repeated_update_charges_and_enqueues_once(
    app: InProcessBot, tg: FakeTelegram, consumer: ManualConsumer
) -> None:
    await choose_first_character(tg, USER)
    update_id = tg.user_message(USER, "Повтор")
    update = next(u for u in tg.pending_updates if u["update_id"] == update_id)
    tg.push_update({"message": update["message"]})  # Telegram redelivers the same message
    task = await consumer.take(TaskType.GENERATE_REPLY)
    await asyncio.sleep(0.3)
    assert (await app.queue.get_queue_depth(TaskType.GENERATE_REPLY)).unfinished == 1
    await consumer.complete(task, ReplyResult(reply="Один раз", dialog_id=1))
    await wait_text(tg, USER, "Один раз")
    await asyncio.sleep(0.3)
    assert texts_to(tg, USER).count("Один раз") == 1
    assert await balances(app.db, USER) == (4, 2)
