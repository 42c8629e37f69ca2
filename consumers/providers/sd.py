"""Local AUTOMATIC1111 / Forge Stable Diffusion WebUI (`POST /sdapi/v1/txt2img`)."""

from __future__ import annotations

from typing import Any

from consumers.providers.base import ProviderHttp, RetryPolicy, decode_base64_image
from shared.errors import ProviderRejectedError


class SDImageClient:
    """ImageClient for a WebUI started with `--api`; one image per call."""

    name = "sd"

    def __init__(
        self,
        *,
        base_url: str = "http://127.0.0.1:7860",
        default_negative_prompt: str | None = None,
        steps: int = 25,
        width: int = 512,
        height: int = 768,
        cfg_scale: float = 7.0,
        sampler_name: str = "Euler a",
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.default_negative_prompt = default_negative_prompt
        self.options: dict[str, Any] = {
            "steps": steps,
            "width": width,
            "height": height,
            "cfg_scale": cfg_scale,
            "sampler_name": sampler_name,
            "seed": -1,
            "batch_size": 1,
            "n_iter": 1,
        }
        # A WebUI runs one job at a time, so a large pool would only queue on its lock.
        self._http = ProviderHttp(
            self.name, base_url, timeout=timeout, retry=retry or RetryPolicy()
        )

    async def generate(self, prompt: str, negative_prompt: str | None = None) -> bytes:
        negative = negative_prompt if negative_prompt is not None else self.default_negative_prompt
        body = {**self.options, "prompt": prompt, "negative_prompt": negative or ""}
        data = await self._http.request_json("POST", "/sdapi/v1/txt2img", json=body)
        images = data.get("images")
        if not isinstance(images, list) or not images:
            raise ProviderRejectedError("sd returned no images (send_images off?)", self.name)
        return decode_base64_image(self.name, images[0])

    async def aclose(self) -> None:
        await self._http.aclose()
