"""generate_reply: the character answers with the LLM; the reply is saved once per task."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from consumers.providers.base import LLMClient
from shared.db import repositories as repo
from shared.tasks import QueueTask, ReplyPayload, ReplyResult


class ReplyHandler:
    def __init__(self, llm: LLMClient, db: async_sessionmaker[AsyncSession]) -> None:
        self._llm = llm
        self._db = db

    async def __call__(self, task: QueueTask) -> ReplyResult:
        payload = ReplyPayload.model_validate(task.data)
        messages = [{"role": "system", "content": payload.system_prompt}]
        messages += [turn.model_dump() for turn in payload.history]
        messages.append({"role": "user", "content": payload.user_message})
        reply = (await self._llm.chat(messages)).strip()
        # Idempotent by task id: a redelivered task finds its reply already stored.
        async with self._db.begin() as session:
            await repo.save_assistant_reply(session, payload.dialog_id, task.task_id, reply)
        return ReplyResult(reply=reply, dialog_id=payload.dialog_id)
