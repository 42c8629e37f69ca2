"""Voice in and out, the bot's side: a voice message answered as a typed message, and a
reply read aloud (🔊).

A voice message longer than VOICE_MAX_SECONDS or bigger than VOICE_MAX_BYTES is refused
before anything is charged. Otherwise its audio is stored beside its transcription task in
Redis (shared.queue.audio), the reply's energy is charged in the transaction that records
the transcript's delivery row (the charge id is the reply's task id, derived from the
transcription's), and the task is enqueued. The chat's turn is held until the transcript is
answered, so its reply keeps its place among the chat's messages. The transcript's outcome
(producer.voice_sends) shows what was understood and answers it like a typed message under
that one charge: a failed transcription or a failed reply refunds it, once.

🔊 charges TTS_DIAMOND_COST per press (two presses of one button: once), refunded if the
synthesis fails; only the dialog's user may press it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import delivery_rows, dialogs
from db import repositories as repo
from db.models import Currency
from db.retry import retry_transient
from producer import texts
from producer.conversation import Conversation, Incoming, Profile
from producer.delivery import Deliveries
from producer.jobs import DeliveryKind, Job, task_id_for, voice_reply_task_id
from producer.steering import SteerAnswer, new_attempt, owned_reply
from producer.throttle import RateLimiter
from shared.config import Settings
from shared.queue import QueueService
from shared.queue.audio import AudioStore, sha256_of
from shared.tasks import TaskType
from shared.voice_tasks import SpeechPayload, TranscribePayload, TranscriptResult

log = structlog.get_logger(__name__)


class AudioUnavailableError(Exception):
    """The voice message could not be fetched from Telegram (the reason names no URL: a
    Bot API file URL holds the bot token)."""


@dataclass(frozen=True, slots=True)
class VoiceNote:
    """A voice message (or audio, or video note) as Telegram describes it."""

    chat_id: int
    message_id: int
    user: Profile
    duration: int
    file_size: int | None
    filename: str
    mime_type: str


class Voice:
    """The voice use cases of one bot process."""

    def __init__(
        self,
        conversation: Conversation,
        settings: Settings,
        db: async_sessionmaker[AsyncSession],
        queue: QueueService,
        deliveries: Deliveries,
        *,
        limiter: RateLimiter,
    ) -> None:
        """Speaks through the conversation's sender and charges through its transactions."""
        self._conversation = conversation
        self._settings, self._db, self._deliveries = settings, db, deliveries
        self._limiter = limiter
        self._audio = AudioStore(queue.redis, settings)
        deliveries.voice.answer = self._answer

    async def hear(self, note: VoiceNote, fetch: Callable[[], Awaitable[bytes]]) -> None:
        """Transcribe the voice message and answer it (AudioUnavailableError from `fetch`
        is told to the user; nothing is charged then)."""
        refusal = self._refusal(note.duration, note.file_size or 0)
        if refusal is None and not await self._limiter.allow(note.user.user_id):
            refusal = texts.THROTTLED
        if refusal is not None:
            await self._say(note.chat_id, refusal)
            return
        try:
            audio = await fetch()
        except AudioUnavailableError as exc:
            log.warning("voice_fetch_failed", error=str(exc))
            await self._say(note.chat_id, texts.VOICE_UNAVAILABLE)
            return
        # file_size is optional in the Bot API: the bytes themselves are measured too.
        if (refusal := self._refusal(note.duration, len(audio))) is not None:
            await self._say(note.chat_id, refusal)
            return
        job = Job(
            task_id_for("voice", note.chat_id, note.message_id),
            DeliveryKind.TRANSCRIPT,
            note.chat_id,
        )
        # Stored before the charge, so a failure to store charges nothing; dropped again
        # when nothing is charged (no dialog, not enough energy), not left to expire.
        await self._audio.put(TaskType.TRANSCRIBE_VOICE, job.task_id, audio)
        charged = False
        try:
            charged = await self._charge_voice(note, job)
        finally:
            if not charged:
                await self._audio.drop(TaskType.TRANSCRIBE_VOICE, job.task_id)
        if not charged:
            await self._say(note.chat_id, texts.NO_DIALOG)
            return
        payload = TranscribePayload(
            message_id=note.message_id,
            size=len(audio),
            sha256=sha256_of(audio),
            filename=note.filename,
            mime_type=note.mime_type,
        )
        await self._conversation.enqueue(
            job, note.user.user_id, TaskType.TRANSCRIBE_VOICE, payload
        )
        # The chat's next update waits: its message must come after this one's transcript.
        await self._deliveries.delivered(job.task_id, self._settings.reply_wait_seconds)

    def _refusal(self, seconds: int, size: int) -> str | None:
        """Why a voice message this long and this big is not transcribed, if it is not."""
        if seconds > self._settings.voice_max_seconds:
            return texts.voice_too_long(self._settings.voice_max_seconds)
        if size > self._settings.voice_max_bytes:
            return texts.voice_too_big(self._settings.voice_max_bytes)
        return None

    async def _charge_voice(self, note: VoiceNote, job: Job) -> bool:
        """Charge the reply's energy and record the transcript's delivery; False (nothing
        charged) if the user has no dialog."""

        async def charge(session: AsyncSession) -> bool:
            await self._conversation.user_of(session, note.user)
            if await dialogs.dialog_and_character(session, note.user.user_id) is None:
                return False
            await repo.charge(
                session,
                note.user.user_id,
                Currency.ENERGY,
                self._settings.reply_energy_cost,
                charge_id=job.charge_id,
                reason="voice message",
            )
            await delivery_rows.expect(session, job.task_id, job.chat_id, job.kind)
            return True

        return await self._conversation.in_transaction("charge_voice", charge)

    async def _answer(self, job: Job, transcript: TranscriptResult, user_id: int) -> None:
        """The transcript as the user's message, charged already (the same charge id)."""
        text = transcript.text[: self._settings.max_message_chars]
        message = Incoming(job.chat_id, transcript.message_id, text, Profile(user_id, ""))
        reply = Job(voice_reply_task_id(job.task_id), DeliveryKind.REPLY, job.chat_id)
        if await self._conversation.answer(message, reply):
            return
        # No dialog any more (the user deleted it meanwhile): nothing will answer.
        await self._refund(job.charge_id, "voice message: no dialog")
        await self._say(job.chat_id, texts.NO_DIALOG)

    async def _refund(self, charge_id: str, reason: str) -> None:
        async def refund() -> None:
            async with self._db.begin() as session:
                outcome = await repo.refund(session, charge_id, reason)
            log.info("task_refunded", charge_id=charge_id, outcome=str(outcome))

        await retry_transient(refund, "refund_voice", self._settings.db_retry_seconds)

    async def speak(self, chat_id: int, user_id: int, target: str) -> SteerAnswer:
        """🔊 under the reply `target`: read it aloud, charged once per press."""
        ours: set[str] = set()

        async def charge(session: AsyncSession) -> tuple[Job, str, str] | SteerAnswer:
            found = await owned_reply(session, user_id, target)
            if isinstance(found, SteerAnswer):
                return found
            dialog, reply = found
            # The character's own voice where it has one (a card or an admin set it).
            character = await repo.get_character(session, dialog.character_id)
            voice = (character.voice if character else None) or self._settings.tts_voice
            task_id = await new_attempt(session, DeliveryKind.VOICE, target, ours)
            if task_id is None:
                return SteerAnswer.ALREADY
            job = Job(task_id, DeliveryKind.VOICE, chat_id, dialog.id)
            cost = self._settings.tts_diamond_cost
            await repo.charge(
                session, user_id, Currency.DIAMONDS, cost, charge_id=job.charge_id, reason="voice"
            )
            await delivery_rows.expect(session, task_id, chat_id, job.kind)
            return job, reply.content, voice

        charged = await self._conversation.in_transaction("charge_speech", charge)
        log.info("speech_pressed", target=target, answer=getattr(charged, "value", "started"))
        if isinstance(charged, SteerAnswer):
            return charged
        job, text, voice = charged
        payload = SpeechPayload(text=readable(text, self._settings.tts_max_chars), voice=voice)
        await self._conversation.enqueue(job, user_id, TaskType.SYNTHESIZE_VOICE, payload)
        return SteerAnswer.STARTED

    async def _say(self, chat_id: int, text: str) -> None:
        await self._conversation.say(chat_id, text)


def readable(text: str, limit: int) -> str:
    """`text` up to `limit` characters, cut after the last sentence that fits (or a word)."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(mark) for mark in ".!?…")
    if end < limit // 2:
        end = cut.rfind(" ")
    return cut[: end + 1].strip() if end > 0 else cut
