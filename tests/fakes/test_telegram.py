"""The fake Bot API server driven by a real aiogram Bot, Dispatcher and raw HTTP."""

from __future__ import annotations

import asyncio
import os
import struct
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramRetryAfter,
)
from aiogram.filters import CommandStart
from aiogram.types import (
    BotCommand,
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
)

from tests.support.fakes.telegram import FakeTelegram

TOKEN = "123456:TEST"  # noqa: S105 - a fake token in the shape aiogram validates
USER_ID = 555
PNG = (
    b"\x89PNG\r\n\x1a\n"
    + struct.pack(">I", 13)
    + b"IHDR"
    + struct.pack(">II", 640, 480)
    + bytes(range(256)) * 8  # every byte value, including \r\n and NUL, must survive
)
KEYBOARD = InlineKeyboardMarkup(
    inline_keyboard=[[InlineKeyboardButton(text="❤️", callback_data="like")]]
)


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def bot(tg: FakeTelegram) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(tg.base_url))
    async with Bot(TOKEN, session=session) as client:
        yield client


async def test_get_me(bot: Bot, tg: FakeTelegram) -> None:
    me = await bot.get_me()

    assert (me.id, me.is_bot, me.username) == (123456, True, tg.bot_user["username"])
    assert [r.method for r in tg.requests] == ["getMe"]


async def test_wire_contract_over_raw_http(tg: FakeTelegram) -> None:
    async with aiohttp.ClientSession(tg.base_url) as http:
        async with http.post("/bot999:WRONG/getMe") as response:
            assert response.status == 401
            assert await response.json() == {
                "ok": False,
                "error_code": 401,
                "description": "Unauthorized",
            }
        async with http.post(f"/bot{TOKEN}/sendCarrierPigeon") as response:
            assert response.status == 404
            assert (await response.json())["description"] == "Not Found: method not found"
        async with http.get(f"/bot{TOKEN}/GETME") as response:
            assert (await response.json())["result"]["id"] == 123456

        # urlencoded: non-strings are JSON, but a text that looks like a number stays text.
        form = {"chat_id": "555", "text": "123", "disable_notification": "true"}
        async with http.post(f"/bot{TOKEN}/sendMessage", data=form) as response:
            assert (await response.json())["result"]["text"] == "123"
        async with http.post(f"/bot{TOKEN}/sendmessage", json={"chat_id": 7, "text": "json"}):
            pass

        tg.fail_next("sendMessage", 429, retry_after=7)
        async with http.post(f"/bot{TOKEN}/sendMessage", json={"chat_id": 7}) as response:
            assert response.status == 429
            assert response.headers["Retry-After"] == "7"
            assert await response.json() == {
                "ok": False,
                "error_code": 429,
                "description": "Too Many Requests: retry after 7",
                "parameters": {"retry_after": 7},
            }

        # A file part named after the field itself, without attach://.
        direct = aiohttp.FormData()
        direct.add_field("chat_id", "555")
        direct.add_field("photo", PNG, filename="direct.png")
        async with http.post(f"/bot{TOKEN}/sendPhoto", data=direct) as response:
            assert response.status == 200

    first, second, _, photo = tg.sent("sendMessage") + tg.sent("sendPhoto")
    assert first.params == {"chat_id": 555, "text": "123", "disable_notification": True}
    assert (second.params, second.http_method) == ({"chat_id": 7, "text": "json"}, "POST")
    assert photo.files == {"photo": ("direct.png", PNG)}
    assert [r.status for r in tg.requests] == [404, 200, 200, 200, 429, 200]


async def test_send_message_with_inline_keyboard(bot: Bot, tg: FakeTelegram) -> None:
    first = await bot.send_message(USER_ID, "Привет!", reply_markup=KEYBOARD)
    second = await bot.send_message(USER_ID, "Ещё раз")

    assert second.message_id == first.message_id + 1
    assert abs(first.date.timestamp() - time.time()) < 5
    assert first.reply_markup is not None
    assert first.reply_markup.model_dump() == KEYBOARD.model_dump()
    assert first.from_user is not None and first.from_user.id == bot.id
    [request] = tg.sent("sendMessage", chat_id=USER_ID)[:1]
    assert request.params["reply_markup"] == {
        "inline_keyboard": [[{"text": "❤️", "callback_data": "like"}]]
    }
    assert request.params["text"] == "Привет!"


