"""A dialog's long-term memory: what a reply sees, which turns to fold next, and storing a
summary once.

A dialog's summary covers its messages up to id `summary_upto`. A reply sees the summary and
the last `window` messages; the messages between the two (they left the window, the summary
does not hold them yet) are the next fold. At most one summary task per dialog is in flight
(`summary_task_id`), and only that task's result is stored: clearing the memory, or a newer
task taking over after the lease, makes a late result a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Row, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import ChatMessage, Dialog, utcnow

# A summary task asked for this long ago no longer blocks the next one: its outcome was lost
# without anyone clearing it (the delivery watcher clears every outcome it applies).
SUMMARY_LEASE = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class StoredTurn:
    id: int
    role: str
    content: str

    def as_turn(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class DialogMemory:
    """What a reply of the dialog sees, and what to fold into the summary next."""

    summary: str | None
    # The summary covers the dialog's messages up to this id (0: none yet).
    upto: int
    # The turns the reply sees, oldest first: the window and, while a fold of them is
    # pending, the few turns that left it.
    turns: list[StoredTurn]
    # The oldest turns that left the window and are not in the summary yet, oldest first.
    fold: list[StoredTurn]


def _turns_of(rows: Sequence[Row[int, str, str]]) -> list[StoredTurn]:
    return [StoredTurn(row.id, row.role, row.content) for row in rows]


async def dialog_memory(
    session: AsyncSession,
    dialog: Dialog,
    window: int,
    *,
    exclude_message: int | None = None,
    before: int | None = None,
    fold_max: int = 40,
) -> DialogMemory:
    """The dialog's memory for a reply: its summary, the last `window` messages (without the
    Telegram message `exclude_message`, the one being answered, and from before the message
    id `before` if given) and up to `fold_max` turns to fold. Turns waiting to be folded are
    shown too while they are few (half a window)."""
    upto = dialog.summary_upto or 0
    columns = (ChatMessage.id, ChatMessage.role, ChatMessage.content)
    mine = [ChatMessage.dialog_id == dialog.id]
    if exclude_message is not None:
        mine.append(ChatMessage.telegram_message_id.is_distinct_from(exclude_message))
    if before is not None:
        mine.append(ChatMessage.id < before)
    recent: list[StoredTurn] = []
    older = [*mine, ChatMessage.id > upto]
    if window > 0:
        latest = select(*columns).where(*mine).order_by(ChatMessage.id.desc()).limit(window)
        recent = _turns_of((await session.execute(latest)).all())[::-1]
        if len(recent) < window:  # the whole dialog fits: nothing left the window
            return DialogMemory(dialog.summary, upto, recent, [])
        older.append(ChatMessage.id < recent[0].id)
    between = select(*columns).where(*older).order_by(ChatMessage.id).limit(fold_max)
    fold = _turns_of((await session.execute(between)).all())
    # A fold in flight leaves a few turns between summary and window: show them meanwhile,
    # unless summaries fell far behind (then the window alone keeps the request bounded).
    gap = fold if len(fold) <= max(2, window // 2) else []
    return DialogMemory(dialog.summary, upto, gap + recent, fold)


async def ask_summary(session: AsyncSession, dialog_id: int, task_id: str) -> bool:
    """Make `task_id` the dialog's summary task in flight; False while another one is (its
    lease not yet over). Asking again for the same task is True: a retried step repeats."""
    now = utcnow()
    free = or_(
        Dialog.summary_task_id.is_(None),
        Dialog.summary_task_id == task_id,
        Dialog.summary_asked_at < now - SUMMARY_LEASE,
    )
    asked = await session.scalar(
        update(Dialog)
        .where(Dialog.id == dialog_id, free)
        .values(summary_task_id=task_id, summary_asked_at=now)
        .returning(Dialog.id)
    )
    return asked is not None


async def store_summary(
    session: AsyncSession, dialog_id: int, task_id: str, summary: str, upto: int
) -> bool:
    """Store the summary of the dialog's messages up to id `upto`, made by `task_id`; True
    only for the call that stored it. Only the task in flight stores, and only forward, so a
    repeat (a redelivered outcome, a second bot process) or a late result changes nothing."""
    stored = await session.scalar(
        update(Dialog)
        .where(
            Dialog.id == dialog_id,
            Dialog.summary_task_id == task_id,
            func.coalesce(Dialog.summary_upto, 0) < upto,
        )
        .values(summary=summary, summary_upto=upto, summary_task_id=None, summary_asked_at=None)
        .returning(Dialog.id)
    )
    return stored is not None


async def drop_summary_task(session: AsyncSession, dialog_id: int, task_id: str) -> None:
    """The task failed or was lost: the dialog's next message past the window asks again."""
    await session.execute(
        update(Dialog)
        .where(Dialog.id == dialog_id, Dialog.summary_task_id == task_id)
        .values(summary_task_id=None, summary_asked_at=None)
    )


async def clear_memory(session: AsyncSession, user_id: int, dialog_id: int) -> bool:
    """Forget the dialog's summary if it is the user's; False if it is not theirs (or gone).

    The folded turns stay folded (they do not come back into a summary), and a summary task
    in flight is disowned, so its result cannot bring the old memory back.
    """
    cleared = await session.scalar(
        update(Dialog)
        .where(and_(Dialog.id == dialog_id, Dialog.user_id == user_id))
        .values(summary=None, summary_task_id=None, summary_asked_at=None)
        .returning(Dialog.id)
    )
    return cleared is not None
