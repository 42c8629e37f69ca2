"""Venice AI chat completions (any OpenAI-compatible server works: the base URL is a setting)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any

import httpx
import orjson

from consumers.providers.base import ProviderHttp, RetryPolicy, log_retry
from shared.config_values import Secret
from shared.errors import (
    ProviderRejectedError,
    ProviderUnavailableError,
    StreamCutError,
)

# Venice only: its reset header tells when the request window opens again.
RATE_LIMIT_RESET_HEADER = "x-ratelimit-reset-requests"


class VeniceClient:
    """LLMClient for `POST {base}/chat/completions`, without Venice's own system prompt."""

    name = "venice"

    def __init__(
        self,
        api_key: Secret,
        *,
        base_url: str = "https://api.venice.ai/api/v1",
        model: str = "venice-uncensored-1-2",
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.model = model
        self._http = ProviderHttp(
            self.name,
            base_url,
            timeout=timeout,
            retry=retry or RetryPolicy(),
            secret=api_key,
            reset_header=RATE_LIMIT_RESET_HEADER,
        )

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> str:
        """Return the assistant's text; an empty or missing answer is a ProviderRejectedError."""
        body = self._body(messages, max_tokens, temperature)
        data = await self._http.request_json("POST", "/chat/completions", json=body)
        return self._content_of(data)

    def _body(
        self, messages: list[dict[str, str]], max_tokens: int | None, temperature: float | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            # Without this Venice prepends its own persona prompt to the character's.
            "venice_parameters": {"include_venice_system_prompt": False},
        }
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_completion_tokens"] = max_tokens
        return body

    async def stream(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncGenerator[str, None]:
        """The reply as text deltas from server-sent events.

        Failures before the first delta are retried from scratch (the retry policy's
        attempts and budget); a break after it raises StreamCutError. A stream that ends
        without any text is a ProviderRejectedError, as in `chat`. A server that ignores
        `stream: true` and answers one JSON chat completion yields its whole text once.
        Closing the iterator closes the HTTP connection (that is how a stop reaches the
        provider).
        """
        body = self._body(messages, max_tokens, temperature) | {"stream": True}
        policy = self._http.retry
        deadline = time.monotonic() + policy.budget_seconds
        attempt = 1
        while True:
            shown = False
            try:
                async for delta in self._stream_once(body):
                    shown = shown or bool(delta.strip())
                    yield delta
            except ProviderUnavailableError as exc:
                if shown:
                    raise StreamCutError(str(exc), self.name, exc.status) from None
                wait = policy.delay(attempt, exc)
                if attempt >= policy.max_attempts or time.monotonic() + wait > deadline:
                    raise
                log_retry(self.name, attempt, wait, exc)
                await asyncio.sleep(wait)
                attempt += 1
                continue
            if not shown:
                raise ProviderRejectedError("venice streamed an empty reply", self.name)
            return

    async def _stream_once(self, body: dict[str, Any]) -> AsyncGenerator[str, None]:
        request = self._http.client.build_request("POST", "/chat/completions", json=body)
        response = await self._http.send(request, stream=True)
        try:
            with self._http.mapped_errors("POST /chat/completions (stream)"):
                if _is_json(response):
                    # A server that ignores `stream: true` sends one chat.completion: the
                    # whole reply, not a stream that ended early.
                    await response.aread()
                    yield self._content_of(self._http.json_object(response))
                    return
                async for line in response.aiter_lines():
                    # Blank lines end events; ':' lines are keep-alive comments; event:, id:
                    # and retry: fields carry nothing for a chat completion.
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    if delta := self._delta_of(data):
                        yield delta
        finally:
            await response.aclose()
        raise ProviderUnavailableError("venice stream ended without [DONE]", self.name)

    def _delta_of(self, data: str) -> str:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            message = f"venice sent a malformed stream chunk ({len(data)} bytes)"
            raise ProviderUnavailableError(message, self.name) from None
        if not isinstance(chunk, dict):
            return ""
        if "error" in chunk:  # OpenAI-compatible servers report a failure mid-stream so
            error = chunk["error"]
            text = error.get("message") if isinstance(error, dict) else error
            message = self._http.redact(f"venice stream error: {text}"[:300])
            raise ProviderUnavailableError(message, self.name)
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return ""  # e.g. the usage chunk of stream_options.include_usage
        delta = choices[0].get("delta")
        return _join_parts(delta.get("content")) if isinstance(delta, dict) else ""

    def _content_of(self, data: dict[str, Any]) -> str:
        choices = data.get("choices")
        # Venice documents `choices` as possibly absent, so its absence is a refusal, not a crash.
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ProviderRejectedError("venice returned no choices", self.name)
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        text = _join_parts(content).strip()
        if not text:
            reason = choices[0].get("finish_reason")
            raise ProviderRejectedError(
                f"venice returned an empty reply (finish_reason={reason})", self.name
            )
        return text

    async def aclose(self) -> None:
        await self._http.aclose()


def _is_json(response: httpx.Response) -> bool:
    media = str(response.headers.get("content-type", "")).split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _join_parts(content: Any) -> str:
    """Content is a string, or (some OpenAI-compatible servers) a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""
