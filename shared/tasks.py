"""Task types, statuses, the QueueTask record, payload/result models and the orjson codec."""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import orjson

from shared import checks
from shared.errors import InvalidDataError, InvalidPayloadError, UnknownTaskTypeError
from shared.voice_tasks import SpeechPayload, SpeechResult, TranscribePayload, TranscriptResult

if TYPE_CHECKING:
    from collections.abc import Callable

    from shared.config import Settings


class TaskType(StrEnum):
    GENERATE_IMAGE = "generate_image"
    GENERATE_REPLY = "generate_reply"
    GENERATE_IMAGE_PROMPT = "generate_image_prompt"
    SUMMARIZE_DIALOG = "summarize_dialog"
    TRANSCRIBE_VOICE = "transcribe_voice"
    SYNTHESIZE_VOICE = "synthesize_voice"


class TaskStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


Role = Literal["system", "user", "assistant"]
ROLES = ("system", "user", "assistant")


# Payloads and results are checked in `from_json`, at the trust boundaries (enqueue, the
# consumer's parse, the bot reading a result); code that builds them is checked by mypy.
# Fields added by a newer producer are ignored, so a rolling deploy that adds an optional
# field does not make the consumers still on the old version reject every task.


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatTurn:
    role: Role
    content: str

    @classmethod
    def from_json(cls, data: object) -> ChatTurn:
        d = checks.as_object(data)
        role = checks.required(d, "role", str)
        if role not in ROLES:
            raise InvalidDataError("role", f"must be one of {', '.join(ROLES)}")
        return cls(role=cast(Role, role), content=checks.required(d, "content", str))


