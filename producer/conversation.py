"""The bot's use cases, shared by the Telegram handlers and the console.

Use cases that queue work talk to the user through the Sender and return at once; the result
comes later from Deliveries. Expected refusals (not enough balance) are raised as
PipelineError subclasses for the caller's error handling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import characters as cast
from db import delivery_rows, dialogs, payments
from db import repositories as repo
from db.models import Character, Currency, Dialog, User
from db.retry import retry_transient
from producer import texts
from producer.channel import Sender, chat_action_kept
from producer.delivery import Deliveries
from producer.dialogs import Dialogs
from producer.edits import Edits
from producer.jobs import DeliveryKind, Job, encode_kind, task_id_for
from producer.memory import Memory, Recall, fit_history
from producer.outcomes import Verdict
from producer.steering import Steering
from producer.submit import Submitted, enqueue_retrying
from producer.throttle import PhotoLock, RateLimiter
from shared.config import Settings
from shared.queue import QueueDepth, QueueService
from shared.tasks import (
    ChatTurn,
    ImagePayload,
    ImagePromptPayload,
    Payload,
    ReplyPayload,
    TaskType,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

# How much of the dialogue the image prompt writer sees.
PROMPT_DIALOGUE_MESSAGES = 10
# Room left in a task for its envelope (ids, timestamps, JSON punctuation).
_ENVELOPE_BYTES = 4096
# "typing" starts only if an enqueue is slow (Redis away): a quick one needs no hint here,
# the delivery watcher shows it right after.
_ACTION_DELAY = 0.5


@dataclass(frozen=True, slots=True)
class Profile:
    user_id: int
    name: str
    language: str | None = None


@dataclass(frozen=True, slots=True)
class Incoming:
    """A user's text: `message_id` is unique per chat and makes the task id deterministic."""

    chat_id: int
    message_id: int
    text: str
    user: Profile


