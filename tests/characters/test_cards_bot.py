"""Characters from cards in the bot, fed through its Dispatcher on the fake Telegram: the
greeting (under the avatar) opens the dialog and is what the model sees first, the list
pages with ← and →, adult characters wait for the 18+ answer, admins send cards as files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from sqlalchemy import select
from structlog.testing import capture_logs

from consumers.handlers.reply import reply_messages
from consumers.providers.base import RetryPolicy
from consumers.providers.venice import VeniceClient
from db.characters import import_card
from db.engine import create_engine, create_sessionmaker
from db.models import Character, ChatMessage, Dialog, User
from producer import texts
from producer.characters import PER_PAGE
from producer.keyboards import AdultCallback, CharacterCallback, CharacterPageCallback
from shared.config import Settings
from shared.config_values import Secret
from shared.queue import QueueService, TaskType
from shared.tasks import ReplyPayload, ReplyResult
from tests.characters.card_files import v2, v2_png
from tests.support.bot_feed import FedBot, fed_bot, open_deliveries, press
from tests.support.bot_harness import ManualConsumer, bot_settings, migrated_sqlite, wait_text
from tests.support.bot_world import eventually
from tests.support.fakes.telegram import FakeTelegram
from tests.support.fakes.venice import FakeVenice
from tests.support.fixtures_db import Sessions, new_user_id

pytestmark = pytest.mark.timeout(60)

ADMIN = 777_000_001
GREETING = "Привет, {{user}}! Я {{char}}, рада знакомству."


@pytest.fixture
async def own_db(tmp_path: Path) -> AsyncIterator[Sessions]:
    """A database of this test's own: the list's length and its adult characters are known."""
    engine = create_engine(migrated_sqlite(tmp_path))
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def bot(
    settings: Settings, own_db: Sessions, tg: FakeTelegram, redis_client: aioredis.Redis
) -> AsyncIterator[FedBot]:
    config = bot_settings(settings, "sqlite+aiosqlite://", tg.base_url, admin_ids=[ADMIN])
    async with fed_bot(config, own_db, tg) as running:
        yield running


async def add_card(db: Sessions, data: bytes) -> int:
    async with db.begin() as session:
        return (await import_card(session, data)).character_id


def buttons(request: Any) -> list[list[dict[str, str]]]:
    rows: list[list[dict[str, str]]] = request.params["reply_markup"]["inline_keyboard"]
    return rows


def character_ids(request: Any) -> list[int]:
    return [
        CharacterCallback.unpack(row[0]["callback_data"]).character_id
        for row in buttons(request)
        if row[0]["callback_data"].startswith("char:")
    ]


async def messages_of(db: Sessions, user_id: int) -> list[tuple[str, str]]:
    async with db() as session:
        rows = await session.execute(
            select(ChatMessage.role, ChatMessage.content)
            .join(Dialog)
            .where(Dialog.user_id == user_id)
            .order_by(ChatMessage.id)
        )
        return [(role, content) for role, content in rows]


async def test_a_greeting_opens_the_dialog_under_the_avatar_and_the_model_sees_it(
    bot: FedBot, own_db: Sessions, queue: QueueService
) -> None:
    card = v2_png(v2(first_mes=GREETING, scenario="{{char}} ждёт {{user}}.", creator="t"))
    luna = await add_card(own_db, card)
    user = new_user_id()

    await bot.feed(bot.tg.user_message(user, "/start"))
    listed = await wait_text(bot.tg, user, "Привет")
    assert luna in character_ids(listed)
    await bot.feed(press(bot.tg, user, CharacterCallback(character_id=luna).pack()))

    await wait_text(bot.tg, user, "Твой собеседник — Луна")
    (photo,) = await bot.tg.wait_for("sendPhoto", lambda r: r.chat_id == user)
    assert photo.params["caption"] == "Привет, Анна! Я Луна, рада знакомству."
    avatar = photo.files["photo"][1]
    assert avatar.startswith(b"\x89PNG\r\n\x1a\n")
    assert b"chara" not in avatar
    assert await messages_of(own_db, user) == [
        ("assistant", "Привет, Анна! Я Луна, рада знакомству.")
    ]

    # The next request to the model starts with the character and its greeting.
    await bot.feed(bot.tg.user_message(user, "Как дела?"))
    consumer = ManualConsumer(queue)
    task = await consumer.take(TaskType.GENERATE_REPLY)
    payload = task.task.payload_as(ReplyPayload)
    async with FakeVenice(api_key="k") as venice:
        llm = VeniceClient(
            Secret("k"), base_url=venice.url, model="m", timeout=5, retry=RetryPolicy(0)
        )
        try:
            answer = await llm.chat(reply_messages(payload))
        finally:
            await llm.aclose()
        sent = venice.chat_requests[0].json["messages"]
    assert [m["role"] for m in sent] == ["system", "assistant", "user"]
    assert "Луна ждёт Анна." in sent[0]["content"]
    assert "{{" not in sent[0]["content"]
    assert sent[1]["content"] == "Привет, Анна! Я Луна, рада знакомству."
    assert sent[2]["content"] == "Как дела?"
    await consumer.complete(task, ReplyResult(reply=answer, dialog_id=payload.dialog_id))
    await wait_text(bot.tg, user, answer)

    # Choosing her again resumes the dialog: no second greeting.
    await bot.feed(press(bot.tg, user, CharacterCallback(character_id=luna).pack()))
    await wait_text(bot.tg, user, "Твой собеседник — Луна")
    assert len(bot.tg.sent("sendPhoto", user)) == 1
    await eventually(lambda: _none_open(own_db, user))


async def _none_open(db: Sessions, user: int) -> bool:
    return await open_deliveries(db, user) == []


async def test_a_card_without_an_avatar_greets_in_text(bot: FedBot, own_db: Sessions) -> None:
    sol = await add_card(own_db, orjson.dumps(v2(name="Sol", first_mes="Hi <USER>!")))
    user = new_user_id()

    await bot.feed(press(bot.tg, user, CharacterCallback(character_id=sol).pack()))

    await wait_text(bot.tg, user, "Hi Анна!")
    assert bot.tg.sent("sendPhoto", user) == []

    # /reset: a fresh dialog, opened by the greeting again.
    await bot.feed(bot.tg.user_message(user, "/reset"))
    await wait_text(bot.tg, user, texts.reset_done("Sol"))
    greetings = await said(bot.tg, user, "Hi Анна!", count=2)
    assert len(greetings) == 2
    assert await messages_of(own_db, user) == [("assistant", "Hi Анна!")] * 2
    assert len(await dialogs_of(own_db, user)) == 2


async def test_the_list_pages_with_arrows(bot: FedBot, own_db: Sessions) -> None:
    extra = [
        await add_card(own_db, orjson.dumps(v2(name=f"Card {n}", creator="pages")))
        for n in range(PER_PAGE)
    ]
    user = new_user_id()

    await bot.feed(bot.tg.user_message(user, "/characters"))
    listed = await wait_text(bot.tg, user, texts.CHOOSE_CHARACTER)
    first = character_ids(listed)
    assert len(first) == PER_PAGE
    assert [b["text"] for b in buttons(listed)[-1]] == [texts.NEXT_PAGE_BUTTON]

    forward = buttons(listed)[-1][0]["callback_data"]
    await bot.feed(press(bot.tg, user, forward))
    (edited,) = bot.tg.sent("editMessageReplyMarkup", user)
    second = character_ids(edited)
    assert first + second == sorted(first + second)
    assert second[-1] == extra[-1]
    assert len(first) + len(second) == PER_PAGE + 4  # and the four built-in characters
    assert [b["text"] for b in buttons(edited)[-1]] == [texts.PREVIOUS_PAGE_BUTTON]

    # A page past the end (forged or left from a longer list) shows the last one.
    answered = bot.tg.callback(user, CharacterPageCallback(page=9999).pack())
    await bot.feed(_update_of(bot.tg, answered))
    assert answered in bot.tg.answered_callbacks


def _update_of(tg: FakeTelegram, callback_id: str) -> int:
    return next(
        int(u["update_id"])
        for u in tg.pending_updates
        if u.get("callback_query", {}).get("id") == callback_id
    )


async def said(tg: FakeTelegram, user: int, text: str, count: int = 1) -> list[Any]:
    """The bot's messages to `user` with exactly `text`, once there are `count` of them."""
    return await tg.wait_for(
        "sendMessage", lambda r: r.chat_id == user and r.params.get("text") == text, count=count
    )


