"""Live3D slot: the service has no public API, so this client refuses instead of scraping."""

from __future__ import annotations

from shared.errors import ProviderNotImplementedError

ALTERNATIVES = "IMAGE_PROVIDER=local|replicate|venice|offline"
NO_API_MESSAGE = (
    "Live3D has no public API (only reverse-engineered browser endpoints), so it is not "
    f"supported; choose a working provider with {ALTERNATIVES} (it overrides USE_LIVE3D), "
    "or plug in a client of your own with IMAGE_PROVIDER=module:Class (docs/image-plugins.md)"
)


class Live3DImageClient:
    """ImageClient placeholder kept for the seed's USE_LIVE3D switch; never calls Live3D."""

    name = "live3d"

    async def generate(self, prompt: str, negative_prompt: str | None = None) -> bytes:
        raise ProviderNotImplementedError(NO_API_MESSAGE, self.name)

    async def aclose(self) -> None:
        return None
