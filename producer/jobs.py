"""What the bot owes a chat: delivery kinds, deterministic task ids and the Job record.

Task ids are uuid5 of what caused them (chat and message, or the button press), so a
repeated Telegram update charges and enqueues once. The photo chain's image task id is derived
from its prompt task id and doubles as the chain's charge id, so either step's failure refunds
the same single charge.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from producer.channel import ChatAction
from shared.tasks import TaskType, now

_NAMESPACE = uuid.UUID("5d0c1f3e-9a61-4c55-8a8e-0b6f3c1d2e7a")


class DeliveryKind(StrEnum):
    REPLY = "reply"
    IMAGE = "image"
    PHOTO_PROMPT = "photo_prompt"
    # A dialog's long-term memory: nothing is sent, the outcome only updates the dialog.
    SUMMARY = "summary"
    # The latest reply asked again (🔄): replaces it in the chat and in the history.
    REGENERATE = "regenerate"
    # A cut or stopped reply continued (▶️): appended to it in the history.
    CONTINUE = "continue"
    # The reply to a message the user edited: replaces the reply to the text before.
    EDIT = "edit"
    # A voice message's transcript: shown, then answered as a typed message (the reply
    # task's id derives from it and is the charge id of both steps).
    TRANSCRIPT = "transcript"
    # A reply read aloud (🔊): sent as a voice note.
    VOICE = "voice"


_TASK_TYPES = {
    DeliveryKind.REPLY: TaskType.GENERATE_REPLY,
    DeliveryKind.IMAGE: TaskType.GENERATE_IMAGE,
    DeliveryKind.PHOTO_PROMPT: TaskType.GENERATE_IMAGE_PROMPT,
    DeliveryKind.SUMMARY: TaskType.SUMMARIZE_DIALOG,
    DeliveryKind.REGENERATE: TaskType.GENERATE_REPLY,
    DeliveryKind.CONTINUE: TaskType.GENERATE_REPLY,
    DeliveryKind.EDIT: TaskType.GENERATE_REPLY,
    DeliveryKind.TRANSCRIPT: TaskType.TRANSCRIBE_VOICE,
    DeliveryKind.VOICE: TaskType.SYNTHESIZE_VOICE,
}
PHOTO_KINDS = frozenset({DeliveryKind.IMAGE, DeliveryKind.PHOTO_PROMPT})
# Replies the character writes: shown while written, sent in order, stoppable.
REPLY_KINDS = frozenset(
    {DeliveryKind.REPLY, DeliveryKind.REGENERATE, DeliveryKind.CONTINUE, DeliveryKind.EDIT}
)


def task_id_for(*parts: object) -> str:
    """A task id derived from what caused it, so a repeated update maps to the same task."""
    return str(uuid.uuid5(_NAMESPACE, ":".join(str(part) for part in parts)))


def image_task_id(prompt_task_id: str) -> str:
    """The image step of a photo chain; also the chain's charge id."""
    return task_id_for(prompt_task_id, "image")


def voice_reply_task_id(transcript_task_id: str) -> str:
    """The reply to a voice message; also the charge id of its transcription."""
    return task_id_for(transcript_task_id, "reply")


def encode_kind(kind: DeliveryKind, dialog_id: int | None = None) -> str:
    return kind.value if dialog_id is None else f"{kind.value}:{dialog_id}"


def decode_kind(raw: str) -> tuple[DeliveryKind, int | None]:
    kind, _, dialog = raw.partition(":")
    return DeliveryKind(kind), int(dialog) if dialog else None


@dataclass(slots=True)
class Job:
    """One result to bring to a chat."""

    task_id: str
    kind: DeliveryKind
    chat_id: int
    dialog_id: int | None = None
    created_at: datetime = field(default_factory=now)
    started: float = field(default_factory=time.monotonic)
    # Set once the user was told it takes longer; recovered jobs start silent.
    notified: bool = False
    # Applied by a process that died before sending: this job sends without applying again.
    applied: bool = False
    # This job's own mark: a retry after its commit reply was lost matches it.
    apply_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def task_type(self) -> TaskType:
        return _TASK_TYPES[self.kind]

    @property
    def charge_id(self) -> str:
        if self.kind is DeliveryKind.PHOTO_PROMPT:
            return image_task_id(self.task_id)
        if self.kind is DeliveryKind.TRANSCRIPT:
            return voice_reply_task_id(self.task_id)
        return self.task_id

    @property
    def chat_action(self) -> ChatAction:
        """What the chat shows while the task is being made."""
        if self.is_photo:
            return ChatAction.UPLOAD_PHOTO
        return ChatAction.RECORD_VOICE if self.kind is DeliveryKind.VOICE else ChatAction.TYPING

    @property
    def is_photo(self) -> bool:
        return self.kind in PHOTO_KINDS

    @property
    def is_reply(self) -> bool:
        return self.kind in REPLY_KINDS

    @property
    def is_silent(self) -> bool:
        """Nothing is shown or sent for it (no chat action, no "takes longer", no message)."""
        return self.kind is DeliveryKind.SUMMARY