async def is_adult(db: Sessions, user_id: int) -> bool | None:
    async with db() as session:
        answer: bool | None = await session.scalar(select(User.is_adult).where(User.id == user_id))
        return answer


async def dialogs_of(db: Sessions, user_id: int) -> list[int]:
    async with db() as session:
        return list(await session.scalars(select(Dialog.id).where(Dialog.user_id == user_id)))


async def test_adult_characters_wait_for_the_users_18_plus_answer(
    bot: FedBot, own_db: Sessions
) -> None:
    adult = await add_card(own_db, orjson.dumps(v2(name="Lilith", tags=["nsfw"])))
    user, other = new_user_id(), new_user_id()

    await bot.feed(bot.tg.user_message(user, "/start"))
    listed = await wait_text(bot.tg, user, "Привет")
    question = await wait_text(bot.tg, user, texts.ADULT_QUESTION)
    assert adult not in character_ids(listed)
    yes, no = (b["callback_data"] for b in buttons(question)[0])
    assert AdultCallback.unpack(yes) == AdultCallback(user_id=user, confirmed=True)

    # Not listed, so not choosable: a forged press writes nothing.
    with capture_logs() as logs:
        await bot.feed(press(bot.tg, user, CharacterCallback(character_id=adult).pack()))
    await wait_text(bot.tg, user, texts.ADULT_ONLY)
    assert await dialogs_of(own_db, user) == []
    assert any(e["event"] == "adult_character_refused" for e in logs)

    # Someone else cannot answer for the user.
    answer = bot.tg.callback(other, yes, chat_id=user)
    await bot.feed(_update_of(bot.tg, answer))
    assert bot.tg.answered_callbacks[answer].get("text") == texts.NOT_YOUR_BUTTON
    assert await is_adult(own_db, user) is None

    await bot.feed(press(bot.tg, user, no))
    await wait_text(bot.tg, user, texts.ADULT_DECLINED)
    assert await is_adult(own_db, user) is False
    await bot.feed(bot.tg.user_message(user, "/characters"))
    await wait_text(bot.tg, user, texts.CHOOSE_CHARACTER)
    assert len(await said(bot.tg, user, texts.ADULT_QUESTION)) == 1  # asked once only

    await bot.feed(bot.tg.user_message(user, "/adult"))
    asked = await said(bot.tg, user, texts.ADULT_QUESTION, count=2)
    await bot.feed(press(bot.tg, user, buttons(asked[-1])[0][0]["callback_data"]))
    await wait_text(bot.tg, user, texts.ADULT_CONFIRMED)
    assert await is_adult(own_db, user) is True
    relisted = await said(bot.tg, user, texts.CHOOSE_CHARACTER, count=2)
    assert adult in character_ids(relisted[-1])
    await bot.feed(press(bot.tg, user, CharacterCallback(character_id=adult).pack()))
    await wait_text(bot.tg, user, "Твой собеседник — Lilith")
    assert len(await dialogs_of(own_db, user)) == 1

    await bot.feed(bot.tg.user_message(user, "/terms"))
    await wait_text(bot.tg, user, "Персонажи 18+")


