"""A user's dialogs as `/dialogs` lists them, and resuming one of them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Character, ChatMessage, Dialog, MessageRole, User, utcnow
from db.repositories import active_dialog, get_character

# How much of a dialog's first message the list shows.
FIRST_WORDS_CHARS = 40


@dataclass(frozen=True, slots=True)
class DialogLine:
    dialog_id: int
    character: str
    active: bool
    photo_count: int
    # When something was last said (the dialog's start if nothing was).
    last_at: datetime
    # The start of the user's first message; None if they have not written yet.
    first_words: str | None


async def list_dialogs(session: AsyncSession, user_id: int, limit: int) -> list[DialogLine]:
    """The user's latest dialogs, the most recently used first."""
    first = (
        select(ChatMessage.content)
        .where(ChatMessage.dialog_id == Dialog.id, ChatMessage.role == MessageRole.USER)
        .order_by(ChatMessage.id)
        .limit(1)
        .scalar_subquery()
    )
    last = (
        select(func.max(ChatMessage.created_at))
        .where(ChatMessage.dialog_id == Dialog.id)
        .scalar_subquery()
    )
    used = func.coalesce(last, Dialog.created_at)
    rows = await session.execute(
        select(Dialog, Character.name, first, used)
        .join(Character, Character.id == Dialog.character_id)
        .where(Dialog.user_id == user_id)
        .order_by(used.desc(), Dialog.id.desc())
        .limit(limit)
    )
    return [
        DialogLine(
            dialog_id=dialog.id,
            character=name,
            active=dialog.is_active,
            photo_count=dialog.photo_count,
            last_at=at,
            first_words=_first_words(words),
        )
        for dialog, name, words, at in rows
    ]


def _first_words(text: str | None) -> str | None:
    if text is None:
        return None
    words = " ".join(text.split())
    return words if len(words) <= FIRST_WORDS_CHARS else words[:FIRST_WORDS_CHARS].rstrip() + "…"


async def resume_dialog(session: AsyncSession, user_id: int, dialog_id: int) -> Dialog | None:
    """Make the user's dialog `dialog_id` the active one; None if it is not theirs."""
    # The user row's lock serializes dialog switches (as repositories.start_dialog does).
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())
    dialog = await session.get(Dialog, dialog_id, populate_existing=True)
    if dialog is None or dialog.user_id != user_id:
        return None
    await session.execute(
        update(Dialog)
        .where(Dialog.user_id == user_id, Dialog.is_active, Dialog.id != dialog_id)
        .values(is_active=False, updated_at=utcnow())
    )
    dialog.is_active = True
    await session.flush()
    return dialog


async def dialog_and_character(
    session: AsyncSession, user_id: int, dialog_id: int | None = None
) -> tuple[Dialog, Character] | None:
    """The user's dialog `dialog_id` (default: the active one) and its character; None if
    the user has no such dialog (none chosen yet, deleted, or someone else's)."""
    if dialog_id is None:
        dialog = await active_dialog(session, user_id)
    else:
        dialog = await session.get(Dialog, dialog_id)
    if dialog is None or dialog.user_id != user_id:
        return None
    character = await get_character(session, dialog.character_id)
    return None if character is None else (dialog, character)
