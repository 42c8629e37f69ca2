"""Image plugins: IMAGE_PROVIDER=module:Class names an operator's own ImageClient.

The contract (docs/image-plugins.md has a worked example):

- the class is importable as `module:Class` from the consumer's Python path;
- it is constructed with no arguments (it reads its own settings, e.g. from the environment);
- the instance has a `name` (text: logs, metrics and PROVIDER_LIMITS use it),
  `async def generate(self, prompt: str, negative_prompt: str | None = None) -> bytes`
  returning PNG, JPEG or WEBP bytes, and `async def aclose(self) -> None`;
- it raises shared.errors.ProviderUnavailableError for what a retry may fix (timeouts, 429,
  5xx) and ProviderRejectedError for what it cannot (refused prompt): anything else counts
  as a failed attempt too, retried by the queue up to MAX_DELIVERIES and then refunded.

The plugin is loaded when the consumer starts: an import that fails, a name that is not a
class, or an instance without that shape stops the start with a ConfigError saying which.
"""

from __future__ import annotations

import importlib
import inspect
from typing import cast

from consumers.providers.base import ImageClient
from consumers.task_run import wait_for_admission
from shared.errors import ConfigError

_METHODS = ("generate", "aclose")


def is_plugin(choice: str) -> bool:
    return ":" in choice


def load_image_plugin(spec: str) -> ImageClient:
    """Import, construct and check the plugin `module:Class`; ConfigError naming the fault."""
    module_name, _, class_name = spec.partition(":")
    where = f"IMAGE_PROVIDER={spec}"
    try:
        module = importlib.import_module(module_name)
    # An operator's module may fail in any way while it loads; each is a configuration fault.
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(
            f"{where}: cannot import {module_name}: {type(exc).__name__}: {exc}"
        ) from None
    plugin = getattr(module, class_name, None)
    if not inspect.isclass(plugin):
        raise ConfigError(f"{where}: {module_name} has no class {class_name}")
    try:
        client = plugin()
    except Exception as exc:  # noqa: BLE001 - as above: the operator's code, any fault
        raise ConfigError(f"{where}: {class_name}() failed: {type(exc).__name__}: {exc}") from None
    _check_shape(where, client)
    return GatedPlugin(cast(ImageClient, client))


class GatedPlugin:
    """The plugin behind the start step's gate, as every built-in provider is: it is called
    only once the run is admitted (a task cancelled while it waited never reaches it)."""

    def __init__(self, plugin: ImageClient) -> None:
        self.name = plugin.name
        self._plugin = plugin

    async def generate(self, prompt: str, negative_prompt: str | None = None) -> bytes:
        await wait_for_admission()
        return await self._plugin.generate(prompt, negative_prompt)

    async def aclose(self) -> None:
        await self._plugin.aclose()


def _check_shape(where: str, client: object) -> None:
    missing = [
        name for name in _METHODS if not inspect.iscoroutinefunction(getattr(client, name, None))
    ]
    if missing:
        wanted = ", ".join(f"async def {name}" for name in missing)
        raise ConfigError(f"{where} does not implement the image plugin protocol: no {wanted}")
    name = getattr(client, "name", None)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where} does not implement the image plugin protocol: no `name`")
