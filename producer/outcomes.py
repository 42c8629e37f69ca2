"""Applying how a task ended, once: the delivery's mark and the effect in one transaction.

Every path that learns a task's outcome (the live wait, resume on start, the periodic
recheck, lost detection, a refused enqueue) goes through `Outcomes.apply`: the one place
where a reply is saved, a photo counted, a photo chain continued or a charge refunded. The
delivery row is marked applied in the same transaction as the effect, so exactly one caller
applies and then sends; every effect is idempotent by its own key as well (task id, charge
id), so a delivery sent again after a crash repeats no database effect (its message may go
out again: sending is at least once, see producer.delivery).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import structlog
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import delivery_rows, memory, steering
from db import repositories as repo
from db.models import Dialog
from db.retry import retry_transient
from producer.jobs import DeliveryKind, Job, encode_kind, image_task_id
from producer.submit import Submitted, enqueue_retrying
from shared.config import Settings
from shared.errors import InvalidDataError
from shared.queue import QueueService
from shared.redact import redact
from shared.tasks import (
    ImagePayload,
    ImagePromptResult,
    ImageResult,
    QueueTask,
    ReplyResult,
    SummaryResult,
    TaskStatus,
    TaskType,
)
from shared.voice_tasks import SpeechResult, TranscriptResult

log = structlog.get_logger(__name__)

# The ledger's reason column.
_REASON_CHARS = 255

# What a completed task leaves for the bot to apply.
Result = ReplyResult | ImageResult | SummaryResult | TranscriptResult | SpeechResult


class Verdict(StrEnum):
    COMPLETED = "completed"
    # Failed by the pipeline (or completed with a result nobody can read).
    FAILED = "failed"
    # Cancelled (the user stopped it) before any text was written: refunded like a failure.
    STOPPED = "stopped"
    # No record: never enqueued, or it expired while nobody was watching.
    LOST = "lost"
    # Refused before enqueue (an invalid payload, our own bug): nothing was queued.
    REFUSED = "refused"


def verdict_of(task: QueueTask | None) -> Verdict:
    """The verdict on a final task, or LOST for a task whose record is gone.

    A reply stopped after some text was written counts as completed: its partial text is
    kept and shown (marked), and nothing is refunded.
    """
    if task is None:
        return Verdict.LOST
    if task.status is TaskStatus.COMPLETED:
        return Verdict.COMPLETED
    if task.status is TaskStatus.CANCELLED and task.type is TaskType.GENERATE_REPLY:
        return Verdict.COMPLETED if _partial_text(task) else Verdict.STOPPED
    return Verdict.FAILED


def _partial_text(task: QueueTask) -> bool:
    if task.result is None:
        return False
    try:
        return bool(ReplyResult.from_json(task.result).reply.strip())
    except InvalidDataError:
        return False


@dataclass(frozen=True, slots=True)
class Applied:
    """An outcome applied by this caller: what it now owes the chat."""

    verdict: Verdict
    # Who paid (their photo lock is released once the photo is sent or refunded).
    user_id: int | None
    result: Result | None = None
    # A photo chain's image step, owed to the chat now instead of its prompt step.
    next_job: Job | None = None


class Outcomes:
    """Applies outcomes for one bot process."""

    def __init__(
        self, settings: Settings, db: async_sessionmaker[AsyncSession], queue: QueueService
    ) -> None:
        self._settings = settings
        self._db = db
        self._queue = queue

    async def apply(
        self, job: Job, verdict: Verdict, task: QueueTask | None = None
    ) -> Applied | None:
        """Claim `job`'s delivery row and apply its outcome; None if another caller did.

        COMPLETED needs the final task. Failures (FAILED, LOST, REFUSED) refund the charge
        once; a failed task's record is then marked settled, so it cannot be replayed.
        """
        result: Result | None = None
        if verdict is Verdict.COMPLETED:
            if task is None:
                raise ValueError("a completed outcome needs its task")
            if job.kind is DeliveryKind.PHOTO_PROMPT:
                prompt = _read_prompt(task)
                if prompt is not None:
                    return await self._continue_chain(job, task, prompt)
            else:
                result = _read_result(job, task)
            if result is None:
                verdict = Verdict.FAILED
        applied, user_id = await retry_transient(
            lambda: self._apply(job, verdict, task, result),
            "apply_outcome",
            self._settings.db_retry_seconds,
        )
        if not applied:
            return None
        job.applied = True
        log.info("outcome_applied", kind=job.kind, verdict=verdict)
        if task is not None and task.status in {TaskStatus.FAILED, TaskStatus.CANCELLED}:
            await self._mark_settled(job)
        return Applied(verdict, user_id, result)

    async def _apply(
        self,
        job: Job,
        verdict: Verdict,
        task: QueueTask | None,
        result: Result | None,
    ) -> tuple[bool, int | None]:
        """One transaction: (applied, who paid). Safe to run again: the mark matches its own
        token, and saving a result or refunding a charge is idempotent by its key."""
        async with self._db.begin() as session:
            if not await self._mark_applied(session, job):
                return False, None
            if job.kind is DeliveryKind.SUMMARY:  # nobody paid for it: nothing to refund
                summary = result if isinstance(result, SummaryResult) else None
                await _settle_summary(session, job, summary)
                return True, None
            if result is not None and task is not None:
                await _save_result(session, job, task, result)
                return True, task.user_id
            user_id = await repo.charged_user(session, job.charge_id)
            refund = await repo.refund(session, job.charge_id, _reason(verdict, task))
            log.info("task_refunded", charge_id=job.charge_id, outcome=str(refund))
            return True, user_id

    async def _mark_applied(self, session: AsyncSession, job: Job) -> bool:
        return job.applied or await delivery_rows.mark_applied(session, job.task_id, job.apply_id)

    async def _continue_chain(self, job: Job, task: QueueTask, prompt: str) -> Applied | None:
        """Enqueue the photo's image step, then hand the delivery row over to it."""
        image = Job(
            image_task_id(job.task_id),
            DeliveryKind.IMAGE,
            job.chat_id,
            started=job.started,
            notified=job.notified,
        )
        payload = ImagePayload(
            prompt=prompt,
            negative_prompt=self._settings.image_default_negative_prompt,
            **await self._photo_context(job.dialog_id),
        )
        # Enqueue before applying: if we crash in between, the prompt row is still open and
        # the restart enqueues the same image id again, which adds nothing.
        submitted = await enqueue_retrying(
            self._queue,
            image,
            task.user_id,
            TaskType.GENERATE_IMAGE,
            payload,
            retry_seconds=self._settings.enqueue_retry_seconds,
        )
        if submitted is Submitted.REFUSED:
            return await self.apply(job, Verdict.REFUSED)
        # QUEUED, or UNKNOWN: then the image step's own watcher finds its record or, once it
        # is surely gone, refunds it as lost.
        handed_over = await retry_transient(
            lambda: self._hand_over(job, image), "hand_over_chain", self._settings.db_retry_seconds
        )
        if not handed_over:
            return None  # another process continues this chain
        job.applied = True
        log.info("photo_chain_continued", image_task_id=image.task_id, enqueue=str(submitted))
        return Applied(Verdict.COMPLETED, task.user_id, next_job=image)

    async def _hand_over(self, job: Job, image: Job) -> bool:
        """Claim the prompt step's row and owe the chat the image step instead (idempotent)."""
        async with self._db.begin() as session:
            if not await self._mark_applied(session, job):
                return False
            # The prompt step sends no message: it is marked sent with the hand-over.
            await delivery_rows.mark_sent(session, job.task_id)
            await delivery_rows.expect(
                session, image.task_id, job.chat_id, encode_kind(DeliveryKind.IMAGE)
            )
        return True

    async def _photo_context(self, dialog_id: int | None) -> dict[str, int]:
        """dialog_id and girl_id of the image, if the dialog still exists."""
        if dialog_id is None:
            return {}
        async with self._db() as session:
            dialog = await session.get(Dialog, dialog_id)
        if dialog is None:  # the user deleted their data meanwhile; the photo is still owed
            return {}
        return {"dialog_id": dialog.id, "girl_id": dialog.character_id}

    async def _mark_settled(self, job: Job) -> None:
        try:
            await self._queue.mark_settled(job.task_type, job.task_id)
        except (RedisError, OSError) as exc:
            # The refund stands either way; an unmarked record only allows a needless replay.
            log.warning("settle_mark_failed", error=redact(str(exc)))


