"""Editing the last message: the reply is produced again for the edited text.

Telegram's `edited_message` of the user's last message (in the active dialog), before or
after its reply: in one transaction the reply that answered the old text is superseded (its
delivery row applied for good, so its outcome, whenever it comes, is neither saved, sent nor
refunded), its charge refunded and its stored reply dropped; the message takes the new text
and a new reply task is charged. After the commit the old task is cancelled and the new one
queued. So the turn is charged once, and an edit racing the first reply ends with one reply,
for the edited text. Its task id comes from the edit (chat, message, edit date, text): the
same update handled twice charges and enqueues once.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from db import characters as cast
from db import delivery_rows, memory, steering
from db import repositories as repo
from db.models import ChatMessage, Currency, Delivery, Dialog
from producer.jobs import DeliveryKind, Job, task_id_for
from producer.memory import fit_history
from producer.steering import attempt_id
from shared.config import Settings
from shared.queue import QueueService
from shared.redact import redact
from shared.tasks import ChatTurn, Payload, ReplyPayload, TaskType

log = structlog.get_logger(__name__)

T = TypeVar("T")
InTransaction = Callable[[str, Callable[[AsyncSession], Awaitable[T]]], Awaitable[T]]
Enqueue = Callable[[Job, int, TaskType, Payload], Awaitable[None]]
_ENVELOPE_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Edit:
    """The user's edit of message `message_id` in `chat_id`, made at `edited_at` (epoch s)."""

    chat_id: int
    message_id: int
    user_id: int
    text: str
    edited_at: int


@dataclass(frozen=True, slots=True)
class _Redo:
    job: Job
    payload: ReplyPayload
    # The tasks whose replies answered the text before, or were redoing them (none on a
    # retried step: done by the attempt before).
    superseded: list[str]


class Edits:
    def __init__(
        self,
        *,
        settings: Settings,
        queue: QueueService,
        in_transaction: InTransaction[_Redo | None],
        enqueue: Enqueue,
    ) -> None:
        self._settings = settings
        self._queue = queue
        self._in_transaction = in_transaction
        self._enqueue = enqueue

    async def edit(self, edit: Edit) -> bool:
        """Answer the edited text instead; False if the edit changes nothing (not the last
        message of the active dialog, the same text, or this edit was handled already)."""
        # The text too: two edits within one second share their edit date.
        task_id = task_id_for("edit", edit.chat_id, edit.message_id, edit.edited_at, edit.text)
        job = Job(task_id, DeliveryKind.EDIT, edit.chat_id)
        # The attempt that superseded the old reply: a retry after its lost commit reply
        # finds the message already answered by this task, and that is no second update.
        ours: list[list[str]] = []

        async def redo(session: AsyncSession) -> _Redo | None:
            found = await self._edited(session, edit)
            if found is None:
                return None
            dialog, asked = found
            if asked.reply_task_id == task_id:
                if not ours:
                    return None
            elif asked.content == edit.text:
                return None
            else:
                ours.append(await _supersede(session, asked, edit, task_id))
            payload = await self._payload(session, dialog, asked, edit.text)
            if payload is None:
                return None
            job.dialog_id = dialog.id
            cost = self._settings.reply_energy_cost
            await repo.charge(
                session, edit.user_id, Currency.ENERGY, cost, charge_id=task_id, reason="edit"
            )
            await delivery_rows.expect(session, task_id, edit.chat_id, job.kind)
            return _Redo(job, payload, ours[0] if ours else [])

        redone = await self._in_transaction("charge_edit", redo)
        if redone is None:
            log.info("edit_ignored", message_id=edit.message_id)
            return False
        for superseded in redone.superseded:
            await self._stop(superseded)
        await self._enqueue(job, edit.user_id, TaskType.GENERATE_REPLY, redone.payload)
        return True

    async def _edited(
        self, session: AsyncSession, edit: Edit
    ) -> tuple[Dialog, ChatMessage] | None:
        """The active dialog and its message that was edited, if it is the last one and
        its text changed (or this edit is already applied to it)."""
        dialog = await repo.active_dialog(session, edit.user_id)
        if dialog is None:
            return None
        asked = await steering.user_message(session, dialog.id, edit.message_id)
        if asked is None or not await steering.is_last_user_message(session, asked):
            return None
        return dialog, asked

    async def _payload(
        self, session: AsyncSession, dialog: Dialog, asked: ChatMessage, text: str
    ) -> ReplyPayload | None:
        character = await repo.get_character(session, dialog.character_id)
        if character is None:
            return None
        prompt = await cast.persona_prompt(session, character, dialog.user_id)
        window = self._settings.history_messages
        found = await memory.dialog_memory(session, dialog, window, before=asked.id)
        budget = self._settings.max_payload_bytes - _ENVELOPE_BYTES
        for part in (prompt, text, found.summary):
            budget -= len((part or "").encode())
        turns = [ChatTurn.from_json(turn.as_turn()) for turn in found.turns]
        return ReplyPayload(
            system_prompt=prompt,
            history=fit_history(turns, budget),
            dialog_id=dialog.id,
            user_message=text,
            summary=found.summary,
        )

    async def _stop(self, task_id: str) -> None:
        """Stop the superseded reply's model call (its outcome is ignored either way)."""
        try:
            await self._queue.cancel(TaskType.GENERATE_REPLY, task_id)
        except (RedisError, OSError) as exc:
            log.warning("superseded_stop_failed", task_id=task_id, error=redact(str(exc)))


async def _supersede(
    session: AsyncSession, asked: ChatMessage, edit: Edit, task_id: str
) -> list[str]:
    """Retire the reply that answered the text before, and any regeneration or
    continuation of it in flight; return their task ids."""
    before = asked.reply_task_id or task_id_for("reply", edit.chat_id, edit.message_id)
    dropped = await steering.drop_replies_after(session, asked)
    retired = [before]
    for reply in dropped:
        for kind in (DeliveryKind.REGENERATE, DeliveryKind.CONTINUE):
            redoing = await attempt_id(session, kind, reply)
            if await session.get(Delivery, redoing) is not None:
                retired.append(redoing)
    token = uuid.UUID(task_id).hex
    for retiring in retired:
        # Applied for good (and marked sent, so no restart sends it): its outcome finds
        # the row taken and applies nothing. One already applied stays applied.
        if await delivery_rows.mark_applied(session, retiring, token):
            await delivery_rows.mark_sent(session, retiring)
        refund = await repo.refund(session, retiring, "replaced by an edit")
        log.info("reply_superseded", superseded=retiring, refund=str(refund))
    asked.content = edit.text
    asked.reply_task_id = task_id
    return retired
