"""Deliveries: the rows by which the bot applies a task's result once and sends it at least
once (see docs/guarantees.md). Plain async functions; the caller owns the transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Delivery, utcnow
from db.repositories import insert_new


async def expect(session: AsyncSession, task_id: str, chat_id: int, kind: str) -> None:
    """Remember that `task_id`'s result must reach `chat_id`; repeating it is a no-op."""
    await insert_new(session, Delivery, ["task_id"], task_id=task_id, chat_id=chat_id, kind=kind)


async def mark_applied(session: AsyncSession, task_id: str, apply_id: str) -> bool:
    """Mark the delivery applied; True only for the one caller that did, False if absent.

    A caller marking again with the same `apply_id` gets True again: it may be retrying a
    transaction whose commit went through but whose reply was lost.
    """
    applied = await session.scalar(
        update(Delivery)
        .where(
            Delivery.task_id == task_id,
            or_(Delivery.applied_at.is_(None), Delivery.apply_id == apply_id),
        )
        .values(applied_at=utcnow(), apply_id=apply_id)
        .returning(Delivery.task_id)
    )
    return applied is not None


async def mark_sent(session: AsyncSession, task_id: str) -> None:
    """Record that the applied delivery's message went out."""
    await session.execute(
        update(Delivery).where(Delivery.task_id == task_id).values(sent_at=utcnow())
    )


async def applied_unsent(session: AsyncSession, applied_before: datetime) -> list[Delivery]:
    """Deliveries applied before `applied_before` and never marked sent: their sender died."""
    return list(
        await session.scalars(
            select(Delivery)
            .where(
                Delivery.applied_at.is_not(None),
                Delivery.applied_at < applied_before,
                Delivery.sent_at.is_(None),
            )
            .order_by(Delivery.applied_at, Delivery.task_id)
        )
    )


async def waiting(session: AsyncSession) -> list[Delivery]:
    """Deliveries not yet applied, oldest first."""
    return list(
        await session.scalars(
            select(Delivery)
            .where(Delivery.applied_at.is_(None))
            .order_by(Delivery.created_at, Delivery.task_id)
        )
    )
