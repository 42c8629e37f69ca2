"""Provider protocols, the shared httpx wrapper, error mapping and the in-client retry policy."""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import random
import ssl
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar

import httpx
import orjson
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
)

from consumers.task_run import wait_for_admission
from shared.config_values import Secret
from shared.errors import ProviderError, ProviderRejectedError, ProviderUnavailableError

T = TypeVar("T")

# Venice documents this header as epoch seconds, older pages as a duration: accept both.
_EPOCH_THRESHOLD = 1e9
_MAX_DETAIL_CHARS = 300


class LLMClient(Protocol):
    """A chat model: messages in OpenAI shape, the assistant's text out."""

    name: str

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> str: ...

    def stream(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncGenerator[str, None]:
        """The assistant's text as deltas. Before the first delta it fails like `chat`; a
        break after it raises StreamCutError (what was yielded stands). Close it (aclosing)
        to end the provider call early."""
        ...

    async def aclose(self) -> None: ...


class ImageClient(Protocol):
    """An image model: a prompt in, raw image bytes (PNG/JPEG/WEBP) out."""

    name: str

    async def generate(self, prompt: str, negative_prompt: str | None = None) -> bytes: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a client retries ProviderUnavailableError: capped, jittered, within a time budget.

    `throttled` hears of every 429 or 503 that names a Retry-After (seconds): the consumer
    pauses all consumers of the provider with it, instead of each finding out alone.
    """

    budget_seconds: float = 20.0
    max_attempts: int = 4
    initial_wait: float = 0.5
    max_wait: float = 8.0
    throttled: Callable[[float], None] | None = None

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return self.delay(state.attempt_number, exc)

    def delay(self, attempt: int, exc: BaseException | None) -> float:
        """Jittered exponential backoff, but never shorter than the server's Retry-After."""
        backoff = min(self.max_wait, self.initial_wait * 2 ** (attempt - 1))
        backoff = random.uniform(backoff / 2, backoff)
        hint = exc.retry_after if isinstance(exc, ProviderUnavailableError) else None
        return max(backoff, hint or 0.0)


async def call_with_retries(
    provider: str, policy: RetryPolicy, func: Callable[[], Awaitable[T]]
) -> T:
    """Run `func`, retrying only ProviderUnavailableError; the last error is re-raised as is."""
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(ProviderUnavailableError),
        wait=policy.wait,
        # stop_before_delay gives up when the next sleep would overrun the budget, so a
        # Retry-After longer than the budget fails fast and the queue retries later.
        stop=stop_before_delay(policy.budget_seconds) | stop_after_attempt(policy.max_attempts),
        before_sleep=lambda state: _log_retry(provider, state),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await func()
    raise AssertionError("tenacity ended without a result")  # pragma: no cover


def _log_retry(provider: str, state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log_retry(provider, state.attempt_number, state.upcoming_sleep, exc)


def log_retry(provider: str, attempt: int, wait: float, exc: BaseException | None) -> None:
    # A fresh logger per call: cached module loggers would escape structlog.testing.capture_logs.
    structlog.get_logger(__name__).warning(
        "provider_retry",
        provider=provider,
        status=getattr(exc, "status", None),
        attempt=attempt,
        wait=round(wait, 3),
        error=str(exc),
    )


def parse_retry_after(
    headers: Mapping[str, str], reset_header: str | None = None, now: float | None = None
) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or HTTP date) or a rate-limit reset header."""
    current = time.time() if now is None else now
    value = headers.get("retry-after")
    if value:
        return _seconds_or_date(value.strip(), current)
    raw = headers.get(reset_header) if reset_header else None
    if not raw:
        return None
    try:
        number = float(raw)
    except ValueError:
        return None
    return max(0.0, number - current if number > _EPOCH_THRESHOLD else number)


def _seconds_or_date(value: str, now: float) -> float | None:
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now)


def describe_error_body(response: httpx.Response) -> str:
    """A short human message from Venice (`error`), Replicate (`title`/`detail`) or SD bodies."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    text = _error_text(body) if isinstance(body, dict) else None
    if text is None:
        text = response.text.strip() or response.reason_phrase
    return text[:_MAX_DETAIL_CHARS]


def _error_text(body: dict[str, Any]) -> str | None:
    parts = [_as_text(body.get(key)) for key in ("title", "error", "detail", "message")]
    return "; ".join(part for part in parts if part) or None


def _as_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return _as_text(value.get("message") or value.get("msg"))
    if isinstance(value, list):
        return ", ".join(text for item in value if (text := _as_text(item))) or None
    return None


def is_retryable_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The process's one TLS context: each client's own copy of the CA store cost 0.8 MB."""
    return httpx.create_ssl_context()


class ProviderHttp:
    """One provider's httpx client: auth, timeouts, error mapping and retries in one place.

    Every error it raises is a ProviderError whose message never contains the secret.
    """

    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        timeout: float,
        retry: RetryPolicy,
        secret: Secret | None = None,
        reset_header: str | None = None,
        max_connections: int | None = None,
    ) -> None:
        self.provider = provider
        self.retry = retry
        self._reset_header = reset_header
        self._secret = secret.get_secret_value() if secret else None
        headers: dict[str, str] = {}
        if self._secret:
            headers["Authorization"] = f"Bearer {self._secret}"
        self.client = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
            # The consumer's per-type slots bound concurrency; a smaller pool here would queue
            # requests behind each other and stretch task times past their deadlines.
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=32),
            verify=tls_context(),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    async def send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        """One attempt; a non-2xx answer or a transport failure becomes a ProviderError.

        With `stream`, a 2xx response comes back unread: the caller reads and closes it.
        Every request of a task's handler waits here for its start step to admit the run
        (`NotAdmittedError` if it refused): the one door of every provider call.
        """
        await wait_for_admission()
        where = f"{request.method} {request.url.path}"
        with self.mapped_errors(where):
            response = await self.client.send(request, stream=stream)
            if response.is_success:
                return response
            if stream:
                await response.aread()
                await response.aclose()
        raise self.error_for(response, where)

    @contextlib.contextmanager
    def mapped_errors(self, where: str) -> Iterator[None]:
        """httpx transport failures and timeouts as ProviderUnavailableError, without secrets."""
        try:
            yield
        except httpx.TimeoutException as exc:
            message = f"{self.provider} {where} timed out ({type(exc).__name__})"
            # `from None`: httpx's chained frames hold request headers, which hold the secret.
            raise ProviderUnavailableError(message, self.provider) from None
        except httpx.RequestError as exc:
            message = self.redact(f"{self.provider} {where} failed: {type(exc).__name__}: {exc}")
            raise ProviderUnavailableError(message, self.provider) from None

    def error_for(self, response: httpx.Response, where: str) -> ProviderError:
        status = response.status_code
        detail = describe_error_body(response)
        message = self.redact(f"{self.provider} {where} returned HTTP {status}: {detail}")
        if is_retryable_status(status):
            retry_after = parse_retry_after(response.headers, self._reset_header)
            if status in (429, 503) and retry_after and self.retry.throttled is not None:
                self.retry.throttled(retry_after)
            return ProviderUnavailableError(message, self.provider, status, retry_after)
        return ProviderRejectedError(message, self.provider, status)

    async def request(
        self, method: str, url: str, *, json: Any = None, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        """Send with retries on ProviderUnavailableError; returns a 2xx response."""

        def attempt() -> Awaitable[httpx.Response]:
            return self.send(self.client.build_request(method, url, json=json, headers=headers))

        return await call_with_retries(self.provider, self.retry, attempt)

    async def request_json(
        self, method: str, url: str, *, json: Any = None, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        response = await self.request(method, url, json=json, headers=headers)
        return self.json_object(response)

    def json_object(self, response: httpx.Response) -> dict[str, Any]:
        """The body as a JSON object; anything else is a final, non-retryable answer."""
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            where = f"{response.request.method} {response.request.url.path}"
            message = f"{self.provider} {where} returned a body that is not a JSON object"
            raise ProviderRejectedError(message, self.provider, response.status_code)
        return body


def decode_base64_image(provider: str, value: Any) -> bytes:
    """Image bytes from plain base64 or a `data:` URL; garbage is a final error."""
    if not isinstance(value, str) or not value:
        raise ProviderRejectedError(f"{provider} returned no image data", provider)
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        message = f"{provider} returned invalid base64 image data"
        raise ProviderRejectedError(message, provider) from None
