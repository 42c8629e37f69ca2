"""Delivery of task results: background waits, applying once, recovery, reply order.

Every task the bot enqueues has a `deliveries` row written in the same transaction as its
charge. Whatever learns how the task ended (the live wait, a second bot process, this process
after a restart, the recheck that finds a task lost) hands it to `Outcomes.apply`, which
marks the row applied as it applies the outcome, in one transaction; only the applier sends.
A chat's replies are sent in the order their messages were handled; photos are not held
behind them.

The outcome is applied once; the message is sent at least once. Telegram takes no idempotency
key and a send cannot share the database's transaction: a process that dies after Telegram
accepted a message and before the row is marked sent leaves a row applied and not sent, which
the next start sends again once it is older than UNSENT_AFTER, so the user may see that
message twice.
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

from db import delivery_rows
from db.retry import retry_transient
from producer import texts
from producer.channel import ChatAction, ReplyButtons, Sender, chat_action_kept
from producer.jobs import DeliveryKind, Job, decode_kind
from producer.outcomes import Applied, Outcomes, Verdict, verdict_of
from producer.stream_records import StreamRecords, ViewMode
from producer.streaming import LiveFeed, PlainReplyView, Presenter, ReplyView
from producer.throttle import PhotoLock
from producer.voice_sends import VOICE_KINDS, VoiceSends
from shared.closing import stop_loops
from shared.config import Settings
from shared.errors import TaskTimeoutError
from shared.queue import QueueService
from shared.queue.audio import AudioStore
from shared.queue.keys import BotKeys
from shared.redact import redact
from shared.tasks import ImageResult, QueueTask, ReplyResult, TaskType, now

log = structlog.get_logger(__name__)

# On shutdown, a message whose delivery is already applied gets this long to be sent: the
# mark means nobody else will send it, so cancelling it would lose it.
SEND_GRACE_SECONDS = 15.0
# A delivery applied and not marked sent after this long belongs to a process that died mid-send
# (sending, retries included, takes seconds): the next start sends that message again.
UNSENT_AFTER = timedelta(minutes=2)
# A streamed reply shows "typing" only if no text came this soon: a chat action takes the
# chat's slot, and the first text should not wait behind it.
STREAM_TYPING_DELAY = 1.0
# How long the end of a reply's preview may hold its final text back.
PRESENTER_STOP_SECONDS = 2.0


class Deliveries:
    """Owns the background delivery tasks of one bot process."""

    def __init__(
        self,
        settings: Settings,
        db: async_sessionmaker[AsyncSession],
        queue: QueueService,
        sender: Sender,
        photo_lock: PhotoLock,
        *,
        live: LiveFeed | None = None,
    ) -> None:
        self._settings = settings
        self._db = db
        self._queue = queue
        self._sender = sender
        self._photo_lock = photo_lock
        # Replies are shown while they are written only with a live feed.
        self._live = live
        self._records = StreamRecords(queue.redis, BotKeys.from_settings(settings))
        self._outcomes = Outcomes(settings, db, queue)
        self.voice = VoiceSends(sender, AudioStore(queue.redis, settings))
        self._tasks: set[asyncio.Task[None]] = set()
        self._sending: set[asyncio.Task[Any]] = set()
        # Per chat, the last reply watched: the next reply is sent only after it.
        self._last_reply: dict[int, asyncio.Future[None]] = {}
        self._closing = False

    def watch(self, job: Job, verdict: Verdict | None = None) -> None:
        """Deliver `job` in the background; the caller returns at once.

        With a `verdict` (an enqueue refused) the outcome is already known and is applied
        without waiting. Replies are sent in the order they are watched, per chat.
        """
        previous = done = None
        if job.is_reply:
            previous = self._last_reply.get(job.chat_id)
            done = asyncio.get_running_loop().create_future()
            self._last_reply[job.chat_id] = done
        task = asyncio.create_task(
            self._guarded(job, verdict, previous, done), name=f"deliver-{job.task_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def delivered(self, task_id: str, timeout: float) -> None:
        """Wait, at most `timeout`, until this process's delivery of `task_id` has ended."""
        running = {task for task in self._tasks if task.get_name() == f"deliver-{task_id}"}
        if running:
            await asyncio.wait(running, timeout=timeout)

    async def resume(self) -> int:
        """Watch every delivery an earlier run left unapplied, or applied and never sent
        (it died mid-send: at-least-once beats losing a paid message); return how many."""
        async with self._db.begin() as session:
            rows = await delivery_rows.waiting(session)
            unsent = await delivery_rows.applied_unsent(session, now() - UNSENT_AFTER)
        for row, applied in [(r, False) for r in rows] + [(r, True) for r in unsent]:
            kind, dialog_id = decode_kind(row.kind)
            job = Job(row.task_id, kind, row.chat_id, dialog_id, row.created_at, notified=True)
            job.applied = applied
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
        """Stop waiting; unapplied rows stay in the database for the next start.

        Deliveries already applied are in the middle of sending: they may finish (bounded by
        SEND_GRACE_SECONDS), because nobody else would send them after a restart.
        """
        # The flag as well as the cancels: a waiting loop whose cancel was lost inside a call
        # (see shared.closing) ends by it, and closing never waits on it forever.
        self._closing = True
        tasks = list(self._tasks)
        sending = [task for task in tasks if task in self._sending]
        for task in tasks:
            if task not in self._sending:
                task.cancel()
        if sending:
            await asyncio.wait(sending, timeout=SEND_GRACE_SECONDS)
        await stop_loops(tasks, "deliveries")

    @contextlib.contextmanager
    def _sending_now(self) -> Iterator[None]:
        """Mark the running delivery as applying its outcome and sending until the block ends."""
        task = asyncio.current_task()
        if task is not None:
            self._sending.add(task)
        try:
            yield
        finally:
            self._sending.discard(task)

    async def tell_queue_place(self, chat_id: int) -> None:
        try:
            depth = await self._queue.get_queue_depth(TaskType.GENERATE_IMAGE)
        except (RedisError, OSError) as exc:  # only a courtesy: the photo is still on its way
            log.warning("queue_place_unknown", error=redact(str(exc)))
            return
        # `waiting` counts this user's task too: say something only if others are ahead.
        if depth.waiting > 1:
            await self._sender.send_text(chat_id, texts.queue_place(depth.waiting))

    async def _guarded(
        self,
        job: Job,
        verdict: Verdict | None,
        previous: asyncio.Future[None] | None,
        done: asyncio.Future[None] | None,
    ) -> None:
        with structlog.contextvars.bound_contextvars(task_id=job.task_id, chat_id=job.chat_id):
            try:
                await self._deliver(job, verdict, previous)
            except Exception:  # a background task has nobody else to report to
                log.exception("delivery_failed", kind=job.kind)
            finally:
                if done is not None:
                    self._reply_finished(job.chat_id, done)

    def _reply_finished(self, chat_id: int, done: asyncio.Future[None]) -> None:
        done.set_result(None)
        if self._last_reply.get(chat_id) is done:
            del self._last_reply[chat_id]

    async def _deliver(
        self,
        job: Job,
        verdict: Verdict | None = None,
        previous: asyncio.Future[None] | None = None,
    ) -> None:
        view = await self._open_view(job) if verdict is None else None
        task = None
        if verdict is None:
            task = await self._result(job, view, previous)
            verdict = verdict_of(task)
        if previous is not None:
            # asyncio.wait, not await: cancelling this delivery must not cancel the previous.
            await asyncio.wait({previous})
        with self._sending_now():
            applied = await self._outcomes.apply(job, verdict, task)
            if applied is not None and applied.next_job is None:
                await self._send(job, applied, view)
                await self._mark_sent(job.task_id)
                log.info("outcome_sent", kind=job.kind, verdict=applied.verdict)
        if view is not None:
            await self._close_view(job)
        if applied is None:
            log.info("delivery_already_applied", kind=job.kind)
        elif applied.next_job is not None:
            await self.tell_queue_place(job.chat_id)
            await self._deliver(applied.next_job)

    async def show_in_message(self, job: Job, message_id: int) -> None:
        """Show `job`'s reply in the message `message_id` (edited in place), not a new one:
        a regenerated reply takes the place of the one it replaces. Call before enqueueing."""
        try:
            state = await self._records.open(job.chat_id, job.task_id, ViewMode.EDIT)
            if state.message_id is None:
                state.message_id = message_id
                await self._records.save(state)
        except (RedisError, OSError) as exc:  # it comes as a new message instead
            log.warning("stream_view_unavailable", error=redact(str(exc)))

    async def _open_view(self, job: Job) -> ReplyView | None:
        """The view a reply is shown on while it is written; its record (a restart continues
        the same draft or message, /stop and the stop button find the task) is in Redis."""
        if not job.is_reply:
            return None
        # Without streaming a regenerated reply still replaces the old one's message.
        if self._live is None and job.kind is not DeliveryKind.REGENERATE:
            return None
        mode = self._sender.view_mode(job.chat_id)
        try:
            state = await self._records.open(job.chat_id, job.task_id, mode)
        except (RedisError, OSError) as exc:  # shown when done, as without streaming
            log.warning("stream_view_unavailable", error=redact(str(exc)))
            return None
        return self._sender.reply_view(state, self._records)

    async def _close_view(self, job: Job) -> None:
        try:
            await self._records.close(job.chat_id, job.task_id)
        except (RedisError, OSError) as exc:  # the records expire by themselves
            log.warning("stream_view_close_failed", error=redact(str(exc)))

    async def _result(
        self, job: Job, view: ReplyView | None, previous: asyncio.Future[None] | None
    ) -> QueueTask | None:
        """The final task (see `_await_result`), the reply shown meanwhile if it streams."""
        if view is None or self._live is None:
            return await self._await_result(job, None)
        presenter = Presenter(view)
        showing = asyncio.create_task(self._present(job, presenter, previous))
        try:
            return await self._await_result(job, presenter)
        finally:
            presenter.stop()
            showing.cancel()
            # Bounded: the final text must not wait on a preview (see Presenter.stop).
            _, running = await asyncio.wait({showing}, timeout=PRESENTER_STOP_SECONDS)
            if running:
                log.warning("presenter_slow_to_stop")

    async def _present(
        self, job: Job, presenter: Presenter, previous: asyncio.Future[None] | None
    ) -> None:
        assert self._live is not None  # noqa: S101 - only started with a live feed
        if previous is not None:  # one reply shows at a time in a chat, in order
            await asyncio.wait({previous})
        hint = asyncio.create_task(self._typing_until_text(job, presenter))
        try:
            await presenter.run(self._live.follow(job.task_type, job.task_id))
        finally:
            hint.cancel()
            # Awaited: a chat action left running could outlive the process's Redis and keep
            # the chat's budget marked in flight until its lease ends.
            with contextlib.suppress(asyncio.CancelledError):
                await hint

    async def _typing_until_text(self, job: Job, presenter: Presenter) -> None:
        action = chat_action_kept(
            self._sender, job.chat_id, ChatAction.TYPING, delay=STREAM_TYPING_DELAY
        )
        async with action:
            await presenter.first_text()

    def _wait_budget(self, job: Job) -> float:
        if job.is_reply or job.kind is DeliveryKind.TRANSCRIPT:
            return self._settings.reply_wait_seconds
        return self._settings.image_wait_seconds

    async def _await_result(self, job: Job, presenter: Presenter | None) -> QueueTask | None:
        """The final task, or None once it is surely lost (no record, past the grace)."""
        if not job.notified:
            remaining = max(0.1, job.started + self._wait_budget(job) - time.monotonic())
            try:
                if presenter is not None:  # the presenter shows what there is to show
                    return await self._wait(job, remaining)
                async with chat_action_kept(self._sender, job.chat_id, job.chat_action):
                    return await self._wait(job, remaining)
            except TaskTimeoutError:
                job.notified = True
                # A reply still being written says so itself; a message would end its draft.
                if presenter is None or not presenter.showed_text:
                    await self._sender.send_text(job.chat_id, texts.TAKES_LONGER)
        while not await self._is_lost(job):
            if self._closing:  # not lost: the row stays for the next start
                raise asyncio.CancelledError
            try:
                return await self._wait(job, self._settings.delivery_recheck_seconds)
            except TaskTimeoutError:
                continue
        log.warning("delivery_lost", kind=job.kind)
        return None

    async def _wait(self, job: Job, timeout: float) -> QueueTask:
        return await self._queue.wait_for_task_result(job.task_id, timeout, job.task_type)

    async def _is_lost(self, job: Job) -> bool:
        """No record: never enqueued (a crash before XADD, or Redis away through every enqueue
        attempt) or expired while the bot was down."""
        try:
            if await self._queue.get_task(job.task_id, job.task_type) is not None:
                return False
        except (RedisError, OSError) as exc:
            # Redis being away says nothing about the task: keep waiting for it.
            log.warning("task_check_failed", error=redact(str(exc)))
            return False
        return (now() - job.created_at).total_seconds() > self._settings.lost_grace_seconds

    async def _mark_sent(self, task_id: str) -> None:
        """Mark the message sent; retried, since a delivery applied and never marked sent is
        sent again by the next start."""

        async def confirm() -> None:
            async with self._db.begin() as session:
                await delivery_rows.mark_sent(session, task_id)

        await retry_transient(confirm, "confirm_sent", self._settings.db_retry_seconds)

    async def _send(self, job: Job, applied: Applied, view: ReplyView | None) -> None:
        if job.is_silent:
            return
        if job.kind in VOICE_KINDS:
            await self.voice.send(job, applied)
        elif not job.is_photo:
            await self._send_reply(job, applied, view or PlainReplyView(self._sender, job.chat_id))
        elif applied.verdict is not Verdict.COMPLETED:
            await self._release_photo(job, applied.user_id)
            await self._sender.send_text(job.chat_id, _failure_text(job, applied.verdict))
        elif isinstance(applied.result, ImageResult):
            try:
                await self._sender.send_photo(
                    job.chat_id, base64.b64decode(applied.result.image_base64)
                )
            finally:
                await self._release_photo(job, applied.user_id)

    async def _send_reply(self, job: Job, applied: Applied, view: ReplyView) -> None:
        result = applied.result
        if applied.verdict is Verdict.COMPLETED and isinstance(result, ReplyResult):
            text = texts.marked_reply(result.reply, result.stopped, result.cut)
            can_continue = result.stopped or result.cut
            await view.deliver(text, ReplyButtons(result.dialog_id, job.task_id, can_continue))
        elif job.kind is DeliveryKind.REGENERATE:  # the reply it would replace stays shown
            failed = PlainReplyView(self._sender, job.chat_id)
            await failed.deliver(_failure_text(job, applied.verdict), None)
        else:
            await view.deliver(_failure_text(job, applied.verdict), None)

    async def _release_photo(self, job: Job, user_id: int | None) -> None:
        """Free the user's photo lock (keyed by the user, not the chat: groups differ)."""
        if not job.is_photo:
            return
        if user_id is None:  # nothing was charged: the lock expires on its own
            log.warning("photo_lock_owner_unknown", charge_id=job.charge_id)
            return
        await self._photo_lock.release(user_id, job.charge_id)


def _failure_text(job: Job, verdict: Verdict) -> str:
    if verdict is Verdict.REFUSED:
        return texts.ENQUEUE_FAILED
    if verdict is Verdict.STOPPED:
        return texts.REPLY_STOPPED_REFUNDED
    return texts.IMAGE_FAILED if job.is_photo else texts.REPLY_FAILED
