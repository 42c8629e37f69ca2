"""An image plugin shaped like the seed's Live3D client: the worked example of
docs/image-plugins.md, loaded by the tests as IMAGE_PROVIDER=module:Class."""

from __future__ import annotations

import base64
import binascii
import os

import httpx

from shared.errors import ProviderRejectedError, ProviderUnavailableError


class Live3DImageClient:
    """`POST {LIVE3D_URL}/generate` with the prompt; the answer's `image` is base64 PNG."""

    name = "live3d"

    def __init__(self) -> None:
        token = os.environ.get("LIVE3D_TOKEN", "")
        self._http = httpx.AsyncClient(
            base_url=os.environ["LIVE3D_URL"],
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(120.0, connect=10.0),
        )

    async def generate(self, prompt: str, negative_prompt: str | None = None) -> bytes:
        body = {"prompt": prompt, "negative_prompt": negative_prompt or ""}
        try:
            response = await self._http.post("/generate", json=body)
        except httpx.TransportError as exc:
            # Never the URL or the token: only what kind of failure it was.
            failure = f"unreachable: {type(exc).__name__}"
            raise ProviderUnavailableError(failure, self.name) from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise ProviderUnavailableError(f"HTTP {status}", self.name, status)
        if status >= 400:
            raise ProviderRejectedError(f"HTTP {status}", self.name, status)
        try:
            return base64.b64decode(response.json()["image"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise ProviderRejectedError("no image in the answer", self.name, status) from None

    async def aclose(self) -> None:
        await self._http.aclose()


class SyncImageClient:
    """Not a plugin: `generate` must be a coroutine (the consumer awaits it)."""

    name = "sync"

    def generate(self, prompt: str, negative_prompt: str | None = None) -> bytes:
        return b""

    async def aclose(self) -> None:
        return None


class NamelessImageClient:
    """Not a plugin: logs, metrics and limits need its `name`."""

    async def generate(self, prompt: str, negative_prompt: str | None = None) -> bytes:
        return b""

    async def aclose(self) -> None:
        return None


NOT_A_CLASS = Live3DImageClient.__name__
