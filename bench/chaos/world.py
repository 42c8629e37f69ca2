"""The bot's side of a chaos run: who pays, the outcomes applied once, and the audit.

It charges every task as the bot does (a ledger line keyed by the task's charge id), applies
every announced or stored outcome through the same idempotent data-layer calls the bot uses
(reply saved, photo counted, failure refunded), and at the end counts side effects per task id.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db import repositories as repo
from db.engine import create_engine, create_sessionmaker
from db.migrate import upgrade
from db.models import ChatMessage, Currency, LedgerEntry, PhotoEvent
from shared.tasks import QueueTask, TaskStatus, TaskType

CHARGE_BATCH = 500


@dataclass(frozen=True, slots=True)
class Paid:
    """One task the harness paid for: what it is and what it cost."""

    task_id: str
    task_type: TaskType
    currency: Currency


class World:
    """A user with a dialog, and the ledger of a chaos run (SQLite or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: AsyncEngine = create_engine(url)
        self.db: async_sessionmaker[AsyncSession] = create_sessionmaker(self.engine)
        self.user_id = 0
        self.dialog_id = 0
        self.applied: Counter[str] = Counter()

    async def setup(self) -> None:
        await asyncio.to_thread(upgrade, self.url)
        self.user_id = int(uuid.uuid4().int % 10**12)
        async with self.db.begin() as session:
            await repo.get_or_create_user(
                session, self.user_id, "chaos", "ru", start_energy=10**9, start_diamonds=10**9
            )
            character = await repo.upsert_character(
                session,
                name=f"chaos-{uuid.uuid4().hex[:8]}",
                description="chaos",
                system_prompt="Ты — персонаж для проверки.",
                appearance="test portrait",
            )
            dialog = await repo.start_dialog(session, self.user_id, character)
            self.dialog_id = dialog.id

    async def charge(self, paid: list[Paid]) -> None:
        for start in range(0, len(paid), CHARGE_BATCH):
            async with self.db.begin() as session:
                for p in paid[start : start + CHARGE_BATCH]:
                    await repo.charge(
                        session, self.user_id, p.currency, 1, charge_id=p.task_id, reason="chaos"
                    )

    async def apply(self, task: QueueTask) -> None:
        """Apply a final outcome once per task id, as the bot does; repeats change nothing."""
        self.applied[task.task_id] += 1
        async with self.db.begin() as session:
            if task.status is TaskStatus.COMPLETED and task.result is not None:
                if task.type is TaskType.GENERATE_REPLY:
                    reply = str(task.result.get("reply", ""))
                    await repo.save_assistant_reply(session, self.dialog_id, task.task_id, reply)
                elif task.type is TaskType.GENERATE_IMAGE:
                    await repo.bump_photo_counter(session, self.dialog_id, task.task_id)
            elif task.status is not TaskStatus.COMPLETED and task.charge_id is not None:
                await repo.refund(session, task.charge_id, f"{task.type} {task.status}")

    async def audit(self, final: dict[str, QueueTask]) -> dict[str, Any]:
        """Side effects per task id: at most one of each, one refund per failed paid task."""
        async with self.db() as session:
            messages = await _per_task(
                session, ChatMessage.task_id, ChatMessage.role == "assistant"
            )
            photos = await _per_task(session, PhotoEvent.task_id, None)
            charges = await _per_task(session, LedgerEntry.task_id, LedgerEntry.kind == "charge")
            refunds = await _per_task(session, LedgerEntry.task_id, LedgerEntry.kind == "refund")
        failed = {i for i, t in final.items() if t.status is not TaskStatus.COMPLETED}
        completed = set(final) - failed
        return {
            "duplicate_chat_messages": sum(1 for n in messages.values() if n > 1),
            "duplicate_photo_counts": sum(1 for n in photos.values() if n > 1),
            "duplicate_charges": sum(1 for n in charges.values() if n > 1),
            "duplicate_refunds": sum(1 for n in refunds.values() if n > 1),
            "failed_paid_tasks": len(failed),
            "failed_refunded_exactly_once": sum(1 for i in failed if refunds.get(i) == 1),
            "completed_but_refunded": sum(1 for i in completed if i in refunds),
            "replies_saved": len(messages),
            "photos_counted": len(photos),
        }

    async def close(self) -> None:
        await self.engine.dispose()


async def _per_task(session: AsyncSession, column: Any, where: Any) -> dict[str, int]:
    query = select(column, func.count()).group_by(column)
    if where is not None:
        query = query.where(where)
    return {str(task_id): int(n) for task_id, n in (await session.execute(query)).all()}
