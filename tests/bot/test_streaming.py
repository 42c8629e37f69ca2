"""Replies shown while they are written, in process: the bot follows a live stream that the
test writes with the consumer's own LiveWriter, and the consumer's outcome is played by hand."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from producer import texts
from producer.keyboards import PhotoCallback, StopCallback
from producer.stream_records import draft_id_for
from shared.config import Settings
from shared.queue import QueueService, TaskEntry
from shared.queue.keys import Keys
from shared.queue.live import LiveWriter
from shared.tasks import ReplyResult, TaskType
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
from tests.support.bot_world import eventually
from tests.support.fakes.telegram import FakeTelegram, Request

USER = 7101
GROUP = -1_000_000_7101

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def config(settings: Settings, tmp_path: Path, tg: FakeTelegram) -> Settings:
    return bot_settings(settings, migrated_sqlite(tmp_path), tg.base_url)


@pytest.fixture
async def app(
    config: Settings, tg: FakeTelegram, redis_client: aioredis.Redis
) -> AsyncIterator[InProcessBot]:
    async with in_process_bot(config, tg) as running:
        yield running


def writer(app: InProcessBot, delivery: TaskEntry) -> LiveWriter:
    return LiveWriter.for_task(
        app.queue.redis, app.settings, TaskType.GENERATE_REPLY, delivery.task.task_id, 1
    )


def reply(text: str, **marks: bool) -> ReplyResult:
    return ReplyResult(reply=text, dialog_id=1, **marks)


def has_text(chat_id: int, needle: str) -> Callable[[Request], bool]:
    return lambda r: r.ok and r.chat_id == chat_id and needle in str(r.params.get("text"))


async def take_reply(app: InProcessBot, text: str, chat_id: int | None = None) -> TaskEntry:
    app.tg.user_message(USER, text, chat_id=chat_id)
    return await ManualConsumer(app.queue).take(TaskType.GENERATE_REPLY)


async def test_a_private_reply_streams_as_one_draft_then_one_final_message(
    app: InProcessBot, tg: FakeTelegram
) -> None:
    await choose_first_character(tg, USER)
    task = await take_reply(app, "Расскажи сказку")
    live = writer(app, task)
    await live.add("Жили-были ")
    first = (await tg.wait_for("sendMessageDraft", has_text(USER, "Жили")))[0]
    await live.add("кот и пёс.")
    await live.close("done")
    await tg.wait_for("sendMessageDraft", has_text(USER, "кот и пёс."))
    await ManualConsumer(app.queue).complete(task, reply("Жили-были кот и пёс."))
    final = await wait_text(tg, USER, "Жили-были кот и пёс.")

    assert first.params["can_stop"] is True
    drafts = tg.streaming.draft_calls(USER)
    assert {r.params["draft_id"] for r in drafts} == {draft_id_for(task.task.task_id)}
    assert final.params["reply_markup"]["inline_keyboard"][0][0]["text"] == texts.PHOTO_BUTTON
    assert tg.streaming.draft(USER) is None  # the final message ended the draft
    await asyncio.sleep(0.3)
    assert texts_to(tg, USER).count("Жили-были кот и пёс.") == 1
    assert len(tg.streaming.draft_calls(USER)) == len(drafts)  # nothing drafted after the end
    assert await balances(app.db, USER) == (4, 2)


async def test_a_group_reply_is_one_message_edited_in_place(
    app: InProcessBot, tg: FakeTelegram
) -> None:
    await choose_first_character(tg, USER)
    task = await take_reply(app, "Привет всем", chat_id=GROUP)
    live = writer(app, task)
    await live.add("Всем привет")
    placeholder = (await tg.wait_for("sendMessage", has_text(GROUP, "Всем привет")))[0]
    button = placeholder.params["reply_markup"]["inline_keyboard"][0][0]
    assert button["text"] == texts.STOP_BUTTON
    assert StopCallback.unpack(button["callback_data"]).task_id == task.task.task_id
    await live.add(" и тебе")
    await tg.wait_for("editMessageText", has_text(GROUP, "Всем привет и тебе"))
    await ManualConsumer(app.queue).complete(task, reply("Всем привет и тебе!"))
    await tg.wait_for(
        "editMessageText",
        lambda r: (
            r.ok and r.params["text"] == "Всем привет и тебе!" and "reply_markup" in r.params
        ),
    )

    message_id = placeholder.result["message_id"]
    assert [r.params["message_id"] for r in tg.sent("editMessageText", GROUP)] == [message_id] * 2
    assert len(tg.sent("sendMessage", GROUP)) == 1
    assert not tg.sent("sendMessageDraft")
    shown = tg.chat_history(GROUP)[-1]
    assert shown["text"] == "Всем привет и тебе!"
    callback = shown["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    assert callback == PhotoCallback(dialog_id=1).pack()  # the dialog the reply was written in


async def test_refused_drafts_fall_back_to_an_edited_message(
    app: InProcessBot, tg: FakeTelegram
) -> None:
    await choose_first_character(tg, USER)
    tg.fail_next("sendMessageDraft", 400, "Bad Request: TEXTDRAFT_PEER_INVALID")
    task = await take_reply(app, "Как дела?")
    live = writer(app, task)
    await live.add("Отлично")
    await tg.wait_for("sendMessage", has_text(USER, "Отлично"))
    await live.add(", спасибо")
    await tg.wait_for("editMessageText", has_text(USER, "Отлично, спасибо"))
    await ManualConsumer(app.queue).complete(task, reply("Отлично, спасибо!"))
    await tg.wait_for("editMessageText", has_text(USER, "Отлично, спасибо!"))
    assert [r.status for r in tg.sent("sendMessageDraft")] == [400]
    assert texts_to(tg, USER).count("Отлично") == 1


async def test_telegrams_stop_button_keeps_the_partial_text_marked(
    app: InProcessBot, tg: FakeTelegram, redis_client: aioredis.Redis
) -> None:
    await choose_first_character(tg, USER)
    task = await take_reply(app, "Долгая история")
    await writer(app, task).add("Однажды")
    await tg.wait_for("sendMessageDraft", has_text(USER, "Однажды"))
    tg.streaming.stop_generation(USER)
    record = Keys.from_settings(app.settings).record(TaskType.GENERATE_REPLY, task.task.task_id)
    await eventually(lambda: redis_client.hexists(record, "cancel"))

    await ManualConsumer(app.queue).stop(task, reply("Однажды", stopped=True))
    final = await wait_text(tg, USER, texts.STOPPED_MARK)
    assert final.params["text"] == f"Однажды\n\n{texts.STOPPED_MARK}"
    assert await balances(app.db, USER) == (4, 2)  # kept and paid for: no refund

    # Stop after the end: a polite answer, nothing else.
    tg.user_message(USER, "/stop")
    await wait_text(tg, USER, texts.NOTHING_TO_STOP)
    assert texts_to(tg, USER).count(final.params["text"]) == 1


async def test_stop_before_the_start_refunds_once(app: InProcessBot, tg: FakeTelegram) -> None:
    await choose_first_character(tg, USER)
    tg.user_message(USER, "Привет")
    await eventually(lambda: waiting(app.queue))
    tg.user_message(USER, "/stop")
    await wait_text(tg, USER, texts.REPLY_STOPPED_REFUNDED)
    tg.user_message(USER, "/stop")
    await wait_text(tg, USER, texts.NOTHING_TO_STOP)
    await asyncio.sleep(0.3)
    assert texts_to(tg, USER).count(texts.REPLY_STOPPED_REFUNDED) == 1
    assert await balances(app.db, USER) == (5, 2)


async def test_the_stop_button_in_a_group(app: InProcessBot, tg: FakeTelegram) -> None:
    await choose_first_character(tg, USER)
    task = await take_reply(app, "Спой", chat_id=GROUP)
    await writer(app, task).add("Ля-ля")
    placeholder = (await tg.wait_for("sendMessage", has_text(GROUP, "Ля-ля")))[0]
    data = StopCallback(task_id=task.task.task_id).pack()
    message_id = placeholder.result["message_id"]
    first = tg.callback(USER, data, chat_id=GROUP, message_id=message_id)
    second = tg.callback(USER, data, chat_id=GROUP, message_id=message_id)
    ids = {first, second}
    await tg.wait_for(
        "answerCallbackQuery", lambda r: r.params["callback_query_id"] in ids, count=2
    )
    answers = [tg.answered_callbacks[first]["text"], tg.answered_callbacks[second]["text"]]
    assert answers == [texts.STOPPING, texts.STOPPING]

    await ManualConsumer(app.queue).stop(task, reply("Ля-ля", stopped=True))
    await tg.wait_for("editMessageText", has_text(GROUP, texts.STOPPED_MARK))
    assert tg.chat_history(GROUP)[-1]["text"] == f"Ля-ля\n\n{texts.STOPPED_MARK}"
    assert len(tg.sent("sendMessage", GROUP)) == 1


async def test_a_cut_reply_is_marked(app: InProcessBot, tg: FakeTelegram) -> None:
    await choose_first_character(tg, USER)
    task = await take_reply(app, "Ну?")
    await ManualConsumer(app.queue).complete(task, reply("Обрыв на полусл", cut=True))
    final = await wait_text(tg, USER, texts.CUT_MARK)
    assert final.params["text"] == f"Обрыв на полусл\n\n{texts.CUT_MARK}"


async def test_flood_control_holds_the_chat_and_no_call_exceeds_its_pace(
    settings: Settings, tmp_path: Path, tg: FakeTelegram, redis_client: aioredis.Redis
) -> None:
    config = bot_settings(
        settings, migrated_sqlite(tmp_path), tg.base_url, chat_send_interval_seconds=0.3
    )
    async with in_process_bot(config, tg) as app:
        await choose_first_character(tg, USER)
        tg.streaming.limit_per_chat(0.25)
        tg.fail_next("sendMessageDraft", 429, retry_after=1)
        task = await take_reply(app, "Пиши")
        live = writer(app, task)
        started = time.monotonic()
        text = ""
        while time.monotonic() - started < 2.0:
            text += "слово "
            await live.add("слово ")
            await asyncio.sleep(0.02)
        await live.close("done")
        await ManualConsumer(app.queue).complete(task, reply(text.strip()))
        await wait_text(tg, USER, text.strip())

    drafts = tg.sent("sendMessageDraft", USER)
    assert drafts[0].status == 429
    # The whole chat waited out retry_after, and then kept its pace: no other 429.
    assert drafts[1].timestamp - drafts[0].timestamp >= 1.0
    assert tg.streaming.limited == []
    assert texts_to(tg, USER).count(text.strip()) == 1
    assert 2 <= len(drafts) <= 6  # coalesced: 100 writes, a few drafts


async def test_a_restarted_bot_continues_the_same_message(
    config: Settings, tg: FakeTelegram, redis_client: aioredis.Redis
) -> None:
    async with in_process_bot(config, tg) as first:
        await choose_first_character(tg, USER)
        task = await take_reply(first, "Привет", chat_id=GROUP)
        live = writer(first, task)
        await live.add("Сейчас")
        placeholder = (await tg.wait_for("sendMessage", has_text(GROUP, "Сейчас")))[0]
    # The next process follows the same task and edits the same message.
    async with in_process_bot(config, tg) as second:
        await live.add(" расскажу")
        await tg.wait_for("editMessageText", has_text(GROUP, "Сейчас расскажу"))
        await ManualConsumer(second.queue).complete(task, reply("Сейчас расскажу всё."))
        await tg.wait_for("editMessageText", has_text(GROUP, "всё."))
    message_id = placeholder.result["message_id"]
    assert {r.params["message_id"] for r in tg.sent("editMessageText", GROUP)} == {message_id}
    assert len(tg.sent("sendMessage", GROUP)) == 1


async def waiting(queue: QueueService) -> bool:
    return (await queue.get_queue_depth(TaskType.GENERATE_REPLY)).waiting == 1
