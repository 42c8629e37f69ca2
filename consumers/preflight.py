"""Checks at a consumer's start that every provider it will call answers and takes its key.

Without them a consumer whose image provider is a Stable Diffusion WebUI that is not running
reports ready, and each image task then fails its retries and is refunded. Each check is one or
two cheap GETs: a list of models or the account, never a generation.

PROVIDER_PREFLIGHT=strict (default) stops the start when a provider cannot be reached or
refuses its key; `warn` logs the same and starts anyway (a provider that comes up later);
`off` skips the checks. A provider that answers with a 5xx or 429 only gets a warning.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import structlog

from consumers.providers.factory import choose_image_provider, voice_endpoint, voice_provider
from shared.config import ImageProvider, LLMProvider, Preflight, Settings
from shared.config_values import Secret
from shared.errors import ConfigError
from shared.tasks import TASK_SPECS, ProviderKind, TaskType

TIMEOUT = httpx.Timeout(10.0, connect=5.0)
_REFUSED = (401, 403)


@dataclass(frozen=True, slots=True)
class Finding:
    """What one check found; `fatal` ones stop a strict start."""

    provider: str
    message: str
    fatal: bool = False
    ok: bool = False


Check = Callable[[httpx.AsyncClient, Settings], Awaitable[list[Finding]]]


def _redact(url: str) -> str:
    """The URL without user and password, fit for a message."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl()


def _auth(secret: Secret | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret.get_secret_value()}"} if secret else {}


async def _get(
    client: httpx.AsyncClient, url: str, headers: dict[str, str]
) -> httpx.Response | str:
    """The response, or why there was none (never naming a header, which holds the key)."""
    try:
        return await client.get(url, headers=headers)
    except httpx.TimeoutException as exc:
        return f"no answer within {TIMEOUT.read:g} s ({type(exc).__name__})"
    except httpx.RequestError as exc:
        return f"{type(exc).__name__}: {exc}"


def _server_trouble(provider: str, where: str, response: httpx.Response) -> Finding | None:
    status = response.status_code
    if status == 429 or status >= 500:
        return Finding(provider, f"{where} answered HTTP {status}; its retries will tell")
    return None


def _refused(provider: str, variable: str, where: str, response: httpx.Response) -> Finding:
    message = f"{variable} was refused by {where} (HTTP {response.status_code})"
    return Finding(provider, message, fatal=True)


async def check_venice(client: httpx.AsyncClient, settings: Settings) -> list[Finding]:
    base = settings.venice_base_url.rstrip("/")
    shown = _redact(base)
    headers = _auth(settings.venice_api_key)
    models = await _get(client, f"{base}/models", headers)
    if isinstance(models, str):
        message = f"VENICE_BASE_URL {shown} does not answer: {models}"
        return [Finding("venice", message, fatal=True)]
    if models.status_code in _REFUSED:
        return [_refused("venice", "VENICE_API_KEY", shown, models)]
    trouble = _server_trouble("venice", shown, models)
    # Venice says whether a key is good on an endpoint any valid key may call; another
    # OpenAI-compatible server has none, and a 404 there just means "not checked".
    limits = await _get(client, f"{base}/api_keys/rate_limits", headers)
    if not isinstance(limits, str) and limits.status_code in _REFUSED:
        return [_refused("venice", "VENICE_API_KEY", shown, limits)]
    return [trouble or Finding("venice", f"{shown} answers", ok=True)]


def _check_voice(kind: str, base_url: str, key: Secret | None) -> Check:
    """GET {base}/models with the voice provider's key (STT_* or TTS_*, else Venice's)."""

    async def check(client: httpx.AsyncClient, settings: Settings) -> list[Finding]:
        base = base_url.rstrip("/")
        shown = _redact(base)
        models = await _get(client, f"{base}/models", _auth(key))
        if isinstance(models, str):
            message = f"{kind}_BASE_URL {shown} does not answer: {models}"
            return [Finding(kind.lower(), message, fatal=True)]
        if models.status_code in _REFUSED:
            return [_refused(kind.lower(), f"{kind}_API_KEY", shown, models)]
        trouble = _server_trouble(kind.lower(), shown, models)
        return [trouble or Finding(kind.lower(), f"{shown} answers", ok=True)]

    return check


def _voice_checks(settings: Settings, kinds: set[ProviderKind]) -> dict[str, Check]:
    """A voice endpoint that is Venice's own is checked once, as Venice."""
    chosen = {
        ProviderKind.STT: (
            "STT",
            settings.stt_provider,
            settings.stt_base_url,
            settings.stt_api_key,
        ),
        ProviderKind.TTS: (
            "TTS",
            settings.tts_provider,
            settings.tts_base_url,
            settings.tts_api_key,
        ),
    }
    checks: dict[str, Check] = {}
    for kind, (name, provider, url, key) in chosen.items():
        if kind not in kinds or voice_provider(settings, provider) is not LLMProvider.VENICE:
            continue
        base, secret = voice_endpoint(settings, url, key)
        if base == settings.venice_base_url and secret == settings.venice_api_key:
            checks["venice"] = check_venice
        else:
            checks[name.lower()] = _check_voice(name, base, secret)
    return checks