_RESULTS: dict[DeliveryKind, type[Result]] = {
    DeliveryKind.REPLY: ReplyResult,
    DeliveryKind.REGENERATE: ReplyResult,
    DeliveryKind.CONTINUE: ReplyResult,
    DeliveryKind.EDIT: ReplyResult,
    DeliveryKind.IMAGE: ImageResult,
    DeliveryKind.SUMMARY: SummaryResult,
    DeliveryKind.TRANSCRIPT: TranscriptResult,
    DeliveryKind.VOICE: SpeechResult,
}


def _read_result(job: Job, task: QueueTask) -> Result | None:
    model = _RESULTS[job.kind]
    try:
        return model.from_json(task.result)
    except InvalidDataError as exc:
        log.error("result_unreadable", kind=job.kind, error=str(exc))
        return None


def _read_prompt(task: QueueTask) -> str | None:
    try:
        return ImagePromptResult.from_json(task.result).prompt
    except InvalidDataError as exc:
        log.error("result_unreadable", kind=DeliveryKind.PHOTO_PROMPT, error=str(exc))
        return None


async def _settle_summary(session: AsyncSession, job: Job, result: SummaryResult | None) -> None:
    """Store a dialog's new summary, or free the dialog for the next summary task; both only
    if this task is still the dialog's one in flight (idempotent by the task id)."""
    # The bot's own record of the dialog first: a result only echoes it.
    dialog_id = job.dialog_id
    if dialog_id is None and result is not None:
        dialog_id = result.dialog_id
    if dialog_id is None:
        log.error("summary_without_dialog")
        return
    if result is None:
        await memory.drop_summary_task(session, dialog_id, job.task_id)
        return
    stored = await memory.store_summary(
        session, dialog_id, job.task_id, result.summary, result.upto
    )
    log.info("summary_applied", dialog_id=dialog_id, upto=result.upto, stored=stored)


