"""What a restarted bot, or any other bot process, needs to know about a reply being shown.

Per reply: how it is shown (a draft and its id, or an edited message and its id). Per chat:
the replies being written now (what `/stop` stops) and which reply each draft id shows (what
Telegram's stop button names). Everything lives under the chat's hash tag with a TTL longer
than any reply's wait, so a crashed process leaves nothing behind for long.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from shared.queue.connection import RedisClient
from shared.queue.keys import BotKeys

# Longer than REPLY_WAIT_SECONDS plus a restart; a record outliving its reply is harmless.
RECORD_TTL_SECONDS = 3600


class ViewMode(StrEnum):
    DRAFT = "draft"
    EDIT = "edit"


@dataclass(slots=True)
class ViewState:
    """How one reply is shown; `message_id` is set once edit mode sent its message."""

    task_id: str
    chat_id: int
    mode: ViewMode
    draft_id: int
    message_id: int | None = None


def draft_id_for(task_id: str) -> int:
    """A non-zero draft id derived from the task id, the same in every process."""
    return (uuid.UUID(task_id).int & 0x7FFFFFFF) or 1


class StreamRecords:
    """Reads and writes the records; Redis errors reach the caller (it decides what to do)."""

    def __init__(self, redis: RedisClient, keys: BotKeys) -> None:
        self._redis = redis
        self._keys = keys

    async def open(self, chat_id: int, task_id: str, mode: ViewMode) -> ViewState:
        """The reply's record, created in `mode` unless an earlier process created it."""
        key = self._keys.view(chat_id, task_id)
        state = ViewState(task_id, chat_id, mode, draft_id_for(task_id))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, "mode", mode.value)
            pipe.hgetall(key)
            pipe.expire(key, RECORD_TTL_SECONDS)
            pipe.sadd(self._keys.replies(chat_id), task_id)
            pipe.expire(self._keys.replies(chat_id), RECORD_TTL_SECONDS)
            pipe.set(self._keys.draft(chat_id, state.draft_id), task_id, ex=RECORD_TTL_SECONDS)
            _, stored, *_ = await pipe.execute()
        fields = {k.decode(): v.decode() for k, v in stored.items()}
        state.mode = ViewMode(fields.get("mode", mode.value))
        if "message" in fields:
            state.message_id = int(fields["message"])
        return state

    async def save(self, state: ViewState) -> None:
        """Store a change of mode or the edited message's id."""
        values: dict[str, str | int] = {"mode": state.mode.value}
        if state.message_id is not None:
            values["message"] = state.message_id
        key = self._keys.view(state.chat_id, state.task_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=values)  # type: ignore[arg-type]
            pipe.expire(key, RECORD_TTL_SECONDS)
            await pipe.execute()

    async def close(self, chat_id: int, task_id: str) -> None:
        """The reply is delivered: nothing is left to stop or to continue."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.srem(self._keys.replies(chat_id), task_id)
            pipe.delete(self._keys.view(chat_id, task_id))
            pipe.delete(self._keys.draft(chat_id, draft_id_for(task_id)))
            await pipe.execute()

    async def replies(self, chat_id: int) -> list[str]:
        """The chat's replies being written now."""
        members = await self._redis.smembers(self._keys.replies(chat_id))
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    async def task_of_draft(self, chat_id: int, draft_id: int) -> str | None:
        found = await self._redis.get(self._keys.draft(chat_id, draft_id))
        if found is None:
            return None
        return found.decode() if isinstance(found, bytes) else str(found)
