"""The companion features end to end: the real `python -m producer` and `python -m consumers`
on the fake Telegram with the offline LLM. Memory, regenerate, an edit of the last message,
/undo and /dialogs in one conversation, through polling (so `edited_message` must be among
the updates the bot asks for)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from db.models import Dialog
from producer import texts
from producer.keyboards import RegenerateCallback
from tests.support.bot_harness import (
    balances,
    choose_first_character,
    process_env,
    texts_to,
    wait_text,
)
from tests.support.bot_world import World, eventually, start_bot
from tests.support.consumer_helpers import ledger
from tests.support.fakes.telegram import FakeTelegram, Request

USER = 7171
pytestmark = pytest.mark.timeout(120)


def sent_text(tg: FakeTelegram, needle: str) -> list[Request]:
    return [r for r in tg.sent("sendMessage", USER) if r.ok and needle in str(r.params["text"])]


async def say(tg: FakeTelegram, text: str) -> tuple[int, Request]:
    """Send `text`; return its Telegram message id and the reply to it."""
    update = tg.user_message(USER, text)
    message_id = next(
        u["message"]["message_id"] for u in tg.pending_updates if u["update_id"] == update
    )
    return message_id, await wait_text(tg, USER, f"Ты написал: «{text}»", timeout=30)


async def test_memory_regenerate_edit_undo_and_dialogs_through_real_processes(
    world: World, tg: FakeTelegram
) -> None:
    env = {"HISTORY_MESSAGES": "2", "START_ENERGY": "20"}
    world.procs.consumer(process_env(world.settings, **env))
    await start_bot(world, tg, **env)
    assert "edited_message" in (tg.allowed_updates or [])
    await choose_first_character(tg, USER)

    await say(tg, "Меня зовут Вася")
    await say(tg, "Я живу в Казани")
    await say(tg, "Люблю горы")  # the first exchange leaves the window: it is summarized

    async def remembered() -> bool:
        async with world.db() as session:
            dialog = await session.scalar(select(Dialog).where(Dialog.user_id == USER))
        return dialog is not None and dialog.summary == "- Меня зовут Вася"

    await eventually(remembered, timeout=30)
    tg.user_message(USER, "/memory")
    await wait_text(tg, USER, "- Меня зовут Вася", timeout=20)

    # 🔄 under the latest reply: its message is edited in place, its buttons name the new one.
    message_id, last = await say(tg, "Что посоветуешь?")
    data = last.params["reply_markup"]["inline_keyboard"][1][0]["callback_data"]
    tg.callback(USER, data, message_id=last.result["message_id"])
    regenerated = await tg.wait_for(
        "editMessageText",
        lambda r: r.ok and "reply_markup" in r.params and "regen:" in str(r.params),
        timeout=30,
    )
    new_button = regenerated[0].params["reply_markup"]["inline_keyboard"][1][0]
    assert RegenerateCallback.unpack(new_button["callback_data"]).task_id != (
        RegenerateCallback.unpack(data).task_id
    )

    # An edit of the last message is answered again, for the edited text.
    tg.edit_message(USER, message_id, "Что посоветуешь почитать?")
    await wait_text(tg, USER, "Ты написал: «Что посоветуешь почитать?»", timeout=30)

    tg.user_message(USER, "/undo")
    await wait_text(tg, USER, texts.UNDO_DONE, timeout=20)
    tg.user_message(USER, "/dialogs")
    listed = await wait_text(tg, USER, texts.DIALOGS_TITLE, timeout=20)
    assert str(listed.params["text"]).endswith("«Меня зовут Вася» · 📷 0 — сейчас")
    await asyncio.sleep(0.5)

    assert len(sent_text(tg, "Ты написал: «Что посоветуешь почитать?»")) == 1
    assert texts_to(tg, USER).count(texts.UNDO_DONE) == 1
    # Four messages, one regeneration; the edit replaced its turn's charge.
    kinds = [kind for kind, _, _ in await ledger(world.db, USER)]
    assert kinds.count("charge") - kinds.count("refund") == 5
    assert await balances(world.db, USER) == (15, 2)