def _sd_missing(settings: Settings, reason: str) -> str:
    url = _redact(settings.image_api_url)
    why = (
        "IMAGE_PROVIDER=local"
        if settings.image_provider is ImageProvider.LOCAL
        else "IMAGE_PROVIDER is unset and USE_REPLICATE is false, so images go to the local "
        "Stable Diffusion WebUI"
    )
    return (
        f"{why}, but IMAGE_API_URL {url} {reason}. Start the WebUI with --api there, or set "
        "IMAGE_PROVIDER=venice (uses VENICE_API_KEY), replicate (REPLICATE_API_TOKEN) or "
        "offline (placeholder images)"
    )


async def check_sd(client: httpx.AsyncClient, settings: Settings) -> list[Finding]:
    base = settings.image_api_url.rstrip("/")
    shown = _redact(base)
    models = await _get(client, f"{base}/sdapi/v1/sd-models", {})
    if isinstance(models, str):
        return [Finding("sd", _sd_missing(settings, f"does not answer ({models})"), fatal=True)]
    if models.status_code == 404:
        reason = "has no /sdapi/v1 API (HTTP 404)"
        return [Finding("sd", _sd_missing(settings, reason), fatal=True)]
    if models.status_code in _REFUSED:
        message = f"IMAGE_API_URL {shown} refused the request (HTTP {models.status_code})"
        return [Finding("sd", message, fatal=True)]
    trouble = _server_trouble("sd", shown, models)
    return [trouble or Finding("sd", f"{shown} answers", ok=True)]


async def check_replicate(client: httpx.AsyncClient, settings: Settings) -> list[Finding]:
    base = settings.replicate_base_url.rstrip("/")
    shown = _redact(base)
    account = await _get(client, f"{base}/v1/account", _auth(settings.replicate_api_token))
    if isinstance(account, str):
        message = f"REPLICATE_BASE_URL {shown} does not answer: {account}"
        return [Finding("replicate", message, fatal=True)]
    if account.status_code in _REFUSED:
        return [_refused("replicate", "REPLICATE_API_TOKEN", shown, account)]
    trouble = _server_trouble("replicate", shown, account)
    return [trouble or Finding("replicate", f"{shown} answers", ok=True)]


def planned_checks(settings: Settings, types: Sequence[TaskType]) -> dict[str, Check]:
    """One check per provider the served types call (Venice once, if it does both)."""
    checks: dict[str, Check] = {}
    kinds = {TASK_SPECS[t].provider for t in types}
    if ProviderKind.LLM in kinds and settings.llm_provider is LLMProvider.VENICE:
        checks["venice"] = check_venice
    if ProviderKind.IMAGE in kinds:
        image = choose_image_provider(settings)
        by_choice: dict[str, Check] = {
            ImageProvider.LOCAL.value: check_sd,
            ImageProvider.REPLICATE.value: check_replicate,
            ImageProvider.VENICE.value: check_venice,
        }
        if image in by_choice:
            checks[image if image != ImageProvider.LOCAL.value else "sd"] = by_choice[image]
    checks.update(_voice_checks(settings, kinds))
    return checks


async def run_checks(settings: Settings, types: Sequence[TaskType]) -> list[Finding]:
    checks = planned_checks(settings, types)
    if not checks:
        return []
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        found = await asyncio.gather(*(check(client, settings) for check in checks.values()))
    return [finding for findings in found for finding in findings]


async def check_providers(settings: Settings, types: Sequence[TaskType]) -> None:
    """Check the providers of `types`; raise ConfigError naming each one that is missing
    (PROVIDER_PREFLIGHT=strict), or only log it (warn)."""
    if settings.provider_preflight is Preflight.OFF:
        return
    log = structlog.get_logger(__name__)
    findings = await run_checks(settings, types)
    for finding in findings:
        if finding.ok:
            log.info("provider_ready", provider=finding.provider, detail=finding.message)
        else:
            log.warning("provider_check_failed", provider=finding.provider, error=finding.message)
    fatal = [f.message for f in findings if f.fatal]
    if fatal and settings.provider_preflight is Preflight.STRICT:
        advice = "PROVIDER_PREFLIGHT=warn starts anyway"
        raise ConfigError(f"provider check failed: {'; '.join(fatal)} ({advice})")
