"""A dialog's memory in the database: the window, the next fold, one summary task in flight,
a summary stored once and only forward, clearing that a late result cannot undo."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from db import memory
from db.memory import DialogMemory
from db.models import ChatMessage, Dialog, utcnow
from db.repositories import save_user_message, start_dialog
from tests.support.fixtures_db import Sessions, make_character, make_user


async def new_dialog(db: Sessions) -> tuple[int, int]:
    user_id = await make_user(db)
    async with db.begin() as session:
        dialog = await start_dialog(session, user_id, await make_character(db))
    return user_id, dialog.id


async def add_messages(db: Sessions, dialog_id: int, count: int, start: int = 1) -> list[int]:
    """Store m<start>… as Telegram messages <start>…; their row ids (global, not per dialog)."""
    async with db.begin() as session:
        for number in range(start, start + count):
            await save_user_message(session, dialog_id, f"m{number}", number)
        rows = await session.scalars(
            select(ChatMessage.id)
            .where(ChatMessage.dialog_id == dialog_id, ChatMessage.telegram_message_id >= start)
            .order_by(ChatMessage.id)
        )
        return list(rows)


async def read(
    db: Sessions, dialog_id: int, window: int, exclude: int | None = None, fold_max: int = 40
) -> DialogMemory:
    async with db.begin() as session:
        dialog = await session.get(Dialog, dialog_id, populate_existing=True)
        assert dialog is not None
        return await memory.dialog_memory(
            session, dialog, window, exclude_message=exclude, fold_max=fold_max
        )


async def ask(db: Sessions, dialog_id: int, task_id: str) -> bool:
    async with db.begin() as session:
        return await memory.ask_summary(session, dialog_id, task_id)


async def store(db: Sessions, dialog_id: int, task_id: str, text: str, upto: int) -> bool:
    async with db.begin() as session:
        return await memory.store_summary(session, dialog_id, task_id, text, upto)


async def dialog_row(db: Sessions, dialog_id: int) -> Dialog:
    async with db() as session:
        found = await session.get(Dialog, dialog_id)
        assert found is not None
        return found


def contents(turns: list[memory.StoredTurn]) -> list[str]:
    return [turn.content for turn in turns]


async def test_turns_that_leave_the_window_are_the_next_fold(db: Sessions) -> None:
    _, dialog_id = await new_dialog(db)
    await add_messages(db, dialog_id, 4)
    assert (await read(db, dialog_id, window=4)).fold == []

    await add_messages(db, dialog_id, 2, start=5)
    found = await read(db, dialog_id, window=4)
    assert contents(found.fold) == ["m1", "m2"]
    # Waiting to be folded, the few turns that left are still shown with the window...
    assert contents(found.turns) == [f"m{n}" for n in range(1, 7)]
    assert (found.summary, found.upto) == (None, 0)

    # ...up to half a window of them: then summaries are behind, and the window is all.
    await add_messages(db, dialog_id, 1, start=7)
    found = await read(db, dialog_id, window=4)
    assert contents(found.fold) == ["m1", "m2", "m3"]
    assert contents(found.turns) == ["m4", "m5", "m6", "m7"]


async def test_the_message_being_answered_is_not_in_its_own_window(db: Sessions) -> None:
    _, dialog_id = await new_dialog(db)
    await add_messages(db, dialog_id, 5)
    found = await read(db, dialog_id, window=4, exclude=5)
    assert contents(found.turns) == ["m1", "m2", "m3", "m4"]
    assert found.fold == []


async def test_a_dialog_far_behind_folds_in_bounded_steps_and_shows_only_its_window(
    db: Sessions,
) -> None:
    _, dialog_id = await new_dialog(db)
    await add_messages(db, dialog_id, 30)
    found = await read(db, dialog_id, window=4, fold_max=10)
    assert contents(found.fold) == [f"m{n}" for n in range(1, 11)]
    assert contents(found.turns) == ["m27", "m28", "m29", "m30"]


async def test_one_summary_task_in_flight_per_dialog(db: Sessions) -> None:
    _, dialog_id = await new_dialog(db)
    assert await ask(db, dialog_id, "first")
    assert await ask(db, dialog_id, "first")  # a retried step asks again for the same task
    assert not await ask(db, dialog_id, "second")

    async with db.begin() as session:
        await memory.drop_summary_task(session, dialog_id, "other")  # not the one in flight
    assert not await ask(db, dialog_id, "second")
    async with db.begin() as session:
        await memory.drop_summary_task(session, dialog_id, "first")
    assert await ask(db, dialog_id, "second")


async def test_a_summary_task_past_its_lease_no_longer_blocks(db: Sessions) -> None:
    _, dialog_id = await new_dialog(db)
    assert await ask(db, dialog_id, "lost")
    async with db.begin() as session:
        long_ago = utcnow() - memory.SUMMARY_LEASE - timedelta(seconds=1)
        await session.execute(
            update(Dialog).where(Dialog.id == dialog_id).values(summary_asked_at=long_ago)
        )
    assert await ask(db, dialog_id, "next")
    assert not await store(db, dialog_id, "lost", "old memory", 5)  # the lost one is disowned


async def test_a_summary_is_stored_once_by_its_task_and_only_forward(db: Sessions) -> None:
    _, dialog_id = await new_dialog(db)
    ids = await add_messages(db, dialog_id, 8)
    assert await ask(db, dialog_id, "t1")
    assert not await store(db, dialog_id, "someone-else", "forged", ids[4])
    assert await store(db, dialog_id, "t1", "- m1..m5", ids[4])
    assert not await store(db, dialog_id, "t1", "- m1..m5", ids[4])  # a repeat: no change

    row = await dialog_row(db, dialog_id)
    assert (row.summary, row.summary_upto, row.summary_task_id) == ("- m1..m5", ids[4], None)
    found = await read(db, dialog_id, window=2)
    assert (found.summary, found.upto, contents(found.fold)) == ("- m1..m5", ids[4], ["m6"])

    assert await ask(db, dialog_id, "t0")
    assert not await store(db, dialog_id, "t0", "behind", ids[2])  # never backwards
    assert (await dialog_row(db, dialog_id)).summary == "- m1..m5"


async def test_clearing_forgets_and_a_late_result_cannot_bring_it_back(db: Sessions) -> None:
    user_id, dialog_id = await new_dialog(db)
    stranger, _ = await new_dialog(db)
    ids = await add_messages(db, dialog_id, 6)
    assert await ask(db, dialog_id, "t1")
    assert await store(db, dialog_id, "t1", "- remembered", ids[2])
    assert await ask(db, dialog_id, "t2")

    async with db.begin() as session:
        assert not await memory.clear_memory(session, stranger, dialog_id)
    assert (await dialog_row(db, dialog_id)).summary == "- remembered"
    async with db.begin() as session:
        assert await memory.clear_memory(session, user_id, dialog_id)

    assert not await store(db, dialog_id, "t2", "- remembered, and more", ids[4])
    row = await dialog_row(db, dialog_id)
    assert (row.summary, row.summary_upto, row.summary_task_id) == (None, ids[2], None)
    # The folded turns stay folded: they do not come back into the next summary.
    assert contents((await read(db, dialog_id, window=2)).fold) == ["m4"]
