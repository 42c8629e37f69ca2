"""Venice AI chat completions (any OpenAI-compatible server works: the base URL is a setting)."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from consumers.providers.base import ProviderHttp, RetryPolicy
from shared.errors import ProviderRejectedError

# Venice only: its reset header tells when the request window opens again.
RATE_LIMIT_RESET_HEADER = "x-ratelimit-reset-requests"


class VeniceClient:
    """LLMClient for `POST {base}/chat/completions`, without Venice's own system prompt."""

    name = "venice"

    def __init__(
        self,
        api_key: SecretStr,
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
        data = await self._http.request_json("POST", "/chat/completions", json=body)
        return self._content_of(data)

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
