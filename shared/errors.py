"""The pipeline's exception tree; retryability belongs to the type."""

from __future__ import annotations


class PipelineError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(PipelineError):
    """A setting is missing or invalid; raised at start, names the variable."""


class TaskError(PipelineError):
    """An error tied to one task."""

    def __init__(self, message: str, task_id: str | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id


class InvalidPayloadError(TaskError):
    """A payload does not match its task type (refused at enqueue, dead-lettered when read)."""


class UnknownTaskTypeError(TaskError):
    """A task names a type this pipeline does not know."""


class TaskTimeoutError(TaskError):
    """The waiter gave up; the task may still finish later."""


class InvalidDataError(ValueError):
    """JSON data that does not fit its model; `field` is the path to the bad value.

    Not a PipelineError: callers turn it into InvalidPayloadError (enqueue, parse) or treat
    the data as unreadable (a stored result).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def inside(self, parent: str) -> InvalidDataError:
        """The same error, its path prefixed by the container that held the value."""
        return InvalidDataError(f"{parent}.{self.field}", self.message)


class ProviderError(PipelineError):
    """An external provider call failed."""

    def __init__(self, message: str, provider: str, status: int | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status


class ProviderUnavailableError(ProviderError):
    """Timeouts, connection errors, 429 and 5xx: worth retrying."""

    def __init__(
        self,
        message: str,
        provider: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider, status)
        self.retry_after = retry_after


class ProviderRejectedError(ProviderError):
    """Other 4xx or a content refusal: final, retrying cannot help."""


class StreamCutError(ProviderError):
    """A streamed answer broke off after some of it arrived: final, what arrived is kept
    (retrying from scratch would show the user a second, different text)."""


class ProviderNotImplementedError(ProviderError):
    """The configured provider has no usable API (for example Live3D)."""


class InsufficientBalanceError(PipelineError):
    """The user cannot pay for the requested work."""

    def __init__(self, currency: str, balance: int, cost: int) -> None:
        super().__init__(f"insufficient {currency}: balance {balance}, cost {cost}")
        self.currency = currency
        self.balance = balance
        self.cost = cost


def is_retryable(exc: BaseException) -> bool:
    """Decide once, for the whole pipeline, whether a failed task may be tried again."""
    if isinstance(exc, ProviderUnavailableError):
        return True
    # Unknown errors (database restarts, network blips) are retried by the queue up to its cap.
    return not isinstance(exc, PipelineError)


class InvalidCardError(PipelineError):
    """A character card that cannot be imported (bad PNG, base64, JSON, field types or sizes);
    the message says what is wrong, never echoing the card's content."""