@dataclass(frozen=True, slots=True, kw_only=True)
class ImagePayload:
    prompt: str
    negative_prompt: str | None = None
    dialog_id: int | None = None
    girl_id: int | None = None

    @classmethod
    def from_json(cls, data: object) -> ImagePayload:
        d = checks.as_object(data)
        return cls(
            prompt=checks.text(d, "prompt", min_length=1),
            negative_prompt=checks.maybe(d, "negative_prompt", str),
            dialog_id=checks.maybe(d, "dialog_id", int),
            girl_id=checks.maybe(d, "girl_id", int),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyPayload:
    system_prompt: str
    history: list[ChatTurn] = field(default_factory=list)
    dialog_id: int
    user_message: str
    # The dialog's long-term memory (what summarize_dialog folded from turns that left the
    # history window); sent to the model after the character's prompt.
    summary: str | None = None
    # Continue (▶️): the reply so far, sent as the assistant's last turn.
    prefill: str | None = None
    # Regenerate or continue: the task id of the reply this one replaces or extends (the bot
    # applies it to that reply's history row; consumers ignore it).
    replaces: str | None = None

    @classmethod
    def from_json(cls, data: object) -> ReplyPayload:
        d = checks.as_object(data)
        return cls(
            system_prompt=checks.required(d, "system_prompt", str),
            history=checks.items(d, "history", ChatTurn.from_json, default=True),
            dialog_id=checks.required(d, "dialog_id", int),
            user_message=checks.text(d, "user_message", min_length=1),
            summary=checks.maybe(d, "summary", str),
            prefill=checks.maybe(d, "prefill", str),
            replaces=checks.maybe(d, "replaces", str),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ImagePromptPayload:
    girl_name: str
    girl_description: str
    recent_dialogue: list[ChatTurn] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: object) -> ImagePromptPayload:
        d = checks.as_object(data)
        return cls(
            girl_name=checks.required(d, "girl_name", str),
            girl_description=checks.required(d, "girl_description", str),
            recent_dialogue=checks.items(d, "recent_dialogue", ChatTurn.from_json, default=True),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SummaryPayload:
    """Fold `turns` (the dialog's messages up to message id `upto`, which left the history
    window) into `summary`, the dialog's memory so far (None: nothing yet)."""

    dialog_id: int
    upto: int
    summary: str | None = None
    turns: list[ChatTurn] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: object) -> SummaryPayload:
        d = checks.as_object(data)
        turns = checks.items(d, "turns", ChatTurn.from_json)
        if not turns:
            raise InvalidDataError("turns", "must hold at least one turn")
        return cls(
            dialog_id=checks.required(d, "dialog_id", int),
            upto=checks.required(d, "upto", int),
            summary=checks.maybe(d, "summary", str),
            turns=turns,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageResult:
    image_base64: str
    image_size: int
    dialog_id: int | None = None
    girl_id: int | None = None

    @classmethod
    def from_json(cls, data: object) -> ImageResult:
        d = checks.as_object(data)
        return cls(
            image_base64=checks.required(d, "image_base64", str),
            image_size=checks.required(d, "image_size", int),
            dialog_id=checks.maybe(d, "dialog_id", int),
            girl_id=checks.maybe(d, "girl_id", int),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyResult:
    reply: str
    dialog_id: int
    # The user stopped the reply while it streamed: `reply` holds the partial text.
    stopped: bool = False
    # The provider's stream broke after text was shown: `reply` holds what arrived.
    cut: bool = False

    @classmethod
    def from_json(cls, data: object) -> ReplyResult:
        d = checks.as_object(data)
        return cls(
            reply=checks.required(d, "reply", str),
            dialog_id=checks.required(d, "dialog_id", int),
            stopped=checks.optional(d, "stopped", bool, False),
            cut=checks.optional(d, "cut", bool, False),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ImagePromptResult:
    prompt: str

    @classmethod
    def from_json(cls, data: object) -> ImagePromptResult:
        return cls(prompt=checks.required(checks.as_object(data), "prompt", str))


@dataclass(frozen=True, slots=True, kw_only=True)
class SummaryResult:
    """The dialog's new memory, covering its messages up to id `upto` (echoed)."""

    summary: str
    dialog_id: int
    upto: int

    @classmethod
    def from_json(cls, data: object) -> SummaryResult:
        d = checks.as_object(data)
        return cls(
            summary=checks.text(d, "summary", min_length=1),
            dialog_id=checks.required(d, "dialog_id", int),
            upto=checks.required(d, "upto", int),
        )


Payload = (
    ImagePayload
    | ReplyPayload
    | ImagePromptPayload
    | SummaryPayload
    | TranscribePayload
    | SpeechPayload
)
TaskResult = (
    ImageResult | ReplyResult | ImagePromptResult | SummaryResult | TranscriptResult | SpeechResult
)


class ProviderKind(StrEnum):
    """What kind of model a task type's handler calls; each kind is configured once."""

    LLM = "llm"
    IMAGE = "image"
    STT = "stt"
    TTS = "tts"


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    """What the bot and the consumers agree on for one task type (its stream is named by it)."""

    payload: type[Payload]
    result: type[TaskResult]
    provider: ProviderKind
    # Tasks of the type one consumer process runs at once (its setting).
    concurrency: Callable[[Settings], int]


# The one registration of a task type's contract. Its handler is registered beside it, in
# consumers/registry.py (the consumers own the handlers; the bot never imports them).
TASK_SPECS: dict[TaskType, TaskSpec] = {
    TaskType.GENERATE_IMAGE: TaskSpec(
        payload=ImagePayload,
        result=ImageResult,
        provider=ProviderKind.IMAGE,
        concurrency=lambda s: s.max_concurrent_image_generations,
    ),
    TaskType.GENERATE_REPLY: TaskSpec(
        payload=ReplyPayload,
        result=ReplyResult,
        provider=ProviderKind.LLM,
        concurrency=lambda s: s.max_concurrent_reply_generations,
    ),
    TaskType.GENERATE_IMAGE_PROMPT: TaskSpec(
        payload=ImagePromptPayload,
        result=ImagePromptResult,
        provider=ProviderKind.LLM,
        concurrency=lambda s: s.max_concurrent_prompt_generations,
    ),
    TaskType.SUMMARIZE_DIALOG: TaskSpec(
        payload=SummaryPayload,
        result=SummaryResult,
        provider=ProviderKind.LLM,
        concurrency=lambda s: s.max_concurrent_summaries,
    ),
    TaskType.TRANSCRIBE_VOICE: TaskSpec(
        payload=TranscribePayload,
        result=TranscriptResult,
        provider=ProviderKind.STT,
        concurrency=lambda s: s.max_concurrent_transcriptions,
    ),
    TaskType.SYNTHESIZE_VOICE: TaskSpec(
        payload=SpeechPayload,
        result=SpeechResult,
        provider=ProviderKind.TTS,
        concurrency=lambda s: s.max_concurrent_syntheses,
    ),
}


def to_json(model: Payload | TaskResult | ChatTurn) -> dict[str, Any]:
    """The model as JSON data; None fields are left out (they read back as None)."""
    out: dict[str, Any] = {}
    for f in fields(model):
        value = getattr(model, f.name)
        if value is None:
            continue
        if isinstance(value, list):
            value = [to_json(item) for item in value]
        out[f.name] = value
    return out


def parse_task_type(value: str | TaskType) -> TaskType:
    try:
        return TaskType(value)
    except ValueError:
        names = ", ".join(TaskType)
        raise UnknownTaskTypeError(f"unknown task type {value!r} (one of {names})") from None


def parse_payload(
    task_type: TaskType, data: dict[str, Any] | Payload, task_id: str | None = None
) -> Payload:
    """The payload as its model, or InvalidPayloadError saying what is wrong.

    A model built in code is checked too: its constructor checks nothing.
    """
    model = TASK_SPECS[task_type].payload
    raw = data if isinstance(data, dict) else to_json(data)
    try:
        return model.from_json(raw)
    except InvalidDataError as exc:
        raise InvalidPayloadError(f"invalid {task_type} payload: {exc}", task_id) from None


def validate_payload(
    task_type: TaskType, data: dict[str, Any] | Payload, task_id: str | None = None
) -> dict[str, Any]:
    """Return the payload as plain JSON data, or raise InvalidPayloadError saying what is wrong."""
    return to_json(parse_payload(task_type, data, task_id))


P = TypeVar(
    "P",
    ImagePayload,
    ReplyPayload,
    ImagePromptPayload,
    SummaryPayload,
    TranscribePayload,
    SpeechPayload,
)


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True, kw_only=True)
class QueueTask:
    """A task and everything known about it; the stored record is the truth."""

    task_id: str
    type: TaskType
    status: TaskStatus = TaskStatus.PENDING
    user_id: int
    data: dict[str, Any]
    result: dict[str, Any] | None = None
    error: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    consumer: str | None = None
    # Ledger key of what the user paid for this task: refunded once if the task fails for good.
    charge_id: str | None = None
    # The payload as validated when a consumer parsed the entry (None elsewhere).
    payload: Payload | None = field(default=None, repr=False, compare=False)

    def payload_as(self, model: builtins.type[P]) -> P:
        """The payload as `model`: the one checked at parse, else checked now."""
        if isinstance(self.payload, model):
            return self.payload
        return model.from_json(self.data)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def loads(value: bytes | str) -> Any:
    return orjson.loads(value)