async def _save_result(session: AsyncSession, job: Job, task: QueueTask, result: Result) -> None:
    """The effect of a completed task; each is idempotent by the task id."""
    # A summary is applied by _settle_summary; a transcript is answered after the claim
    # (producer.voice), and a voice note only sent: neither changes the database here.
    if isinstance(result, SummaryResult | TranscriptResult | SpeechResult):
        return
    if isinstance(result, ReplyResult) and job.kind in _REVISIONS:
        await _revise(session, job, task, result)
        return
    if isinstance(result, ReplyResult):
        await repo.save_assistant_reply(session, result.dialog_id, job.task_id, result.reply)
        return
    dialog_id = result.dialog_id or task.data.get("dialog_id")
    if isinstance(dialog_id, int):
        await repo.bump_photo_counter(session, dialog_id, job.task_id)


_REVISIONS = {
    DeliveryKind.REGENERATE: steering.replace_reply,
    DeliveryKind.CONTINUE: steering.extend_reply,
}


async def _revise(session: AsyncSession, job: Job, task: QueueTask, result: ReplyResult) -> None:
    """A regenerated reply takes the place of the one it redid; a continuation is appended
    to it. Once: the old reply's task id names the row until this changes it."""
    target = task.data.get("replaces")
    if not isinstance(target, str):
        log.error("revision_without_target", kind=job.kind)
        return
    revised = await _REVISIONS[job.kind](session, target, job.task_id, result.reply)
    log.info("reply_revised", kind=job.kind, replaced=target, revised=revised)


def _reason(verdict: Verdict, task: QueueTask | None) -> str:
    if verdict is Verdict.LOST:
        return "result lost"
    if verdict is Verdict.REFUSED:
        return "could not enqueue"
    if task is None:
        return "failed"
    return f"{task.type} {task.status}: {task.error or 'no result'}"[:_REASON_CHARS]
