"""Stopping a reply while it is written: `/stop`, the "⏹ Стоп" button, Telegram's own stop
button on a draft, Ctrl-C in the console.

Only the person who asked for a reply may stop it: in a group every member sees its ⏹
button, and a stop by someone else would leave the asker paying for a cut reply. The owner is
read from the task itself (the user it was charged to), never from the button, since a
client can send any callback data. An admin's ⏹ press may stop anyone's reply; it is logged.

The bot only asks the queue to cancel the task; whoever runs it stops the model, and the
outcome comes back like any other (the partial text kept and shown marked, or a refund if
nothing was written). Cancelling is idempotent, so a second press changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import structlog
from redis.exceptions import RedisError

from producer.stream_records import StreamRecords
from shared.queue import QueueService
from shared.redact import redact
from shared.tasks import TaskType

log = structlog.get_logger(__name__)


class StopAnswer(StrEnum):
    STOPPING = "stopping"
    # Nothing is being written (done already, or never there).
    NOTHING = "nothing"
    # Being written, but for someone else.
    NOT_YOURS = "not_yours"
    UNAVAILABLE = "unavailable"


# How answers for several replies (a chat's `/stop`) sum up: the first found in this order.
_PRECEDENCE = (StopAnswer.STOPPING, StopAnswer.NOT_YOURS, StopAnswer.NOTHING)


@dataclass(frozen=True, slots=True)
class Presser:
    """Who asks for the stop; `admin` (from ADMIN_IDS) may stop others' replies by their
    button."""

    user_id: int
    admin: bool = False


class Stopper:
    def __init__(self, queue: QueueService, records: StreamRecords) -> None:
        self._queue = queue
        self._records = records

    async def stop_chat(self, chat_id: int, presser: Presser) -> StopAnswer:
        """Stop the presser's own replies being written in the chat (`/stop`); others'
        replies are left alone, an admin's too (the button names one reply on purpose, a
        command in a busy group does not)."""
        try:
            task_ids = await self._records.replies(chat_id)
        except (RedisError, OSError) as exc:
            log.warning("stop_lookup_failed", error=redact(str(exc)))
            return StopAnswer.UNAVAILABLE
        return await self._cancel(task_ids, "command", presser, override=False)

    async def stop_task(self, task_id: str, presser: Presser, source: str) -> StopAnswer:
        """Stop one reply (the "⏹ Стоп" button names it): the asker's, or anyone's for an
        admin."""
        return await self._cancel([task_id], source, presser, override=presser.admin)

    async def stop_draft(self, chat_id: int, draft_id: int) -> StopAnswer:
        """Stop the reply a draft shows (Telegram's stop button names the draft). Drafts
        exist only in private chats, whose only user is the chat."""
        try:
            task_id = await self._records.task_of_draft(chat_id, draft_id)
        except (RedisError, OSError) as exc:
            log.warning("stop_lookup_failed", error=redact(str(exc)))
            return StopAnswer.UNAVAILABLE
        if task_id is None:
            log.info("stop_unknown_draft", chat_id=chat_id, draft_id=draft_id)
            return StopAnswer.NOTHING
        return await self._cancel([task_id], "draft", Presser(chat_id), override=False)

    async def _cancel(
        self, task_ids: list[str], source: str, presser: Presser, *, override: bool
    ) -> StopAnswer:
        answers: set[StopAnswer] = set()
        for task_id in task_ids:
            try:
                answers.add(await self._cancel_one(task_id, source, presser, override))
            except (RedisError, OSError) as exc:
                log.warning("stop_failed", task_id=task_id, error=redact(str(exc)))
                return StopAnswer.UNAVAILABLE
        return next((a for a in _PRECEDENCE if a in answers), StopAnswer.NOTHING)

    async def _cancel_one(
        self, task_id: str, source: str, presser: Presser, override: bool
    ) -> StopAnswer:
        reply = TaskType.GENERATE_REPLY
        # Read first: the owner, and whether it is still being written ("cancelled" after
        # the call cannot tell this stop from an earlier one, which deserves "nothing").
        task = await self._queue.get_task(task_id, reply)
        if task is None or task.is_final:
            return StopAnswer.NOTHING
        owner = task.user_id
        if owner != presser.user_id:
            if not override:
                log.info("stop_refused", task_id=task_id, owner_id=owner, source=source)
                return StopAnswer.NOT_YOURS
            log.warning(
                "stop_admin_override",
                task_id=task_id,
                admin_id=presser.user_id,
                owner_id=owner,
                source=source,
            )
        status = await self._queue.cancel(reply, task_id)
        log.info("stop_requested", task_id=task_id, source=source, status=str(status))
        return StopAnswer.NOTHING if status is None else StopAnswer.STOPPING
