"""Replicate predictions: create (sync `Prefer: wait`), poll until final, download the output."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import structlog

from consumers.providers.base import (
    ProviderHttp,
    RetryPolicy,
    call_with_retries,
    decode_base64_image,
)
from shared.config_values import Secret
from shared.errors import (
    ConfigError,
    ProviderError,
    ProviderRejectedError,
    ProviderUnavailableError,
)

_MAX_PREFER_WAIT = 60  # the API holds a sync request for at most 60 s


class ReplicateImageClient:
    """ImageClient for Replicate; `model` is `owner/name` (official) or `owner/name:version`.

    Only single HTTP calls are retried, never the whole prediction, so a slow model is not
    paid for twice; a prediction still running at the deadline is cancelled (best effort).
    """

    name = "replicate"

    def __init__(
        self,
        api_token: Secret,
        *,
        base_url: str = "https://api.replicate.com",
        model: str = "black-forest-labs/flux-schnell",
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        poll_interval: float = 0.5,
        prefer_wait: int | None = None,
    ) -> None:
        self.model = model
        self.timeout = timeout
        self.poll_interval = poll_interval
        # The read timeout must outlast the sync wait, as in Replicate's own client.
        default_wait = min(_MAX_PREFER_WAIT, int(timeout) - 1)
        self.prefer_wait = max(1, prefer_wait if prefer_wait is not None else default_wait)
        self._create_path, self._version = _create_target(model)
        self._http = ProviderHttp(
            self.name, base_url, timeout=timeout, retry=retry or RetryPolicy(), secret=api_token
        )

    async def generate(self, prompt: str, negative_prompt: str | None = None) -> bytes:
        deadline = time.monotonic() + self.timeout
        prediction = await self._create(prompt, negative_prompt)
        prediction = await self._wait_for_output(prediction, deadline)
        return await self._download(_first_output(prediction))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _create(self, prompt: str, negative_prompt: str | None) -> dict[str, Any]:
        model_input: dict[str, Any] = {"prompt": prompt}
        # Inputs are model-specific (FLUX has no negative prompt), so send it only when asked.
        if negative_prompt:
            model_input["negative_prompt"] = negative_prompt
        body: dict[str, Any] = {"input": model_input}
        if self._version:
            body["version"] = self._version
        headers = {"Prefer": f"wait={self.prefer_wait}"}
        return await self._http.request_json("POST", self._create_path, json=body, headers=headers)

    async def _wait_for_output(
        self, prediction: dict[str, Any], deadline: float
    ) -> dict[str, Any]:
        while True:
            status = prediction.get("status")
            # With `Prefer: wait` files can arrive while the status still says processing.
            if status == "succeeded" or (status == "processing" and prediction.get("output")):
                return prediction
            pid = prediction.get("id")
            if status in ("failed", "canceled"):
                reason = prediction.get("error") or "no error given"
                message = f"replicate prediction {pid} {status}: {reason}"
                raise ProviderRejectedError(message, self.name)
            if status == "aborted":
                # Cancel-After expired before the model started: capacity, worth a later retry.
                raise ProviderUnavailableError(f"replicate prediction {pid} aborted", self.name)
            if time.monotonic() >= deadline:
                await self._cancel(prediction)
                message = f"replicate prediction {pid} not finished after {self.timeout}s"
                raise ProviderUnavailableError(message, self.name)
            await asyncio.sleep(self.poll_interval)
            prediction = await self._http.request_json("GET", self._url_of(prediction, "get"))

    def _url_of(self, prediction: dict[str, Any], kind: str) -> str:
        pid = prediction.get("id")
        if not isinstance(pid, str) or not pid:
            raise ProviderRejectedError("replicate returned a prediction without id", self.name)
        urls = prediction.get("urls")
        url = _parse_url(urls.get(kind) if isinstance(urls, dict) else None)
        if url is not None and self._may_send_token(url):
            return str(url)
        return f"/v1/predictions/{pid}" + ("/cancel" if kind == "cancel" else "")

    async def _cancel(self, prediction: dict[str, Any]) -> None:
        try:
            url = self._url_of(prediction, "cancel")
            await self._http.send(self._http.client.build_request("POST", url))
        except ProviderError as exc:
            log = structlog.get_logger(__name__)
            log.warning("replicate_cancel_failed", provider=self.name, error=str(exc))

    async def _download(self, output: str) -> bytes:
        if output.startswith("data:"):
            return decode_base64_image(self.name, output)
        url = _parse_url(output)
        if url is None:
            raise ProviderRejectedError(f"replicate output is not a URL: {output[:80]}", self.name)
        # The token goes to the API and Replicate's own file host, never to any other host.
        drop_auth = not self._may_send_token(url)

        async def attempt() -> httpx.Response:
            request = self._http.client.build_request("GET", url)
            if drop_auth:
                del request.headers["Authorization"]
            return await self._http.send(request)

        response = await call_with_retries(self.name, self._http.retry, attempt)
        if not response.content:
            raise ProviderRejectedError("replicate output file is empty", self.name)
        return response.content

    def _may_send_token(self, url: httpx.URL) -> bool:
        """The API origin itself, or Replicate's file host over https (its downloads need the
        token); a prediction pointing anywhere else never gets it."""
        api = self._http.client.base_url
        if (url.scheme, url.host, url.port) == (api.scheme, api.host, api.port):
            return True
        host = url.host.lower()
        return url.scheme == "https" and (host == FILE_HOST or host.endswith("." + FILE_HOST))


# Where Replicate serves output files (its API docs: the download needs the token).
FILE_HOST = "replicate.delivery"


def _create_target(model: str) -> tuple[str, str | None]:
    """Official models take `/v1/models/{owner}/{name}/predictions`; versions `/v1/predictions`."""
    if ":" in model or "/" not in model:
        return "/v1/predictions", model
    owner, _, name = model.partition("/")
    if not owner or not name or "/" in name:
        message = f"REPLICATE_MODEL must be owner/name or owner/name:version, got {model!r}"
        raise ConfigError(message)
    return f"/v1/models/{owner}/{name}/predictions", None


def _parse_url(value: Any) -> httpx.URL | None:
    """An absolute http(s) URL, or None for anything else the API might send."""
    if not isinstance(value, str):
        return None
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        return None
    return url if url.scheme in ("http", "https") and url.host else None


def _first_output(prediction: dict[str, Any]) -> str:
    output = prediction.get("output")
    if isinstance(output, list):
        output = next((item for item in output if isinstance(item, str) and item), None)
    if not isinstance(output, str) or not output:
        pid = prediction.get("id")
        raise ProviderRejectedError(f"replicate prediction {pid} has no output file", "replicate")
    return output