class Conversation:
    def __init__(
        self,
        *,
        settings: Settings,
        db: async_sessionmaker[AsyncSession],
        queue: QueueService,
        sender: Sender,
        deliveries: Deliveries,
        limiter: RateLimiter,
        photo_lock: PhotoLock,
    ) -> None:
        self._settings = settings
        self._db = db
        self._queue = queue
        self._sender = sender
        self._deliveries = deliveries
        self._limiter = limiter
        self._photo_lock = photo_lock
        self._charging = asyncio.Semaphore(settings.charges_at_once)
        self.memory = Memory(settings, db, queue, deliveries)
        self.dialogs = Dialogs(db)
        self.edits = Edits(
            settings=settings,
            queue=queue,
            in_transaction=self.in_transaction,
            enqueue=self.enqueue,
        )
        self.steering = Steering(
            settings=settings,
            db=db,
            deliveries=deliveries,
            in_transaction=self.in_transaction,
            enqueue=self.enqueue,
        )

    # Plain requests.

    async def user_of(self, session: AsyncSession, profile: Profile) -> User:
        """The user, registered on first sight with the start balances."""
        user = await repo.get_or_create_user(
            session,
            profile.user_id,
            profile.name,
            profile.language,
            start_energy=self._settings.start_energy,
            start_diamonds=self._settings.start_diamonds,
        )
        # Free users are never stuck: energy is topped up to DAILY_ENERGY once a day.
        await payments.top_up_daily(session, user, self._settings.daily_energy)
        return user

    async def dialog_owner(self, dialog_id: int) -> int | None:
        """The user whose dialog it is; None if there is no such dialog (deleted)."""
        async with self._db.begin() as session:
            dialog = await session.get(Dialog, dialog_id)
            return None if dialog is None else dialog.user_id

    async def balance(self, profile: Profile) -> tuple[int, int]:
        async with self._db.begin() as session:
            user = await self.user_of(session, profile)
            return user.energy, user.diamonds

    async def delete_data(self, user_id: int) -> int:
        async with self._db.begin() as session:
            deleted = await repo.delete_user_data(session, user_id)
        log.info("user_data_deleted", dialogs=deleted)
        return deleted

    async def queue_depths(self) -> list[QueueDepth]:
        return [await self._queue.get_queue_depth(task_type) for task_type in TaskType]

    # Queued work.

    async def reply(self, message: Incoming) -> None:
        """Charge energy, store the message and queue the character's reply."""
        if len(message.text) > self._settings.max_message_chars:
            await self.say(
                message.chat_id, texts.message_too_long(self._settings.max_message_chars)
            )
            return
        if not await self._limiter.allow(message.user.user_id):
            await self.say(message.chat_id, texts.THROTTLED)
            return
        task_id = task_id_for("reply", message.chat_id, message.message_id)
        if not await self.answer(message, Job(task_id, DeliveryKind.REPLY, message.chat_id)):
            await self.say(message.chat_id, texts.NO_DIALOG)

    async def answer(self, message: Incoming, job: Job) -> bool:
        """Charge `job` (once per its charge id: a voice message's was taken already),
        store the message and queue the reply; False if the user has no dialog."""
        prepared = await self._prepare_reply(message, job)
        if prepared is None:
            return False
        payload, recall = prepared
        await self.enqueue(job, message.user.user_id, TaskType.GENERATE_REPLY, payload)
        await self.memory.submit(recall, message.user.user_id)
        return True

    async def in_transaction(self, what: str, body: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `body` in one transaction, again through a database restart or lock: every
        write of a charging step is idempotent by its key (charge id, Telegram message id,
        task id), so a retry after a commit whose reply was lost repeats nothing.

        At most `charges_at_once` run together; the rest wait their turn in arrival order
        (see Settings.charges_at_once)."""

        async def attempt() -> T:
            async with self._charging, self._db.begin() as session:
                return await body(session)

        return await retry_transient(attempt, what, self._settings.db_retry_seconds)

    async def _prepare_reply(
        self, message: Incoming, job: Job
    ) -> tuple[ReplyPayload, Recall] | None:
        settings = self._settings
        user_id = message.user.user_id

        async def charge(session: AsyncSession) -> tuple[Dialog, str, Recall] | None:
            await self.user_of(session, message.user)
            found = await dialogs.dialog_and_character(session, user_id)
            if found is None:
                return None
            dialog, character = found
            prompt = await cast.persona_prompt(session, character, user_id)
            # Without the message being answered: a retry after a lost commit reply finds
            # it stored already, and it goes to the model as the user's message.
            recall = await self.memory.recall(session, dialog, job.chat_id, message.message_id)
            await repo.charge(
                session,
                user_id,
                Currency.ENERGY,
                settings.reply_energy_cost,
                charge_id=job.charge_id,
                reason="reply",
            )
            await repo.save_user_message(session, dialog.id, message.text, message.message_id)
            await delivery_rows.expect(session, job.task_id, job.chat_id, job.kind)
            return dialog, prompt, recall

        charged = await self.in_transaction("charge_reply", charge)
        if charged is None:
            return None
        dialog, prompt, recall = charged
        budget = settings.max_payload_bytes - _ENVELOPE_BYTES
        budget -= len(prompt.encode()) + len(message.text.encode())
        budget -= len((recall.summary or "").encode())
        payload = ReplyPayload(
            system_prompt=prompt,
            history=fit_history(recall.turns, budget),
            dialog_id=dialog.id,
            user_message=message.text,
            summary=recall.summary,
        )
        return payload, recall

    async def photo(
        self, chat_id: int, profile: Profile, request_id: str, dialog_id: int | None = None
    ) -> None:
        """The photo button: a photo from the user's dialog `dialog_id` (default: the active
        one), one at a time per user, charged once per press."""
        prompt_id = task_id_for("photo", chat_id, request_id)
        job = Job(prompt_id, DeliveryKind.PHOTO_PROMPT, chat_id)
        if not await self._photo_lock.acquire(profile.user_id, job.charge_id):
            await self.say(chat_id, texts.PHOTO_IN_PROGRESS)
            return
        charged = False
        try:
            payload = await self._prepare_photo(profile, job, dialog_id)
            charged = payload is not None
        finally:
            if not charged:
                await self._photo_lock.release(profile.user_id, job.charge_id)
        if payload is None:
            await self.say(chat_id, texts.NO_DIALOG)
            return
        # From here the photo's outcome releases the lock: sent, failed or refunded.
        await self.enqueue(job, profile.user_id, TaskType.GENERATE_IMAGE_PROMPT, payload)

    async def _prepare_photo(
        self, profile: Profile, job: Job, dialog_id: int | None
    ) -> ImagePromptPayload | None:
        async def charge(session: AsyncSession) -> tuple[Character, list[dict[str, str]]] | None:
            await self.user_of(session, profile)
            found = await dialogs.dialog_and_character(session, profile.user_id, dialog_id)
            if found is None:
                return None
            dialog, character = found
            recent = await repo.history(session, dialog.id, PROMPT_DIALOGUE_MESSAGES)
            await self._charge_diamonds(session, profile.user_id, job, "photo")
            job.dialog_id = dialog.id
            kind = encode_kind(job.kind, dialog.id)
            await delivery_rows.expect(session, job.task_id, job.chat_id, kind)
            return character, recent

        charged = await self.in_transaction("charge_photo", charge)
        if charged is None:
            return None
        character, recent = charged
        return ImagePromptPayload(
            girl_name=character.name,
            girl_description=character.appearance,
            recent_dialogue=[ChatTurn.from_json(turn) for turn in recent],
        )

    async def generate(self, message: Incoming) -> None:
        """/generate <text>: the character's appearance plus the user's words, as a photo."""
        text = message.text.strip()
        if not text:
            await self.say(message.chat_id, texts.GENERATE_USAGE)
            return
        if len(text) > self._settings.max_prompt_chars:
            await self.say(message.chat_id, texts.prompt_too_long(self._settings.max_prompt_chars))
            return
        image_id = task_id_for("generate", message.chat_id, message.message_id)
        job = Job(image_id, DeliveryKind.IMAGE, message.chat_id)
        character = await self._charge_generate(message, job)
        if character is None:
            await self.say(message.chat_id, texts.NO_DIALOG)
            return
        payload = ImagePayload(
            prompt=f"{character.appearance}, {text}",
            negative_prompt=self._settings.image_default_negative_prompt,
            girl_id=character.id,
        )
        await self.enqueue(
            job, message.user.user_id, TaskType.GENERATE_IMAGE, payload, tell_place=True
        )

    async def _charge_generate(self, message: Incoming, job: Job) -> Character | None:
        user_id = message.user.user_id

        async def charge(session: AsyncSession) -> Character | None:
            await self.user_of(session, message.user)
            found = await dialogs.dialog_and_character(session, user_id)
            if found is None:
                return None
            await self._charge_diamonds(session, user_id, job, "generate")
            await delivery_rows.expect(session, job.task_id, job.chat_id, job.kind)
            return found[1]

        return await self.in_transaction("charge_generate", charge)

    async def _charge_diamonds(
        self, session: AsyncSession, user_id: int, job: Job, reason: str
    ) -> None:
        await repo.charge(
            session,
            user_id,
            Currency.DIAMONDS,
            self._settings.image_diamond_cost,
            charge_id=job.charge_id,
            reason=reason,
        )

    async def enqueue(
        self,
        job: Job,
        user_id: int,
        task_type: TaskType,
        payload: Payload,
        *,
        tell_place: bool = False,
    ) -> None:
        """Queue the task (the user sees "typing" while Redis errors are retried), then watch
        for its outcome.

        Only a refused payload is settled at once (refunded: nothing was queued). When Redis
        stays away the task may still exist (an attempt ran and its reply was lost), so the
        delivery stays open: the watcher finds its record, or refunds it as lost once.
        """
        action = job.chat_action
        async with chat_action_kept(self._sender, job.chat_id, action, delay=_ACTION_DELAY):
            submitted = await enqueue_retrying(
                self._queue,
                job,
                user_id,
                task_type,
                payload,
                retry_seconds=self._settings.enqueue_retry_seconds,
            )
        if submitted is Submitted.REFUSED:
            self._deliveries.watch(job, Verdict.REFUSED)
            return
        if tell_place and submitted is Submitted.QUEUED:
            await self._deliveries.tell_queue_place(job.chat_id)
        self._deliveries.watch(job)

    async def say(self, chat_id: int, text: str) -> None:
        await self._sender.send_text(chat_id, text)
