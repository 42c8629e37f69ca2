"""Venice AI image generation (`POST {base}/image/generate`, base64 JSON answer)."""

from __future__ import annotations

from typing import Any

import structlog

from consumers.providers.base import ProviderHttp, RetryPolicy, decode_base64_image
from consumers.providers.venice import RATE_LIMIT_RESET_HEADER
from shared.config_values import Secret
from shared.errors import ProviderRejectedError


class VeniceImageClient:
    """ImageClient for Venice; asks for PNG as base64 JSON rather than a raw binary body."""

    name = "venice_image"

    def __init__(
        self,
        api_key: Secret,
        *,
        base_url: str = "https://api.venice.ai/api/v1",
        model: str = "wai-Illustrious",
        safe_mode: bool = True,
        default_negative_prompt: str | None = None,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.model = model
        self.safe_mode = safe_mode
        self.default_negative_prompt = default_negative_prompt
        self._http = ProviderHttp(
            self.name,
            base_url,
            timeout=timeout,
            retry=retry or RetryPolicy(),
            secret=api_key,
            reset_header=RATE_LIMIT_RESET_HEADER,
        )

    async def generate(self, prompt: str, negative_prompt: str | None = None) -> bytes:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "safe_mode": self.safe_mode,
            "format": "png",
            "return_binary": False,
        }
        negative = negative_prompt if negative_prompt is not None else self.default_negative_prompt
        if negative:
            body["negative_prompt"] = negative
        response = await self._http.request("POST", "/image/generate", json=body)
        if response.headers.get("x-venice-is-blurred") == "true":
            # Not an error, but operators should see how often safe mode blurs the result.
            structlog.get_logger(__name__).info("venice_image_blurred", model=self.model)
        images = self._http.json_object(response).get("images")
        if not isinstance(images, list) or not images:
            raise ProviderRejectedError("venice_image returned no images", self.name)
        return decode_base64_image(self.name, images[0])

    async def aclose(self) -> None:
        await self._http.aclose()
