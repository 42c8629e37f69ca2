"""generate_reply: the character answers with the LLM (the bot saves the reply once)."""

from __future__ import annotations

from consumers.providers.base import LLMClient
from shared.tasks import QueueTask, ReplyPayload, ReplyResult


class ReplyHandler:
    def __init__(self, llm: LLMClient) -> None:
        self._llm = llm

    async def __call__(self, task: QueueTask) -> ReplyResult:
        payload = task.payload_as(ReplyPayload)
        messages = [{"role": "system", "content": payload.system_prompt}]
        messages += [turn.model_dump() for turn in payload.history]
        messages.append({"role": "user", "content": payload.user_message})
        reply = (await self._llm.chat(messages)).strip()
        return ReplyResult(reply=reply, dialog_id=payload.dialog_id)
