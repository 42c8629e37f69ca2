"""Task types, statuses, the QueueTask record, payload/result models and the orjson codec."""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from shared.errors import InvalidPayloadError, UnknownTaskTypeError


class TaskType(StrEnum):
    GENERATE_IMAGE = "generate_image"
    GENERATE_REPLY = "generate_reply"
    GENERATE_IMAGE_PROMPT = "generate_image_prompt"


class TaskStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class _Strict(BaseModel):
    # Fields added by a newer producer are ignored, so a rolling deploy that adds an optional
    # field does not make the consumers still on the old version reject every task.
    model_config = ConfigDict(extra="ignore", frozen=True)


class ChatTurn(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class ImagePayload(_Strict):
    prompt: str = Field(min_length=1)
    negative_prompt: str | None = None
    dialog_id: int | None = None
    girl_id: int | None = None


class ReplyPayload(_Strict):
    system_prompt: str
    history: list[ChatTurn] = Field(default_factory=list)
    dialog_id: int
    user_message: str = Field(min_length=1)


class ImagePromptPayload(_Strict):
    girl_name: str
    girl_description: str
    recent_dialogue: list[ChatTurn] = Field(default_factory=list)


class ImageResult(_Strict):
    image_base64: str
    image_size: int
    dialog_id: int | None = None
    girl_id: int | None = None


class ReplyResult(_Strict):
    reply: str
    dialog_id: int
    # The user stopped the reply while it streamed: `reply` holds the partial text.
    stopped: bool = False
    # The provider's stream broke after text was shown: `reply` holds what arrived.
    cut: bool = False


class ImagePromptResult(_Strict):
    prompt: str


Payload = ImagePayload | ReplyPayload | ImagePromptPayload
TaskResult = ImageResult | ReplyResult | ImagePromptResult

PAYLOAD_MODELS: dict[TaskType, type[Payload]] = {
    TaskType.GENERATE_IMAGE: ImagePayload,
    TaskType.GENERATE_REPLY: ReplyPayload,
    TaskType.GENERATE_IMAGE_PROMPT: ImagePromptPayload,
}
RESULT_MODELS: dict[TaskType, type[TaskResult]] = {
    TaskType.GENERATE_IMAGE: ImageResult,
    TaskType.GENERATE_REPLY: ReplyResult,
    TaskType.GENERATE_IMAGE_PROMPT: ImagePromptResult,
}


def parse_task_type(value: str | TaskType) -> TaskType:
    try:
        return TaskType(value)
    except ValueError:
        names = ", ".join(TaskType)
        raise UnknownTaskTypeError(f"unknown task type {value!r} (one of {names})") from None


def parse_payload(
    task_type: TaskType, data: dict[str, Any] | Payload, task_id: str | None = None
) -> Payload:
    """The payload as its model (validated once; a model of the right type passes as it is),
    or InvalidPayloadError saying what is wrong."""
    model = PAYLOAD_MODELS[task_type]
    if isinstance(data, model):
        return data
    raw = data.model_dump() if isinstance(data, BaseModel) else data
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'data'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidPayloadError(f"invalid {task_type} payload: {details}", task_id) from None


def validate_payload(
    task_type: TaskType, data: dict[str, Any] | Payload, task_id: str | None = None
) -> dict[str, Any]:
    """Return the payload as plain JSON data, or raise InvalidPayloadError saying what is wrong."""
    return parse_payload(task_type, data, task_id).model_dump(exclude_none=True)


P = TypeVar("P", bound=BaseModel)


def now() -> datetime:
    return datetime.now(UTC)


class QueueTask(BaseModel):
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

    def payload_as(self, model: builtins.type[P]) -> P:
        """The payload as `model`, validated now (a ParsedTask keeps the parse-time one)."""
        return model.model_validate(self.data)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class ParsedTask(QueueTask):
    """A task parsed from a stream entry by a consumer, with its payload validated there once.

    A subclass, so that only consumers pay for the private attribute, not every QueueTask the
    producer builds from announcements.
    """

    _payload: BaseModel | None = PrivateAttr(default=None)

    def payload_as(self, model: builtins.type[P]) -> P:
        if isinstance(self._payload, model):
            return self._payload
        return model.model_validate(self.data)


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def loads(value: bytes | str) -> Any:
    return orjson.loads(value)
