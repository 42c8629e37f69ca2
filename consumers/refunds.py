"""The failure hook: give the user back what a task that failed for good cost, exactly once."""

from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import repositories as repo
from shared.tasks import QueueTask

log = structlog.get_logger(__name__)


class Refunder:
    def __init__(self, db: async_sessionmaker[AsyncSession]) -> None:
        self._db = db

    async def __call__(self, task: QueueTask, reason: str) -> None:
        """Refund the task's charge; idempotent by charge id, so redelivery cannot pay twice."""
        if task.charge_id is None:
            return
        async with self._db.begin() as session:
            outcome = await repo.refund(session, task.charge_id, f"{task.type} failed: {reason}")
        log.info("task_refunded", charge_id=task.charge_id, outcome=str(outcome))
