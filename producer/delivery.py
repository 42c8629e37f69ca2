"""Exactly-once delivery of task results: background waits, claims, the photo chain, recovery.

Every task the bot enqueues has a `deliveries` row written in the same transaction as its
charge. Whoever flips that row with `claim_delivery` (a live waiter, a second bot process, or
this process after a restart) is the only one that sends. The photo chain (prompt, then image)
keeps its state in the row of the prompt step (`photo_prompt:<dialog_id>`) and derives the
image task id from the prompt task id, so continuing it twice enqueues one image.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import structlog
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from producer import texts
from producer.channel import ChatAction, Sender, chat_action_kept, split_text
from producer.jobs import DeliveryKind, Job, decode_kind, encode_kind, image_task_id
from producer.throttle import PhotoLock
from shared.config import Settings
from shared.db import repositories as repo
from shared.db.models import Dialog
from shared.errors import TaskTimeoutError
from shared.queue import QueueService
from shared.tasks import (
    ImagePayload,
    ImagePromptResult,
    ImageResult,
    QueueTask,
    ReplyResult,
    TaskStatus,
    TaskType,
    now,
)

log = structlog.get_logger(__name__)

# After the first notice, how often a waiter checks that its task still exists.
RECHECK_SECONDS = 60.0
# A row younger than this may belong to another process that has not enqueued yet.
LOST_GRACE_SECONDS = 30.0
# On shutdown, a message whose delivery is already claimed gets this long to be sent: the
# claim means nobody else will send it, so cancelling it would lose it.
SEND_GRACE_SECONDS = 15.0
# A claim not confirmed as sent after this long belongs to a process that died mid-send
# (sending, retries included, takes seconds): the next start sends that message again.
CLAIM_LEASE = timedelta(minutes=2)


class Deliveries:
    """Owns the background delivery tasks of one bot process."""

    def __init__(
        self,
        settings: Settings,
        db: async_sessionmaker[AsyncSession],
        queue: QueueService,
        sender: Sender,
        photo_lock: PhotoLock,
    ) -> None:
        self._settings = settings
        self._db = db
        self._queue = queue
        self._sender = sender
        self._photo_lock = photo_lock
        self._tasks: set[asyncio.Task[None]] = set()
        self._sending: set[asyncio.Task[Any]] = set()

    def watch(self, job: Job) -> None:
        """Deliver `job` in the background; the caller returns at once."""
        task = asyncio.create_task(self._guarded(job), name=f"deliver-{job.task_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resume(self) -> int:
        """Watch every delivery an earlier run left unclaimed, or claimed and never sent
        (it died mid-send: at-least-once beats losing a paid message); return how many."""
        async with self._db.begin() as session:
            rows = await repo.undelivered(session)
            unsent = await repo.unsent_claims(session, now() - CLAIM_LEASE)
        for row, claimed in [(r, False) for r in rows] + [(r, True) for r in unsent]:
            kind, dialog_id = decode_kind(row.kind)
            job = Job(row.task_id, kind, row.chat_id, dialog_id, row.created_at, notified=True)
            job.claimed = claimed
            self.watch(job)
        log.info("deliveries_resumed", count=len(rows), resent=len(unsent))
        return len(rows) + len(unsent)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no delivery is running; False if some still run after `timeout`."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        return not pending

    async def close(self) -> None:
        """Stop waiting; unclaimed rows stay in the database for the next start.

        Deliveries already claimed are in the middle of sending: they may finish (bounded by
        SEND_GRACE_SECONDS), because nobody else would send them after a restart.
        """
        tasks = list(self._tasks)
        sending = [task for task in tasks if task in self._sending]
        for task in tasks:
            if task not in self._sending:
                task.cancel()
        if sending:
            await asyncio.wait(sending, timeout=SEND_GRACE_SECONDS)
        for task in sending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @contextlib.contextmanager
    def _sending_now(self) -> Iterator[None]:
        """Mark the running delivery as claimed and sending until the block ends."""
        task = asyncio.current_task()
        if task is not None:
            self._sending.add(task)
        try:
            yield
        finally:
            self._sending.discard(task)

    async def tell_queue_place(self, chat_id: int) -> None:
        depth = await self._queue.get_queue_depth(TaskType.GENERATE_IMAGE)
        # `waiting` counts this user's task too: say something only if others are ahead.
        if depth.waiting > 1:
            await self._sender.send_text(chat_id, texts.queue_place(depth.waiting))

    async def _guarded(self, job: Job) -> None:
        with structlog.contextvars.bound_contextvars(task_id=job.task_id, chat_id=job.chat_id):
            try:
                await self._deliver(job)
            except Exception:  # a background task has nobody else to report to
                log.exception("delivery_failed", kind=job.kind)

    async def _deliver(self, job: Job) -> None:
        task = await self._result(job)
        if task is None:
            return
        if task.status is TaskStatus.FAILED:
            await self._announce_failure(job, task)
        elif job.kind is DeliveryKind.PHOTO_PROMPT:
            await self._continue_photo(job, task)
        else:
            await self._send_result(job, task)

    def _wait_budget(self, job: Job) -> float:
        if job.kind is DeliveryKind.REPLY:
            return self._settings.reply_wait_seconds
        return self._settings.image_wait_seconds

    async def _result(self, job: Job) -> QueueTask | None:
        """The final task, or None if it can never come (then the user was told and refunded)."""
        if not job.notified:
            remaining = max(0.1, job.started + self._wait_budget(job) - time.monotonic())
            action = (
                ChatAction.TYPING if job.kind is DeliveryKind.REPLY else ChatAction.UPLOAD_PHOTO
            )
            try:
                async with chat_action_kept(self._sender, job.chat_id, action):
                    return await self._wait(job, remaining)
            except TaskTimeoutError:
                job.notified = True
                await self._sender.send_text(job.chat_id, texts.TAKES_LONGER)
        while not await self._is_lost(job):
            try:
                return await self._wait(job, RECHECK_SECONDS)
            except TaskTimeoutError:
                continue
        await self._give_up(job)
        return None

    async def _wait(self, job: Job, timeout: float) -> QueueTask:
        return await self._queue.wait_for_task_result(job.task_id, timeout, job.task_type)

    async def _is_lost(self, job: Job) -> bool:
        """No record: never enqueued (a crash before XADD) or expired while the bot was down."""
        try:
            if await self._queue.get_task(job.task_id, job.task_type) is not None:
                return False
        except (RedisError, OSError) as exc:
            # Redis being away says nothing about the task: keep waiting for it.
            log.warning("task_check_failed", error=str(exc))
            return False
        return (now() - job.created_at).total_seconds() > LOST_GRACE_SECONDS

    async def _give_up(self, job: Job) -> None:
        # The consumer refunds only tasks it saw fail; a lost task is refunded here, once.
        async with self._db.begin() as session:
            if not job.claimed and not await repo.claim_delivery(session, job.task_id):
                return
            outcome = await repo.refund(session, job.charge_id, "result lost")
        log.warning("delivery_lost", kind=job.kind, refund=str(outcome))
        with self._sending_now():
            await self._after_photo(job, job.chat_id)
            await self._sender.send_text(job.chat_id, self._failure_text(job))
        await self._confirm(job.task_id)

    async def _claim(self, job: Job) -> bool:
        if job.claimed:
            return True
        async with self._db.begin() as session:
            return await repo.claim_delivery(session, job.task_id)

    async def _confirm(self, task_id: str) -> None:
        async with self._db.begin() as session:
            await repo.confirm_delivery(session, task_id)

    async def _announce_failure(self, job: Job, task: QueueTask) -> None:
        # The consumer has already refunded the charge before announcing the failure.
        if not await self._claim(job):
            return
        log.info("task_failure_announced", kind=job.kind, error=task.error)
        with self._sending_now():
            await self._after_photo(job, task.user_id)
            await self._sender.send_text(job.chat_id, self._failure_text(job))
        await self._confirm(job.task_id)

    @staticmethod
    def _failure_text(job: Job) -> str:
        return texts.IMAGE_FAILED if job.is_photo else texts.REPLY_FAILED

    async def _after_photo(self, job: Job, user_id: int) -> None:
        if job.is_photo:
            await self._photo_lock.release(user_id, job.charge_id)

    async def _send_result(self, job: Job, task: QueueTask) -> None:
        if not await self._claim(job):
            log.info("delivery_already_claimed", kind=job.kind)
            return
        with self._sending_now():
            await self._send_claimed(job, task)
        await self._confirm(job.task_id)
        log.info("result_delivered", kind=job.kind)

    async def _send_claimed(self, job: Job, task: QueueTask) -> None:
        if job.kind is DeliveryKind.REPLY:
            reply = ReplyResult.model_validate(task.result).reply
            parts = split_text(reply) or [texts.EMPTY_REPLY]
            for number, part in enumerate(parts, start=1):
                await self._sender.send_text(job.chat_id, part, photo_button=number == len(parts))
            return
        image = ImageResult.model_validate(task.result)
        try:
            await self._sender.send_photo(job.chat_id, base64.b64decode(image.image_base64))
        finally:
            await self._after_photo(job, task.user_id)

    async def _continue_photo(self, job: Job, prompt_task: QueueTask) -> None:
        """Enqueue the image step, hand the row over to it, then deliver the image."""
        image_id = image_task_id(job.task_id)
        payload = ImagePayload(
            prompt=ImagePromptResult.model_validate(prompt_task.result).prompt,
            negative_prompt=self._settings.image_default_negative_prompt,
            **await self._photo_context(job.dialog_id),
        )
        # Enqueue before claiming: if we crash in between, the prompt row is still open and
        # the restart enqueues the same image id again, which adds nothing.
        await self._queue.enqueue_task(
            TaskType.GENERATE_IMAGE,
            prompt_task.user_id,
            payload.model_dump(exclude_none=True),
            task_id=image_id,
            charge_id=image_id,
        )
        async with self._db.begin() as session:
            if not job.claimed and not await repo.claim_delivery(session, job.task_id):
                return  # another process continues this chain
            # The prompt step sends no message: its claim is confirmed with the hand-over.
            await repo.confirm_delivery(session, job.task_id)
            await repo.record_pending_delivery(
                session, image_id, job.chat_id, encode_kind(DeliveryKind.IMAGE)
            )
        await self.tell_queue_place(job.chat_id)
        image_job = Job(
            image_id, DeliveryKind.IMAGE, job.chat_id, started=job.started, notified=job.notified
        )
        await self._deliver(image_job)

    async def _photo_context(self, dialog_id: int | None) -> dict[str, int]:
        """dialog_id and girl_id of the image, if the dialog still exists."""
        if dialog_id is None:
            return {}
        async with self._db() as session:
            dialog = await session.get(Dialog, dialog_id)
        if dialog is None:  # the user deleted their data meanwhile; the photo is still owed
            return {}
        return {"dialog_id": dialog.id, "girl_id": dialog.character_id}