async def characters_named(db: Sessions, name: str) -> list[Character]:
    async with db() as session:
        return list(await session.scalars(select(Character).where(Character.name == name)))


async def test_an_admin_sends_a_card_as_a_document(bot: FedBot, own_db: Sessions) -> None:
    card = v2_png(v2(name="Nova", first_mes=GREETING, tags=["NSFW"], creator="adm"))

    await bot.feed(bot.tg.user_document(ADMIN, card, "nova.png", "image/png"))
    await wait_text(bot.tg, ADMIN, "Персонаж «Nova» добавлен (18+, с аватаром).")
    await bot.feed(bot.tg.user_document(ADMIN, card, "nova.png", "image/png"))
    await wait_text(bot.tg, ADMIN, "Персонаж «Nova» обновлён (18+, с аватаром).")
    (nova,) = await characters_named(own_db, "Nova")
    assert (nova.nsfw, nova.greeting) == (True, "Привет, {{user}}! Я Nova, рада знакомству.")

    await bot.feed(bot.tg.user_document(ADMIN, card[:-30], "cut.png", "image/png"))
    await wait_text(bot.tg, ADMIN, "Карточку не удалось загрузить: PNG")


async def test_anyone_else_sending_a_card_is_refused_and_logged(
    bot: FedBot, own_db: Sessions
) -> None:
    stranger = new_user_id()
    card = v2_png(v2(name="Intruder"))

    with capture_logs() as logs:
        await bot.feed(bot.tg.user_document(stranger, card, "card.png", "image/png"))

    await wait_text(bot.tg, stranger, texts.NOT_TEXT)
    assert await characters_named(own_db, "Intruder") == []
    assert bot.tg.sent("getFile") == []
    assert [e["event"] for e in logs if e["event"].startswith("card_")] == ["card_upload_refused"]
