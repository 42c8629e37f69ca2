"""Stopping a reply while it is written: `/stop`, the "⏹ Стоп" button, Telegram's own stop
button on a draft, Ctrl-C in the console.

The bot only asks the queue to cancel the task; whoever runs it stops the model, and the
outcome comes back like any other (the partial text kept and shown marked, or a refund if
nothing was written). Cancelling is idempotent, so a second press changes nothing.
"""

from __future__ import annotations

from enum import StrEnum

import structlog
from redis.exceptions import RedisError

from producer.stream_records import StreamRecords
from shared.queue import QueueService
from shared.redact import redact
from shared.tasks import TaskType

log = structlog.get_logger(__name__)

_FINAL = frozenset({b"completed", b"failed", b"cancelled"})


class StopAnswer(StrEnum):
    STOPPING = "stopping"
    # Nothing is being written (done already, or never there).
    NOTHING = "nothing"
    UNAVAILABLE = "unavailable"


class Stopper:
    def __init__(self, queue: QueueService, records: StreamRecords) -> None:
        self._queue = queue
        self._records = records

    async def stop_chat(self, chat_id: int) -> StopAnswer:
        """Stop every reply being written in the chat (`/stop`)."""
        try:
            task_ids = await self._records.replies(chat_id)
        except (RedisError, OSError) as exc:
            log.warning("stop_lookup_failed", error=redact(str(exc)))
            return StopAnswer.UNAVAILABLE
        return await self._cancel(task_ids, source="command")

    async def stop_task(self, task_id: str, source: str) -> StopAnswer:
        """Stop one reply (the "⏹ Стоп" button names it)."""
        return await self._cancel([task_id], source=source)

    async def stop_draft(self, chat_id: int, draft_id: int) -> StopAnswer:
        """Stop the reply a draft shows (Telegram's stop button names the draft)."""
        try:
            task_id = await self._records.task_of_draft(chat_id, draft_id)
        except (RedisError, OSError) as exc:
            log.warning("stop_lookup_failed", error=redact(str(exc)))
            return StopAnswer.UNAVAILABLE
        if task_id is None:
            log.info("stop_unknown_draft", chat_id=chat_id, draft_id=draft_id)
            return StopAnswer.NOTHING
        return await self._cancel([task_id], source="draft")

    async def _cancel(self, task_ids: list[str], source: str) -> StopAnswer:
        answer = StopAnswer.NOTHING
        reply = TaskType.GENERATE_REPLY
        for task_id in task_ids:
            try:
                # Read first: "cancelled" after the call cannot tell this stop from an
                # earlier one, and a repeated stop deserves "nothing to stop".
                before = await self._queue.redis.hget(
                    self._queue.keys.record(reply, task_id), "status"
                )
                status = await self._queue.cancel(reply, task_id)
            except (RedisError, OSError) as exc:
                log.warning("stop_failed", task_id=task_id, error=redact(str(exc)))
                return StopAnswer.UNAVAILABLE
            log.info("stop_requested", task_id=task_id, source=source, status=str(status))
            if before is not None and before not in _FINAL and status is not None:
                answer = StopAnswer.STOPPING
        return answer
