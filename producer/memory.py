"""Long-term memory of dialogs, the bot's side: what a reply remembers, when to ask for a
summary, and `/memory`.

A reply's charging step reads the dialog's memory (`recall`) in its transaction; if turns left
the history window and no summary task is in flight, the same transaction makes one the
dialog's task in flight and records its delivery row. After the reply is queued, `submit`
queues the summary: a reply never waits for one, it uses the latest summary stored. The
summary's outcome is applied like every other (`Outcomes.apply`): stored once, or, failed or
lost, the dialog is freed so its next message past the window asks again. Nobody pays.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import delivery_rows, memory
from db import repositories as repo
from db.memory import StoredTurn
from db.models import Character, Dialog
from producer.delivery import Deliveries
from producer.jobs import DeliveryKind, Job, encode_kind, task_id_for
from producer.outcomes import Verdict
from producer.submit import Submitted, enqueue_retrying
from shared.config import Settings
from shared.queue import QueueService
from shared.tasks import ChatTurn, SummaryPayload, TaskType

log = structlog.get_logger(__name__)

# Most turns folded by one summary task (a dialog far behind catches up over several).
FOLD_MAX_TURNS = 40
# Room left in a summary task for its envelope and the summary so far.
_ENVELOPE_BYTES = 4096
_TURN_OVERHEAD_BYTES = 32


@dataclass(frozen=True, slots=True)
class Recall:
    """What a reply remembers, and the summary task its charging step asked for (if any)."""

    summary: str | None
    turns: list[ChatTurn]
    summary_job: Job | None = None
    summary_payload: SummaryPayload | None = None


@dataclass(frozen=True, slots=True)
class MemoryView:
    """What `/memory` shows: the active dialog's summary (None: nothing remembered yet)."""

    dialog_id: int
    character: str
    summary: str | None


def fit_history(turns: list[ChatTurn], budget: int) -> list[ChatTurn]:
    """The newest turns whose UTF-8 size fits `budget` bytes, oldest first."""
    kept: list[ChatTurn] = []
    for turn in reversed(turns):
        budget -= len(turn.content.encode()) + 32
        if budget < 0:
            break
        kept.append(turn)
    return kept[::-1]


def fit_fold(turns: list[StoredTurn], budget: int) -> list[StoredTurn]:
    """The oldest turns whose UTF-8 size fits `budget` bytes (at least one, cut to fit):
    a fold always moves forward, and what does not fit waits for the next one."""
    kept: list[StoredTurn] = []
    for turn in turns:
        size = len(turn.content.encode()) + _TURN_OVERHEAD_BYTES
        if size > budget:
            if not kept:
                cut = turn.content.encode()[: max(budget, 1)].decode(errors="ignore")
                kept.append(StoredTurn(turn.id, turn.role, cut))
            break
        budget -= size
        kept.append(turn)
    return kept


class Memory:
    """The memory use cases of one bot process."""

    def __init__(
        self,
        settings: Settings,
        db: async_sessionmaker[AsyncSession],
        queue: QueueService,
        deliveries: Deliveries,
    ) -> None:
        self._settings = settings
        self._db = db
        self._queue = queue
        self._deliveries = deliveries

    async def recall(
        self, session: AsyncSession, dialog: Dialog, chat_id: int, message_id: int | None
    ) -> Recall:
        """The dialog's memory for the reply to `message_id` (left out of the turns: it is
        the reply's user message), asking for a summary task if one is due. Runs in the
        reply's charging transaction, so the ask is undone if the charge fails, and is safe
        to run again: the task id comes from the dialog and the folded range."""
        found = await memory.dialog_memory(
            session,
            dialog,
            self._settings.history_messages,
            exclude_message=message_id,
            fold_max=FOLD_MAX_TURNS,
        )
        turns = [ChatTurn.from_json(turn.as_turn()) for turn in found.turns]
        if not found.fold:
            return Recall(found.summary, turns)
        budget = self._settings.max_payload_bytes - _ENVELOPE_BYTES
        budget -= len((found.summary or "").encode())
        fold = fit_fold(found.fold, budget)
        task_id = task_id_for("summary", dialog.id, found.upto, fold[-1].id)
        if not await memory.ask_summary(session, dialog.id, task_id):
            return Recall(found.summary, turns)  # one is in flight: the next message asks
        kind = encode_kind(DeliveryKind.SUMMARY, dialog.id)
        await delivery_rows.expect(session, task_id, chat_id, kind)
        # Silent from the start: no chat action or "takes longer" for a summary.
        job = Job(task_id, DeliveryKind.SUMMARY, chat_id, dialog.id, notified=True)
        payload = SummaryPayload(
            dialog_id=dialog.id,
            upto=fold[-1].id,
            summary=found.summary,
            turns=[ChatTurn.from_json(turn.as_turn()) for turn in fold],
        )
        return Recall(found.summary, turns, job, payload)

    async def submit(self, recall: Recall, user_id: int) -> None:
        """Queue the summary task `recall` asked for (after the reply's own task), and watch
        for its outcome; a refused one frees the dialog at once."""
        job, payload = recall.summary_job, recall.summary_payload
        if job is None or payload is None:
            return
        submitted = await enqueue_retrying(
            self._queue,
            job,
            user_id,
            TaskType.SUMMARIZE_DIALOG,
            payload,
            retry_seconds=self._settings.enqueue_retry_seconds,
        )
        log.info(
            "summary_asked", dialog_id=job.dialog_id, upto=payload.upto, turns=len(payload.turns)
        )
        self._deliveries.watch(job, Verdict.REFUSED if submitted is Submitted.REFUSED else None)

    async def show(self, user_id: int) -> MemoryView | None:
        """The user's active dialog and what its character remembers; None without one."""
        async with self._db() as session:
            dialog = await repo.active_dialog(session, user_id)
            if dialog is None:
                return None
            character = await session.get(Character, dialog.character_id)
        name = character.name if character is not None else ""
        return MemoryView(dialog.id, name, dialog.summary)

    async def clear(self, user_id: int, dialog_id: int) -> bool:
        """Forget the dialog's summary; False if the dialog is not the user's."""
        async with self._db.begin() as session:
            cleared = await memory.clear_memory(session, user_id, dialog_id)
        log.info("memory_cleared", dialog_id=dialog_id, cleared=cleared)
        return cleared
