"""generate_reply: the character answers with the LLM, streamed to the task's live output
(the bot saves the final reply once)."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from consumers.providers.base import LLMClient
from consumers.task_run import StopRequested, TaskRun
from shared.errors import ProviderUnavailableError, StreamCutError
from shared.queue.live import END_CUT, END_DONE, END_STOPPED
from shared.tasks import QueueTask, ReplyPayload, ReplyResult, to_json

log = structlog.get_logger(__name__)

# Introduces the dialog's memory to the model, right after the character's own prompt.
MEMORY_INTRO = "What you remember from the earlier part of this conversation:\n"


def reply_messages(payload: ReplyPayload) -> list[dict[str, str]]:
    """The chat request of a reply: the character, its memory of the dialog, the recent
    turns, the user's message and, to continue a reply, what it said so far."""
    messages = [{"role": "system", "content": payload.system_prompt}]
    if payload.summary:
        messages.append({"role": "system", "content": MEMORY_INTRO + payload.summary})
    messages += [to_json(turn) for turn in payload.history]
    messages.append({"role": "user", "content": payload.user_message})
    if payload.prefill:
        messages.append({"role": "assistant", "content": payload.prefill})
    return messages


class ReplyHandler:
    def __init__(self, llm: LLMClient) -> None:
        self._llm = llm

    async def __call__(self, task: QueueTask, run: TaskRun) -> ReplyResult:
        payload = task.payload_as(ReplyPayload)
        messages = reply_messages(payload)
        await run.admitted()  # the live writer is keyed by the attempt the start counted
        live = run.live
        cut = False
        try:
            # aclosing: leaving the loop early (a stop) closes the provider's connection now.
            async with contextlib.aclosing(self._llm.stream(messages)) as deltas:
                async for delta in deltas:
                    if run.stop_requested:  # its cancel was lost: the flag still stops it
                        break
                    await live.add(delta)
        except StreamCutError as exc:
            log.warning("reply_stream_cut", error=str(exc), chars=len(live.text))
            cut = True
        except asyncio.CancelledError:
            await self._cancelled(run, payload.dialog_id)
            raise
        except BaseException:
            await live.abandon()  # the task fails or runs again: no end marker yet
            raise
        if run.stop_requested:
            await self._cancelled(run, payload.dialog_id)
            raise StopRequested
        reply = live.text.strip()
        if not reply:  # only whitespace arrived before the cut: nothing worth keeping
            await live.abandon()
            raise ProviderUnavailableError(
                "the reply stream broke before any text", self._llm.name
            )
        await live.close(END_CUT if cut else END_DONE)
        return ReplyResult(reply=reply, dialog_id=payload.dialog_id, cut=cut)

    async def _cancelled(self, run: TaskRun, dialog_id: int) -> None:
        if not run.stop_requested:  # shutdown: the task runs again, the reader keeps waiting
            await run.live.abandon()
            return
        text = run.live.text.strip()
        if text:
            run.partial = ReplyResult(reply=text, dialog_id=dialog_id, stopped=True)
        await run.live.close(END_STOPPED)