async def test_send_message_is_validated(bot: Bot, tg: FakeTelegram) -> None:
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(USER_ID, "x" * 4097)
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(USER_ID, "")
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(USER_ID, "I <3 you", parse_mode="HTML")

    # Markup does not count towards the limit; emoji count as two UTF-16 units.
    await bot.send_message(USER_ID, "<b>" + "x" * 4096 + "</b>", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(USER_ID, "😀" * 2049)


async def test_send_photo_upload_arrives_intact(bot: Bot, tg: FakeTelegram) -> None:
    photo = BufferedInputFile(PNG, filename="girl.png")

    message = await bot.send_photo(USER_ID, photo, caption="☕", reply_markup=KEYBOARD)

    [request] = tg.sent("sendPhoto")
    assert str(request.params["photo"]).startswith("attach://")
    assert request.files["photo"] == ("girl.png", PNG)
    assert message.photo is not None and message.caption == "☕"
    largest = message.photo[-1]
    assert (largest.width, largest.height, largest.file_size) == (640, 480, len(PNG))

    downloaded = await bot.download(largest.file_id)
    assert downloaded is not None and downloaded.read() == PNG

    resent = await bot.send_photo(USER_ID, largest.file_id)
    assert resent.photo is not None and resent.photo[-1].file_id == largest.file_id
    with pytest.raises(TelegramBadRequest, match="caption is too long"):
        await bot.send_photo(USER_ID, largest.file_id, caption="x" * 1025)


async def test_send_document_and_chat_action(bot: Bot, tg: FakeTelegram) -> None:
    assert await bot.send_chat_action(USER_ID, "upload_photo") is True
    message = await bot.send_document(USER_ID, BufferedInputFile(b"%PDF", filename="a.pdf"))

    assert message.document is not None and message.document.file_name == "a.pdf"
    assert tg.sent("sendChatAction")[0].params == {"chat_id": USER_ID, "action": "upload_photo"}
    assert tg.sent("sendDocument")[0].files["document"] == ("a.pdf", b"%PDF")


async def test_scripted_errors(bot: Bot, tg: FakeTelegram) -> None:
    tg.fail_next("sendMessage", 429, retry_after=3)
    with pytest.raises(TelegramRetryAfter) as retry:
        await bot.send_message(USER_ID, "flood")
    assert retry.value.retry_after == 3
    await bot.send_message(USER_ID, "after waiting")  # only the next call fails

    tg.fail_next("sendPhoto", 403)
    with pytest.raises(TelegramForbiddenError, match="blocked by the user"):
        await bot.send_photo(USER_ID, "https://example.com/a.png")

    tg.block_user(USER_ID)
    with pytest.raises(TelegramForbiddenError):
        await bot.send_chat_action(USER_ID, "typing")
    tg.user_message(USER_ID, "я вернулась")  # writing to the bot unblocks it
    assert await bot.send_chat_action(USER_ID, "typing")

    assert [r.ok for r in tg.sent("sendMessage")] == [False, True]


async def test_edit_and_delete(bot: Bot, tg: FakeTelegram) -> None:
    sent = await bot.send_message(USER_ID, "Хочешь фото?", reply_markup=KEYBOARD)

    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text(
            "Хочешь фото?", chat_id=USER_ID, message_id=sent.message_id, reply_markup=KEYBOARD
        )
    edited = await bot.edit_message_text("Готовлю…", chat_id=USER_ID, message_id=sent.message_id)
    assert isinstance(edited, Message) and edited.edit_date is not None
    assert edited.reply_markup is None
    await bot.edit_message_reply_markup(
        chat_id=USER_ID, message_id=sent.message_id, reply_markup=KEYBOARD
    )
    assert tg.chat_history(USER_ID)[0]["reply_markup"]["inline_keyboard"][0][0]["text"] == "❤️"

    assert await bot.delete_message(USER_ID, sent.message_id) is True
    assert tg.chat_history(USER_ID) == []
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(USER_ID, sent.message_id)


async def test_long_poll_offsets_and_conflict(bot: Bot, tg: FakeTelegram) -> None:
    started = time.monotonic()
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await tg.wait_for("getUpdates")
    update_id = tg.user_message(USER_ID, "/start")
    [update] = await poll
    assert time.monotonic() - started < 2  # returned as soon as the update was pushed
    assert update.update_id == update_id and update.message is not None
    assert update.message.entities is not None and update.message.entities[0].length == 6

    # Unconfirmed updates come again; offset confirms them.
    assert [u.update_id for u in await bot.get_updates(timeout=0)] == [update_id]
    assert await bot.get_updates(offset=update_id + 1, timeout=0) == []
    assert tg.pending_updates == []

    first = asyncio.create_task(bot.get_updates(timeout=5))
    await tg.wait_for("getUpdates", count=4)
    second = asyncio.create_task(bot.get_updates(timeout=0))
    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates"):
        await first
    assert await second == []


async def test_webhook_and_commands_state(bot: Bot, tg: FakeTelegram) -> None:
    commands = [
        BotCommand(command="start", description="Начать"),
        BotCommand(command="photo", description="Фото"),
    ]
    assert await bot.set_my_commands(commands)
    assert [c.model_dump() for c in await bot.get_my_commands()] == [
        c.model_dump() for c in commands
    ]
    assert tg.my_commands() == [
        {"command": "start", "description": "Начать"},
        {"command": "photo", "description": "Фото"},
    ]
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Start", description="x")])

    assert await bot.set_webhook("https://example.com/hook")
    assert (await bot.get_webhook_info()).url == "https://example.com/hook"
    with pytest.raises(TelegramConflictError, match="webhook is active"):
        await bot.get_updates(timeout=0)

    tg.user_message(USER_ID, "привет")
    assert await bot.delete_webhook(drop_pending_updates=True)
    assert tg.webhook_url == "" and tg.pending_updates == []


async def test_wait_for_times_out_with_context(tg: FakeTelegram) -> None:
    with pytest.raises(TimeoutError, match="sendMessage not seen"):
        await tg.wait_for("sendMessage", timeout=0.1)


async def test_polling_dispatcher_answers_start(bot: Bot, tg: FakeTelegram) -> None:
    router = Router(name="start")

    @router.message(CommandStart())
    async def start(message: Message, handled: asyncio.Event) -> None:
        await message.answer(
            f"Привет, {message.from_user.first_name if message.from_user else ''}!"
        )
        handled.set()

    handled = asyncio.Event()
    dp = Dispatcher(handled=handled)
    dp.include_router(router)
    polling = asyncio.create_task(dp.start_polling(bot, polling_timeout=1, handle_signals=False))
    update_id = tg.user_message(USER_ID, "/start")

    [reply] = await tg.wait_for("sendMessage")
    # Let the handler see its response before polling (and the session) is shut down.
    await asyncio.wait_for(handled.wait(), 5)
    await tg.wait_confirmed(update_id)
    await dp.stop_polling()
    await polling

    assert reply.params == {"chat_id": USER_ID, "text": "Привет, Анна!"}
    # aiogram asks only for the update types its routers handle.
    assert tg.allowed_updates == ["message"]


async def test_polling_dispatcher_answers_callback(bot: Bot, tg: FakeTelegram) -> None:
    router = Router(name="like")

    @router.callback_query(F.data == "like")
    async def like(callback: CallbackQuery, handled: asyncio.Event) -> None:
        await callback.answer("Спасибо!")
        if isinstance(callback.message, Message):
            await callback.message.edit_text("Тебе понравилось ❤️")
        handled.set()

    offer = await bot.send_message(USER_ID, "Нравится?", reply_markup=KEYBOARD)
    handled = asyncio.Event()
    dp = Dispatcher(handled=handled)
    dp.include_router(router)
    polling = asyncio.create_task(
        dp.start_polling(bot, polling_timeout=1, handle_signals=False, close_bot_session=False)
    )
    callback_id = tg.callback(USER_ID, "like")

    await asyncio.wait_for(handled.wait(), 5)
    await dp.stop_polling()
    await polling

    assert tg.answered_callbacks[callback_id]["text"] == "Спасибо!"
    [edit] = tg.sent("editMessageText")
    assert edit.params["message_id"] == offer.message_id
    assert tg.chat_history(USER_ID)[-1]["text"] == "Тебе понравилось ❤️"


async def test_reachable_from_another_process(tg: FakeTelegram) -> None:
    # Stdlib only: importing aiogram in the child would cost seconds of start-up.
    script = (
        "import json, os, urllib.request\n"
        "url = os.environ['TELEGRAM_API_URL'] + '/bot123456:TEST/sendMessage'\n"
        "body = json.dumps({'chat_id': 555, 'text': 'из другого процесса'}).encode()\n"
        "request = urllib.request.Request(url, body, {'Content-Type': 'application/json'})\n"
        "assert json.load(urllib.request.urlopen(request))['ok']\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, env={**os.environ, "TELEGRAM_API_URL": tg.base_url}
    )

    [request] = await tg.wait_for("sendMessage")
    assert await asyncio.wait_for(process.wait(), 10) == 0
    assert request.params["text"] == "из другого процесса"
