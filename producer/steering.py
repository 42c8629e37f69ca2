"""Steering a conversation: the latest reply asked again (🔄) or continued (▶️), and the
last exchange undone (/undo).

Each is a generate_reply task charged like a message (and refunded like one if it fails),
with the same delivery: shown while written, stoppable, sent once. Its task id comes from the
reply it redoes, so two presses of one button charge and enqueue once; an attempt that failed
(its delivery applied, the reply still there) makes the next press a new attempt. The outcome
replaces or extends that reply's history row once (`Outcomes.apply`). Only the owner of the
dialog can press, and only under its latest reply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import characters as cast
from db import delivery_rows, memory, steering
from db import repositories as repo
from db.models import ChatMessage, Currency, Delivery, Dialog, MessageRole
from producer.delivery import Deliveries
from producer.jobs import DeliveryKind, Job, task_id_for
from producer.memory import fit_history
from shared.config import Settings
from shared.tasks import ChatTurn, Payload, ReplyPayload, TaskType

log = structlog.get_logger(__name__)

T = TypeVar("T")
InTransaction = Callable[[str, Callable[[AsyncSession], Awaitable[T]]], Awaitable[T]]
Enqueue = Callable[[Job, int, TaskType, Payload], Awaitable[None]]
# Room left in a task for its envelope (as for a message's reply).
_ENVELOPE_BYTES = 4096


class UndoAnswer(StrEnum):
    UNDONE = "undone"
    NOTHING = "nothing"
    # A reply in the chat is still being written: it would land after the undo.
    BUSY = "busy"
    NO_DIALOG = "no_dialog"


class SteerAnswer(StrEnum):
    STARTED = "started"
    # The same button again while its reply is being written: nothing more happens.
    ALREADY = "already"
    # Not the dialog's latest reply any more (or gone): only the latest can be redone.
    TOO_LATE = "too_late"
    NOT_YOURS = "not_yours"


@dataclass(frozen=True, slots=True)
class _Steer:
    """A press that charged: the job to deliver and its request."""

    job: Job
    payload: ReplyPayload


async def attempt_id(session: AsyncSession, kind: DeliveryKind, target: str) -> str:
    """The task id of the current attempt at redoing `target` (in flight if its delivery
    row exists): derived from it, and from the attempts before that ended without replacing
    it (failed, refunded)."""
    task_id = task_id_for(kind.value, target)
    while (row := await session.get(Delivery, task_id)) is not None and row.applied_at:
        task_id = task_id_for(task_id, "again")
    return task_id


async def new_attempt(
    session: AsyncSession, kind: DeliveryKind, target: str, ours: set[str]
) -> str | None:
    """The task id of a press on `target`'s button, None if an attempt is in flight. `ours`
    holds the ids this press found free: a retry after its lost commit reply finds its own
    delivery row, which is no second press."""
    task_id = await attempt_id(session, kind, target)
    if await session.get(Delivery, task_id) is not None and task_id not in ours:
        return None
    ours.add(task_id)
    return task_id


async def owned_reply(
    session: AsyncSession, user_id: int, target: str
) -> tuple[Dialog, ChatMessage] | SteerAnswer:
    """The reply a button names and its dialog, if the presser owns the dialog (the owner is
    read here, never from the button)."""
    reply = await steering.reply_by_task(session, target)
    if reply is None:
        return SteerAnswer.TOO_LATE
    dialog = await session.get(Dialog, reply.dialog_id)
    if dialog is None or dialog.user_id != user_id:
        return SteerAnswer.NOT_YOURS
    return dialog, reply


class Steering:
    """The steering use cases of one bot process."""

    def __init__(
        self,
        *,
        settings: Settings,
        db: async_sessionmaker[AsyncSession],
        deliveries: Deliveries,
        in_transaction: InTransaction[_Steer | SteerAnswer],
        enqueue: Enqueue,
    ) -> None:
        self._settings = settings
        self._db = db
        self._deliveries = deliveries
        self._in_transaction = in_transaction
        self._enqueue = enqueue

    async def regenerate(
        self, chat_id: int, user_id: int, target: str, message_id: int | None
    ) -> SteerAnswer:
        """🔄: ask again for the reply `target`; the new one takes its place in the message
        `message_id` (the one pressed) and in the history."""
        steered = await self._charge(DeliveryKind.REGENERATE, chat_id, user_id, target)
        if isinstance(steered, SteerAnswer):
            return steered
        if message_id is not None:
            await self._deliveries.show_in_message(steered.job, message_id)
        await self._enqueue(steered.job, user_id, TaskType.GENERATE_REPLY, steered.payload)
        return SteerAnswer.STARTED

    async def continue_reply(self, chat_id: int, user_id: int, target: str) -> SteerAnswer:
        """▶️: the model goes on from the reply `target` (its text as the assistant's last
        turn); the continuation is sent as a new message and appended to the reply."""
        steered = await self._charge(DeliveryKind.CONTINUE, chat_id, user_id, target)
        if isinstance(steered, SteerAnswer):
            return steered
        await self._enqueue(steered.job, user_id, TaskType.GENERATE_REPLY, steered.payload)
        return SteerAnswer.STARTED

    async def undo(self, chat_id: int, user_id: int) -> UndoAnswer:
        """/undo: the model no longer sees the active dialog's last exchange (the user's
        last message and the replies to it are deleted). Refused while a reply in the chat
        is being written: it would be stored after the undo."""
        async with self._db.begin() as session:
            dialog = await repo.active_dialog(session, user_id)
            if dialog is None:
                return UndoAnswer.NO_DIALOG
            if await steering.replies_in_flight(session, chat_id):
                return UndoAnswer.BUSY
            removed = await steering.undo_last_exchange(session, dialog.id)
        log.info("exchange_undone", dialog_id=dialog.id, messages=removed)
        return UndoAnswer.UNDONE if removed else UndoAnswer.NOTHING

    async def _charge(
        self, kind: DeliveryKind, chat_id: int, user_id: int, target: str
    ) -> _Steer | SteerAnswer:
        """Check the press and charge it, in one transaction (retried like a message's)."""
        ours: set[str] = set()

        async def charge(session: AsyncSession) -> _Steer | SteerAnswer:
            found = await self._target(session, user_id, target)
            if isinstance(found, SteerAnswer):
                return found
            dialog, reply, asked = found
            task_id = await new_attempt(session, kind, target, ours)
            if task_id is None:
                return SteerAnswer.ALREADY
            job = Job(task_id, kind, chat_id, dialog.id)
            payload = await self._payload(session, dialog, reply, asked, kind)
            if payload is None:
                return SteerAnswer.TOO_LATE
            cost = self._settings.reply_energy_cost
            await repo.charge(
                session, user_id, Currency.ENERGY, cost, charge_id=job.charge_id, reason=kind
            )
            await delivery_rows.expect(session, task_id, chat_id, kind)
            return _Steer(job, payload)

        steered = await self._in_transaction(f"charge_{kind}", charge)
        log.info("steer_pressed", kind=kind, target=target, answer=_answer_of(steered))
        return steered

    async def _target(
        self, session: AsyncSession, user_id: int, target: str
    ) -> tuple[Dialog, ChatMessage, ChatMessage] | SteerAnswer:
        """The reply a button names, its dialog and the user message it answers, if the
        presser owns the dialog and the reply is its latest message."""
        found = await owned_reply(session, user_id, target)
        if isinstance(found, SteerAnswer):
            return found
        dialog, reply = found
        if not await steering.is_latest(session, reply):
            return SteerAnswer.TOO_LATE
        asked = await steering.message_before(session, reply)
        if asked is None or asked.role != MessageRole.USER:
            return SteerAnswer.TOO_LATE
        return dialog, reply, asked

    async def _payload(
        self,
        session: AsyncSession,
        dialog: Dialog,
        reply: ChatMessage,
        asked: ChatMessage,
        kind: DeliveryKind,
    ) -> ReplyPayload | None:
        """The request the reply answered (its window, the dialog's memory, the user's
        message), and to continue, the reply so far."""
        character = await repo.get_character(session, dialog.character_id)
        if character is None:
            return None
        prompt = await cast.persona_prompt(session, character, dialog.user_id)
        window = self._settings.history_messages
        found = await memory.dialog_memory(session, dialog, window, before=asked.id)
        prefill = reply.content if kind is DeliveryKind.CONTINUE else None
        budget = self._settings.max_payload_bytes - _ENVELOPE_BYTES
        for text in (prompt, asked.content, found.summary, prefill):
            budget -= len((text or "").encode())
        turns = [ChatTurn.from_json(turn.as_turn()) for turn in found.turns]
        return ReplyPayload(
            system_prompt=prompt,
            history=fit_history(turns, budget),
            dialog_id=dialog.id,
            user_message=asked.content,
            summary=found.summary,
            prefill=prefill,
            replaces=reply.task_id,
        )


def _answer_of(steered: _Steer | SteerAnswer) -> str:
    return steered.value if isinstance(steered, SteerAnswer) else SteerAnswer.STARTED.value
