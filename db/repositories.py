"""Use-case queries: plain async functions; the caller owns the transaction.

Callers wrap each use case in `async with sessionmaker.begin() as session:`. Idempotency keys
are enforced by unique constraints and INSERT ... ON CONFLICT DO NOTHING (PostgreSQL and SQLite
both), so a redelivered task or a repeated Telegram update reports "already done".
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import (
    Base,
    Character,
    ChatMessage,
    Currency,
    Dialog,
    LedgerEntry,
    LedgerKind,
    MessageRole,
    PhotoEvent,
    User,
    utcnow,
)
from shared.errors import InsufficientBalanceError


class RefundOutcome(StrEnum):
    REFUNDED = "refunded"
    ALREADY_REFUNDED = "already_refunded"
    NOT_CHARGED = "not_charged"


_BALANCES = {Currency.ENERGY: User.energy, Currency.DIAMONDS: User.diamonds}


def _insert(session: AsyncSession, model: type[Base]) -> PgInsert | SqliteInsert:
    if session.get_bind().dialect.name == "postgresql":
        return pg_insert(model)
    return sqlite_insert(model)


async def insert_new(
    session: AsyncSession, model: type[Base], key: Sequence[str], **values: Any
) -> bool:
    """INSERT ... ON CONFLICT (key) DO NOTHING; True only for the call that stored the row."""
    stmt = (
        _insert(session, model)
        .values(**values)
        .on_conflict_do_nothing(index_elements=list(key))
        .returning(*(getattr(model, column) for column in key))
    )
    return (await session.execute(stmt)).first() is not None


# Users and characters.


async def get_or_create_user(
    session: AsyncSession,
    user_id: int,
    name: str,
    language: str | None,
    *,
    start_energy: int,
    start_diamonds: int,
) -> User:
    """Return the user, creating it with the start balances on first sight (race-free)."""
    await insert_new(
        session,
        User,
        ["id"],
        id=user_id,
        name=name,
        language=language,
        energy=start_energy,
        diamonds=start_diamonds,
    )
    user = await session.get(User, user_id, populate_existing=True)
    if user is None:  # only if deleted by someone else in between
        raise LookupError(f"user {user_id} vanished")
    return user


async def get_user(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id, populate_existing=True)


async def list_characters(session: AsyncSession) -> list[Character]:
    return list(await session.scalars(select(Character).order_by(Character.id)))


async def get_character(session: AsyncSession, character_id: int) -> Character | None:
    return await session.get(Character, character_id)


async def upsert_character(
    session: AsyncSession,
    *,
    name: str,
    description: str,
    system_prompt: str,
    appearance: str,
    avatar_url: str | None = None,
) -> int:
    """Create the character or update its texts by unique name; return its id (stable)."""
    values = {
        "description": description,
        "system_prompt": system_prompt,
        "appearance": appearance,
        "avatar_url": avatar_url,
    }
    stmt = _insert(session, Character).values(name=name, **values)
    stmt = stmt.on_conflict_do_update(index_elements=["name"], set_=values)
    character_id: int = (await session.execute(stmt.returning(Character.id))).scalar_one()
    return character_id


# Dialogs.


async def _lock_user(session: AsyncSession, user_id: int) -> None:
    # Serializes dialog switches per user on PostgreSQL; SQLite's BEGIN IMMEDIATE already does.
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())


async def _new_dialog(session: AsyncSession, user_id: int, character_id: int) -> Dialog:
    dialog = Dialog(user_id=user_id, character_id=character_id, is_active=True, photo_count=0)
    session.add(dialog)
    await session.flush()
    return dialog


async def start_dialog(session: AsyncSession, user_id: int, character_id: int) -> Dialog:
    """Make the user's latest dialog with this character the active one, creating it if none.

    All other dialogs of the user are deactivated in the same transaction, under a lock on the
    user row, so concurrent switches cannot break the one-active-dialog rule. The user and the
    character must exist (foreign keys).
    """
    await _lock_user(session, user_id)
    dialog = await session.scalar(
        select(Dialog)
        .where(Dialog.user_id == user_id, Dialog.character_id == character_id)
        .order_by(Dialog.id.desc())
        .limit(1)
    )
    others = update(Dialog).where(Dialog.user_id == user_id, Dialog.is_active)
    if dialog is not None:
        others = others.where(Dialog.id != dialog.id)
    await session.execute(others.values(is_active=False, updated_at=utcnow()))
    if dialog is None:
        return await _new_dialog(session, user_id, character_id)
    dialog.is_active = True
    dialog.updated_at = utcnow()
    await session.flush()
    return dialog


async def reset_dialog(session: AsyncSession, user_id: int) -> Dialog | None:
    """Replace the active dialog by a fresh one with the same character; None if none is active.

    The old dialog and its messages are kept (inactive) until the user deletes their data.
    """
    await _lock_user(session, user_id)
    current = await active_dialog(session, user_id)
    if current is None:
        return None
    current.is_active = False
    # Flush the deactivation first: the one-active index would refuse the new row otherwise.
    await session.flush()
    return await _new_dialog(session, user_id, current.character_id)


async def active_dialog(session: AsyncSession, user_id: int) -> Dialog | None:
    return await session.scalar(select(Dialog).where(Dialog.user_id == user_id, Dialog.is_active))


async def _lock_dialog(session: AsyncSession, dialog_id: int) -> bool:
    # FOR KEY SHARE blocks only a concurrent delete, so rows we add cannot lose their parent.
    found = await session.scalar(
        select(Dialog.id).where(Dialog.id == dialog_id).with_for_update(read=True, key_share=True)
    )
    return found is not None


# Messages and photos.


async def history(session: AsyncSession, dialog_id: int, limit: int) -> list[dict[str, str]]:
    """The last `limit` messages of the dialog, oldest first, as LLM chat turns."""
    if limit <= 0:
        return []
    rows = (
        await session.execute(
            select(ChatMessage.role, ChatMessage.content)
            .where(ChatMessage.dialog_id == dialog_id)
            .order_by(ChatMessage.id.desc())
            .limit(limit)
        )
    ).all()
    return [{"role": row.role, "content": row.content} for row in reversed(rows)]


async def save_user_message(
    session: AsyncSession, dialog_id: int, content: str, telegram_message_id: int | None
) -> bool:
    """Store a user message; False if this Telegram message is already stored in the dialog."""
    return await insert_new(
        session,
        ChatMessage,
        ["dialog_id", "telegram_message_id"],
        dialog_id=dialog_id,
        role=MessageRole.USER,
        content=content,
        telegram_message_id=telegram_message_id,
    )


async def save_assistant_reply(
    session: AsyncSession, dialog_id: int, task_id: str, content: str
) -> bool:
    """Store a reply once per task id; False if already stored or the dialog was deleted."""
    if not await _lock_dialog(session, dialog_id):
        return False
    return await insert_new(
        session,
        ChatMessage,
        ["task_id"],
        dialog_id=dialog_id,
        role=MessageRole.ASSISTANT,
        content=content,
        task_id=task_id,
    )


async def bump_photo_counter(session: AsyncSession, dialog_id: int, task_id: str) -> bool:
    """Count one photo per task id: only the first call increments; False for repeats."""
    if not await _lock_dialog(session, dialog_id):
        return False
    if not await insert_new(
        session, PhotoEvent, ["task_id"], task_id=task_id, dialog_id=dialog_id
    ):
        return False
    await session.execute(
        update(Dialog)
        .where(Dialog.id == dialog_id)
        .values(photo_count=Dialog.photo_count + 1, updated_at=utcnow())
    )
    return True


async def delete_user_data(session: AsyncSession, user_id: int) -> int:
    """Delete the user's dialogs with their messages and photo events; return how many dialogs.

    The user row and the ledger stay: the balance is owed state, and deleting it would let a
    user collect the start balance again.
    """
    deleted = await session.scalars(
        delete(Dialog).where(Dialog.user_id == user_id).returning(Dialog.id)
    )
    return len(deleted.all())


# Balances and the ledger.


async def balance(session: AsyncSession, user_id: int) -> tuple[int, int]:
    """(energy, diamonds) of the user; LookupError if unknown."""
    row = (
        await session.execute(select(User.energy, User.diamonds).where(User.id == user_id))
    ).first()
    if row is None:
        raise LookupError(f"unknown user {user_id}")
    return row.energy, row.diamonds


async def _balance_of(session: AsyncSession, user_id: int, currency: Currency) -> int:
    energy, diamonds = await balance(session, user_id)
    return energy if currency is Currency.ENERGY else diamonds


async def charge(
    session: AsyncSession,
    user_id: int,
    currency: Currency,
    amount: int,
    *,
    charge_id: str,
    reason: str,
) -> int:
    """Debit `amount` once per `charge_id` and return the new balance.

    The ledger row and the balance change together inside a savepoint, so an
    InsufficientBalanceError leaves nothing behind even if the caller's transaction goes on.
    A repeated `charge_id` changes nothing and returns the current balance. The debit is a
    conditional UPDATE, so concurrent charges can never take the balance below zero.
    The user must exist (an unknown one fails the ledger's foreign key).
    """
    if amount < 0:
        raise ValueError("a charge amount cannot be negative")
    column = _BALANCES[currency]
    async with session.begin_nested():
        claimed = await insert_new(
            session,
            LedgerEntry,
            ["task_id", "kind"],
            user_id=user_id,
            currency=currency,
            amount=-amount,
            kind=LedgerKind.CHARGE,
            reason=reason,
            task_id=charge_id,
        )
        if not claimed:
            return await _balance_of(session, user_id, currency)
        new_balance: int | None = await session.scalar(
            update(User)
            .where(User.id == user_id, column >= amount)
            .values({column: column - amount})
            .returning(column)
        )
        if new_balance is None:
            current = await _balance_of(session, user_id, currency)
            raise InsufficientBalanceError(currency, current, amount)
        return new_balance


async def charged_user(session: AsyncSession, charge_id: str) -> int | None:
    """The user `charge_id` was taken from, or None if nothing was charged under it."""
    user_id: int | None = await session.scalar(
        select(LedgerEntry.user_id).where(
            LedgerEntry.task_id == charge_id, LedgerEntry.kind == LedgerKind.CHARGE
        )
    )
    return user_id


async def refund(session: AsyncSession, charge_id: str, reason: str) -> RefundOutcome:
    """Give back what `charge_id` took, at most once; a never-charged id changes nothing."""
    charged = await session.scalar(
        select(LedgerEntry).where(
            LedgerEntry.task_id == charge_id, LedgerEntry.kind == LedgerKind.CHARGE
        )
    )
    if charged is None:
        return RefundOutcome.NOT_CHARGED
    stored = await insert_new(
        session,
        LedgerEntry,
        ["task_id", "kind"],
        user_id=charged.user_id,
        currency=charged.currency,
        amount=-charged.amount,
        kind=LedgerKind.REFUND,
        reason=reason,
        task_id=charge_id,
    )
    if not stored:
        return RefundOutcome.ALREADY_REFUNDED
    column = _BALANCES[Currency(charged.currency)]
    await session.execute(
        update(User).where(User.id == charged.user_id).values({column: column - charged.amount})
    )
    return RefundOutcome.REFUNDED
