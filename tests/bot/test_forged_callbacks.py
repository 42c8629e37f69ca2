"""Forged, stale and garbled button presses, fed through the Dispatcher: each gets an answer
(no spinner left on the button), nothing is logged as an error, and the database is left as
it was. A button under someone else's message in a group is refused to everyone else."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select
from structlog.testing import capture_logs

from db.engine import create_engine, create_sessionmaker
from db.models import ChatMessage, Delivery, Dialog, LedgerEntry, User
from producer import texts
from producer.app import build_bot, build_dispatcher
from producer.keyboards import (
    LEGACY_PHOTO_DATA,
    CharacterCallback,
    ContinueCallback,
    DeleteCallback,
    DialogCallback,
    MemoryCallback,
    RegenerateCallback,
)
from producer.services import build_services
from producer.telegram_sender import telegram_sender
from shared.config import Settings
from shared.queue import QueueService, TaskType
from shared.tasks import ReplyResult
from tests.support.bot_feed import FedBot, fed_bot, open_deliveries
from tests.support.bot_harness import ManualConsumer, balances, bot_settings, wait_text
from tests.support.bot_world import eventually
from tests.support.fakes.telegram import FakeTelegram
from tests.support.fixtures_db import Sessions, new_user_id

pytestmark = pytest.mark.timeout(60)

# Callback data no handler may act on: each is answered "this button no longer works".
FORGED = [
    "char:abc",  # not a number
    "char:0",
    "char:-3",
    "char:2147483648",  # past the characters' id column
    "char:" + "9" * 70,  # longer than Telegram allows, and a number no column holds
    "char:+1",  # numbers have one spelling
    "char: 1",
    "char:1:2",
    "photo:abc",
    "photo:0",
    "photo:" + "1" * 25,
    "delete:1",  # the question's buttons before they named who asked
    "delete:abc:1",
    "delete:5:maybe",
    "stop:not-a-task",
    "stop:" + "x" * 300,
    "regen:not-a-task",
    "regen:" + str(uuid.UUID(int=2**128 - 1)).upper(),  # task ids have one spelling too
    "regen:",
    "cont:" + "1" * 36,
    "cont:abc:def",
    "memory:0",
    "memory:abc",
    "memory:" + str(2**63),  # past the dialogs' id column
    "dialog:-1",
    "dialog:1e3",
    "dialog:" + "9" * 25,
    "chars:-1",  # a page of the character list
    "chars:abc",
    "chars:10000",
    "chars:1:2",
    "adult:1",  # the 18+ question's buttons name who was asked
    "adult:abc:1",
    "adult:5:maybe",
    "",
    "нет такой кнопки",
    "\x00\n\t",
    "x" * 1000,
]


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def config(settings: Settings, tg: FakeTelegram, redis_client: aioredis.Redis) -> Settings:
    return bot_settings(settings, "sqlite+aiosqlite://", tg.base_url)


@pytest.fixture
async def bot(config: Settings, db: Sessions, tg: FakeTelegram) -> AsyncIterator[FedBot]:
    async with fed_bot(config, db, tg) as running:
        yield running


async def press(bot: FedBot, user_id: int, data: str, chat_id: int | None = None) -> Any:
    """`user_id` presses a button with `data`; handled before this returns. The answer the
    press got (None: the spinner was left on the button)."""
    callback_id = bot.tg.callback(user_id, data, chat_id=chat_id)
    update_id = next(
        u["update_id"]
        for u in bot.tg.pending_updates
        if u.get("callback_query", {}).get("id") == callback_id
    )
    await bot.feed(update_id)
    return bot.tg.answered_callbacks.get(callback_id)


async def snapshot(db: Sessions, *user_ids: int) -> dict[str, Any]:
    """Everything the database holds of these users."""
    async with db() as session:
        users = await session.execute(
            select(User.id, User.energy, User.diamonds).where(User.id.in_(user_ids))
        )
        dialogs = await session.execute(
            select(Dialog.id, Dialog.character_id, Dialog.is_active)
            .where(Dialog.user_id.in_(user_ids))
            .order_by(Dialog.id)
        )
        messages = await session.scalar(
            select(func.count())
            .select_from(ChatMessage)
            .join(Dialog)
            .where(Dialog.user_id.in_(user_ids))
        )
        ledger = await session.scalars(
            select(LedgerEntry.id).where(LedgerEntry.user_id.in_(user_ids))
        )
        deliveries = await session.scalars(
            select(Delivery.task_id).where(Delivery.chat_id.in_(user_ids))
        )
        return {
            "users": sorted(tuple(row) for row in users),
            "dialogs": [tuple(row) for row in dialogs],
            "messages": messages,
            "ledger": sorted(ledger),
            "deliveries": sorted(deliveries),
        }


async def all_sent(db: Sessions, *chat_ids: int) -> None:
    """Wait until the chats' deliveries are all marked sent (the mark follows the message):
    tests share the database, and a bot resumes every open delivery it finds."""

    async def none_open() -> bool:
        return await open_deliveries(db, *chat_ids) == []

    await eventually(none_open)


def errors_in(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["log_level"] in {"error", "critical"} or "exc_info" in e]


@pytest.mark.parametrize("data", FORGED, ids=[f"forged{n}" for n in range(len(FORGED))])
async def test_a_forged_press_is_answered_and_changes_nothing(
    bot: FedBot, db: Sessions, data: str
) -> None:
    user = new_user_id()
    await bot.choose_character(user)
    await bot.feed(bot.tg.user_message(user, "Привет"))
    before = await snapshot(db, user)

    with capture_logs() as logs:
        answer = await press(bot, user, data)

    assert answer is not None
    assert answer.get("text") == texts.BUTTON_OUTDATED
    assert errors_in(logs) == []
    assert await snapshot(db, user) == before
    consumer = ManualConsumer(bot.queue)
    await consumer.fail(await consumer.take(TaskType.GENERATE_REPLY))
    await wait_text(bot.tg, user, texts.REPLY_FAILED)
    await all_sent(db, user)


async def test_a_strangers_press_on_a_character_that_does_not_exist_writes_nothing(
    bot: FedBot, db: Sessions
) -> None:
    stranger = new_user_id()

    with capture_logs() as logs:
        answer = await press(bot, stranger, "char:2147483647")

    assert answer is not None
    await wait_text(bot.tg, stranger, texts.UNKNOWN_CHARACTER)
    assert errors_in(logs) == []
    nothing = {"users": [], "dialogs": [], "messages": 0, "ledger": [], "deliveries": []}
    assert await snapshot(db, stranger) == nothing  # not even the user row


async def test_the_photo_button_under_a_reply_is_only_for_its_dialogs_user(
    bot: FedBot, db: Sessions, queue: QueueService
) -> None:
    asker, other, group = new_user_id(), new_user_id(), -(10**12) - new_user_id()
    await bot.choose_character(asker)
    await bot.choose_character(other)
    consumer = ManualConsumer(queue)
    await bot.feed(bot.tg.user_message(asker, "Как дела?", chat_id=group))
    task = await consumer.take(TaskType.GENERATE_REPLY)
    dialog_id = task.task.data["dialog_id"]
    await consumer.complete(task, ReplyResult(reply="Отлично!", dialog_id=dialog_id))
    shown = await wait_text(bot.tg, group, "Отлично!")
    button = shown.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    before = await snapshot(db, asker, other)

    with capture_logs() as logs:
        refused = await press(bot, other, button, chat_id=group)
        gone = await press(bot, other, f"photo:{2**63 - 1}", chat_id=group)

    assert (refused or {}).get("text") == texts.NOT_YOUR_BUTTON
    assert (gone or {}).get("text") == texts.BUTTON_OUTDATED
    assert errors_in(logs) == []
    assert await snapshot(db, asker, other) == before
    assert (await queue.get_queue_depth(TaskType.GENERATE_IMAGE_PROMPT)).unfinished == 0

    # The asker's own press makes a photo from that dialog.
    assert await press(bot, asker, button, chat_id=group) is not None
    prompt = await consumer.take(TaskType.GENERATE_IMAGE_PROMPT)
    assert [t["content"] for t in prompt.task.data["recent_dialogue"]][:1] == ["Как дела?"]
    await consumer.fail(prompt)
    await wait_text(bot.tg, group, texts.IMAGE_FAILED)
    await all_sent(db, asker, other, group)


async def test_the_buttons_that_steer_a_dialog_are_only_for_its_user(
    bot: FedBot, db: Sessions, queue: QueueService
) -> None:
    asker, other, group = new_user_id(), new_user_id(), -(10**12) - new_user_id()
    await bot.choose_character(asker)
    await bot.choose_character(other)
    consumer = ManualConsumer(queue)
    await bot.feed(bot.tg.user_message(asker, "Расскажи сказку", chat_id=group))
    task = await consumer.take(TaskType.GENERATE_REPLY)
    dialog_id = task.task.data["dialog_id"]
    await consumer.complete(task, ReplyResult(reply="Жила-была", dialog_id=dialog_id, cut=True))
    shown = await wait_text(bot.tg, group, "Жила-была")
    rows = shown.params["reply_markup"]["inline_keyboard"]
    regen, cont = (button["callback_data"] for button in rows[1])
    assert RegenerateCallback.unpack(regen).task_id == task.task.task_id
    assert ContinueCallback.unpack(cont).task_id == task.task.task_id
    # A summary and a past-dialogs list show these two to whoever sees the chat.
    memory = MemoryCallback(dialog_id=dialog_id).pack()
    resume = DialogCallback(dialog_id=dialog_id).pack()
    gone = 2**63 - 1
    unknown = str(uuid.uuid4())
    before = await snapshot(db, asker, other)

    with capture_logs() as logs:
        refused = [await press(bot, other, data, chat_id=group) for data in (regen, cont)]
        refused += [await press(bot, other, data, chat_id=group) for data in (memory, resume)]
        stale = [
            await press(bot, asker, data, chat_id=group)
            for data in (f"memory:{gone}", f"dialog:{gone}")
        ]
        late = [
            await press(bot, asker, data, chat_id=group)
            for data in (f"regen:{unknown}", f"cont:{unknown}")
        ]

    assert [(a or {}).get("text") for a in refused] == [texts.NOT_YOUR_BUTTON] * 4
    assert [(a or {}).get("text") for a in stale] == [texts.BUTTON_OUTDATED] * 2
    assert [(a or {}).get("text") for a in late] == [texts.TOO_LATE] * 2
    assert errors_in(logs) == []
    assert await snapshot(db, asker, other) == before
    assert (await queue.get_queue_depth(TaskType.GENERATE_REPLY)).unfinished == 0

    # The asker's own press asks again, for that reply.
    assert (await press(bot, asker, regen, chat_id=group) or {}).get("text") == texts.REGENERATING
    again = await consumer.take(TaskType.GENERATE_REPLY)
    assert again.task.data["replaces"] == task.task.task_id
    await consumer.fail(again)
    await wait_text(bot.tg, group, texts.REPLY_FAILED)
    await all_sent(db, asker, other, group)


async def test_the_delete_question_is_answered_only_by_who_asked(
    bot: FedBot, db: Sessions
) -> None:
    asker, other, group = new_user_id(), new_user_id(), -(10**12) - new_user_id()
    await bot.choose_character(asker)
    await bot.choose_character(other)
    await bot.feed(bot.tg.user_message(asker, "/delete_me", chat_id=group))
    question = await wait_text(bot.tg, group, texts.DELETE_QUESTION)
    yes = question.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    assert DeleteCallback.unpack(yes) == DeleteCallback(user_id=asker, confirmed=True)
    before = await snapshot(db, asker, other)
    others = await snapshot(db, other)

    with capture_logs() as logs:
        refused = await press(bot, other, yes, chat_id=group)

    assert (refused or {}).get("text") == texts.NOT_YOUR_BUTTON
    assert errors_in(logs) == []
    assert await snapshot(db, asker, other) == before

    assert await press(bot, asker, yes, chat_id=group) is not None
    await wait_text(bot.tg, group, texts.DELETE_DONE)
    assert (await snapshot(db, asker))["dialogs"] == []
    assert await snapshot(db, other) == others


async def test_a_photo_button_sent_before_buttons_named_their_dialog_still_works(
    bot: FedBot, db: Sessions, queue: QueueService
) -> None:
    user = new_user_id()
    await bot.choose_character(user)
    before = await balances(db, user)

    assert await press(bot, user, LEGACY_PHOTO_DATA) is not None

    consumer = ManualConsumer(queue)
    await consumer.fail(await consumer.take(TaskType.GENERATE_IMAGE_PROMPT))
    await wait_text(bot.tg, user, texts.IMAGE_FAILED)
    await all_sent(db, user)
    assert await balances(db, user) == before  # charged, then refunded once


async def test_a_press_whose_handler_fails_is_still_answered(
    config: Settings, queue: QueueService, tg: FakeTelegram
) -> None:
    # Nothing listens on port 9: the handler's database call fails at once.
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:9/test")
    bot = build_bot(config)
    try:
        sender = telegram_sender(bot, config, queue.scripts)
        services = build_services(config, create_sessionmaker(engine), queue, sender)
        dispatcher = build_dispatcher(services)
        callback_id = tg.callback(new_user_id(), CharacterCallback(character_id=1).pack())
        with capture_logs() as logs:
            await dispatcher.feed_raw_update(bot, tg.pending_updates[-1])
    finally:
        await bot.session.close()
        await engine.dispose()

    assert callback_id in tg.answered_callbacks
    assert [e["event"] for e in errors_in(logs)] == ["update_failed"]
