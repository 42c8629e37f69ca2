"""Dialogs, messages and photo counters: one active dialog per user, redelivery-safe writes."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from db.models import ChatMessage, Dialog, PhotoEvent
from db.repositories import (
    active_dialog,
    bump_photo_counter,
    delete_user_data,
    history,
    reset_dialog,
    save_assistant_reply,
    save_user_message,
    start_dialog,
)
from tests.support.fixtures_db import Sessions, make_character, make_user, new_task_id


async def _start(db: Sessions, user_id: int, character_id: int) -> Dialog:
    async with db.begin() as session:
        return await start_dialog(session, user_id, character_id)


async def _active_ids(db: Sessions, user_id: int) -> list[int]:
    async with db.begin() as session:
        rows = await session.scalars(
            select(Dialog.id).where(Dialog.user_id == user_id, Dialog.is_active)
        )
        return list(rows)


async def _new_dialog(db: Sessions) -> int:
    user_id = await make_user(db)
    dialog = await _start(db, user_id, await make_character(db))
    return dialog.id


async def _history(db: Sessions, dialog_id: int, limit: int = 50) -> list[dict[str, str]]:
    async with db.begin() as session:
        return await history(session, dialog_id, limit)


async def _reply(db: Sessions, dialog_id: int, task_id: str, content: str = "Привет!") -> bool:
    async with db.begin() as session:
        return await save_assistant_reply(session, dialog_id, task_id, content)


async def _bump(db: Sessions, dialog_id: int, task_id: str) -> bool:
    async with db.begin() as session:
        return await bump_photo_counter(session, dialog_id, task_id)


async def _photo_count(db: Sessions, dialog_id: int) -> int | None:
    async with db.begin() as session:
        return await session.scalar(select(Dialog.photo_count).where(Dialog.id == dialog_id))


async def test_start_switch_and_resume_keep_one_active_dialog(db: Sessions) -> None:
    user_id = await make_user(db)
    alice, vera = await make_character(db), await make_character(db)

    first = await _start(db, user_id, alice)
    second = await _start(db, user_id, vera)
    resumed = await _start(db, user_id, alice)
    again = await _start(db, user_id, alice)

    assert first.id != second.id
    assert resumed.id == first.id == again.id
    assert resumed.is_active
    assert await _active_ids(db, user_id) == [first.id]
    assert first.created_at.tzinfo is not None


async def test_concurrent_starts_leave_exactly_one_active(db: Sessions) -> None:
    user_id = await make_user(db)
    characters = [await make_character(db) for _ in range(4)]

    await asyncio.gather(*(_start(db, user_id, character) for character in characters))

    assert len(await _active_ids(db, user_id)) == 1


async def test_reset_starts_a_fresh_dialog_with_the_same_character(db: Sessions) -> None:
    user_id = await make_user(db)
    character_id = await make_character(db)
    old = await _start(db, user_id, character_id)

    async with db.begin() as session:
        new = await reset_dialog(session, user_id)

    assert new is not None
    assert new.id != old.id
    assert new.character_id == character_id
    assert await _active_ids(db, user_id) == [new.id]
    async with db.begin() as session:
        current = await active_dialog(session, user_id)
    assert current is not None
    assert current.id == new.id


async def test_reset_without_an_active_dialog_returns_none(db: Sessions) -> None:
    user_id = await make_user(db)
    async with db.begin() as session:
        assert await reset_dialog(session, user_id) is None
        assert await active_dialog(session, user_id) is None


async def test_user_message_is_stored_once_per_telegram_message(db: Sessions) -> None:
    dialog_id = await _new_dialog(db)
    other_dialog_id = await _new_dialog(db)

    async with db.begin() as session:
        assert await save_user_message(session, dialog_id, "Привет", 42)
        assert not await save_user_message(session, dialog_id, "Привет", 42)
        # Telegram numbers messages per chat, so another chat may reuse the id.
        assert await save_user_message(session, other_dialog_id, "Привет", 42)

    assert await _history(db, dialog_id) == [{"role": "user", "content": "Привет"}]


async def test_history_is_the_last_messages_oldest_first(db: Sessions) -> None:
    dialog_id = await _new_dialog(db)
    async with db.begin() as session:
        for number in range(5):
            await save_user_message(session, dialog_id, f"вопрос {number}", 100 + number)
            await save_assistant_reply(session, dialog_id, new_task_id(), f"ответ {number}")

    last = await _history(db, dialog_id, 3)

    assert last == [
        {"role": "assistant", "content": "ответ 3"},
        {"role": "user", "content": "вопрос 4"},
        {"role": "assistant", "content": "ответ 4"},
    ]
    assert len(await _history(db, dialog_id)) == 10
    assert await _history(db, dialog_id, 0) == []


async def test_assistant_reply_is_stored_once_per_task(db: Sessions) -> None:
    dialog_id = await _new_dialog(db)
    task_id = new_task_id()

    assert await _reply(db, dialog_id, task_id)
    assert not await _reply(db, dialog_id, task_id)

    assert await _history(db, dialog_id) == [{"role": "assistant", "content": "Привет!"}]


async def test_concurrent_redeliveries_store_the_reply_once(db: Sessions) -> None:
    dialog_id = await _new_dialog(db)
    task_id = new_task_id()

    stored = await asyncio.gather(*(_reply(db, dialog_id, task_id) for _ in range(4)))

    assert sorted(stored) == [False, False, False, True]
    async with db.begin() as session:
        count = await session.scalar(select(func.count()).where(ChatMessage.task_id == task_id))
    assert count == 1


async def test_reply_for_a_deleted_dialog_is_dropped(db: Sessions) -> None:
    user_id = await make_user(db)
    dialog = await _start(db, user_id, await make_character(db))
    async with db.begin() as session:
        await delete_user_data(session, user_id)

    assert not await _reply(db, dialog.id, new_task_id())
    assert not await _bump(db, dialog.id, new_task_id())


async def test_photo_counter_counts_each_task_once(db: Sessions) -> None:
    dialog_id = await _new_dialog(db)
    first, second = new_task_id(), new_task_id()

    assert await _bump(db, dialog_id, first)
    assert not await _bump(db, dialog_id, first)
    concurrent = await asyncio.gather(*(_bump(db, dialog_id, second) for _ in range(4)))

    assert sorted(concurrent) == [False, False, False, True]
    assert await _photo_count(db, dialog_id) == 2


async def test_delete_user_data_removes_dialogs_and_messages(db: Sessions) -> None:
    user_id = await make_user(db, energy=7)
    character_id = await make_character(db)
    dialog = await _start(db, user_id, character_id)
    async with db.begin() as session:
        await save_user_message(session, dialog.id, "секрет", 1)
        await bump_photo_counter(session, dialog.id, new_task_id())
        await reset_dialog(session, user_id)

    async with db.begin() as session:
        assert await delete_user_data(session, user_id) == 2

    async with db.begin() as session:
        assert await active_dialog(session, user_id) is None
        messages = await session.scalar(
            select(func.count()).where(ChatMessage.dialog_id == dialog.id)
        )
        photos = await session.scalar(
            select(func.count()).where(PhotoEvent.dialog_id == dialog.id)
        )
    assert (messages, photos) == (0, 0)
    # The user row and balance stay, so /start does not grant the start balance again.
    assert (await _start(db, user_id, character_id)).is_active
