"""Settings read from the environment and `.env`; built once per process and passed down.

A frozen dataclass filled by `load_settings` (environment over `.env`, explicit values over
both), each value typed and checked by `config_values`: pydantic did the same at 8 MB more
per consumer process.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, get_type_hints

from shared.config_parsers import (
    caps,
    limits,
    log_level,
    networks,
    optional_url,
    packs,
    rates,
    sentinels,
)
from shared.config_values import (
    Secret,
    bounded,
    check_bounds,
    coerce,
    enum_or_class_path,
    split_list,
    to_int,
    to_url,
)
from shared.errors import ConfigError
from shared.limits import Rate
from shared.shop_packs import DEFAULT_SHOP_PACKS, ShopPack, parse_packs


class LLMProvider(StrEnum):
    VENICE = "venice"
    OFFLINE = "offline"


class ImageProvider(StrEnum):
    LOCAL = "local"
    REPLICATE = "replicate"
    VENICE = "venice"
    OFFLINE = "offline"


class Preflight(StrEnum):
    """What a consumer does when a provider check at start fails."""

    STRICT = "strict"
    WARN = "warn"
    OFF = "off"


# A Sentinel's host: a name or IPv4 address, or an IPv6 address in brackets.


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every setting of the pipeline, with the seed's names and defaults.

    Build it with `load_settings` (or `replace`), which type and check every value.
    """

    # Redis and the queue (names and defaults from the seed).
    redis_url: str = "redis://localhost:6379/0"
    redis_queue_prefix: str = "ai_girls:queue:"
    redis_result_prefix: str = "ai_girls:result:"
    # The bot's own state (send budgets, chat turns, throttles, reply records): outside the
    # two prefixes above, so a consumer's ACL user (scripts.redis_acl) cannot reach it.
    redis_bot_prefix: str = "ai_girls:bot:"
    redis_result_ttl: int = bounded(3600, gt=0)
    redis_task_ttl: int = bounded(86400, gt=0)  # lifetime of an unfinished task record
    redis_socket_timeout: float = bounded(10.0, gt=0)
    # Topology: one server (default), a Redis Cluster reached through any node of REDIS_URL,
    # or a master found through Sentinel (REDIS_URL then gives only credentials and db).
    redis_cluster: bool = False
    redis_sentinels: list[str] = field(default_factory=list)
    redis_sentinel_master: str = "mymaster"
    # Enqueue and finish wait for this many replica acknowledgements (WAIT) before returning.
    redis_wait_replicas: int = bounded(0, ge=0)
    redis_wait_timeout_ms: int = bounded(1000, gt=0)
    max_payload_bytes: int = bounded(65536, gt=0)
    max_deliveries: int = bounded(5, ge=1)
    claim_idle_seconds: float = bounded(6.0, gt=0)
    # A consumer whose heartbeat is older than this is dead: its entries are taken at once.
    consumer_dead_seconds: float = bounded(3.0, gt=0)
    shutdown_grace_seconds: float = bounded(20.0, ge=0)
    # Live output of streamed replies: one XADD per this many ms or characters, whichever
    # first; the live stream expires this long after its last write.
    live_flush_ms: float = bounded(50.0, ge=0)
    live_flush_chars: int = bounded(200, ge=1)
    live_ttl_seconds: int = bounded(900, gt=0)

    # Consumer concurrency per type (the seed's semaphores).
    max_concurrent_image_generations: int = bounded(5, ge=1)
    max_concurrent_reply_generations: int = bounded(10, ge=1)
    max_concurrent_prompt_generations: int = bounded(10, ge=1)
    max_concurrent_summaries: int = bounded(2, ge=1)
    max_concurrent_transcriptions: int = bounded(4, ge=1)
    max_concurrent_syntheses: int = bounded(4, ge=1)

    # Scheduling across all consumers (shared/limits.py has the syntax).
    provider_limits: dict[str, int] = field(default_factory=dict)
    provider_rates: dict[str, Rate] = field(default_factory=dict)
    user_max_in_flight: dict[str, int] = field(default_factory=lambda: {"generate_image": 1})
    priority_normal_share: float = bounded(0.2, ge=0, le=1)

    # Providers.
    use_live3d: bool = False
    use_replicate: bool = False
    llm_provider: LLMProvider = LLMProvider.VENICE
    # One of ImageProvider, or `module:Class` (an image plugin, see docs/image-plugins.md).
    image_provider: ImageProvider | str | None = None
    image_default_negative_prompt: str = (
        "lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, "
        "fewer digits, cropped, worst quality, low quality, jpeg artifacts, signature, "
        "watermark, blurry"
    )
    venice_api_key: Secret | None = None
    venice_base_url: str = "https://api.venice.ai/api/v1"
    venice_model: str = "venice-uncensored-1-2"
    venice_image_model: str = "wai-Illustrious"
    venice_safe_mode: bool = True
    image_api_url: str = "http://127.0.0.1:7860"
    # What the local Stable Diffusion WebUI is asked for (txt2img).
    sd_steps: int = bounded(25, ge=1, le=150)
    sd_width: int = bounded(512, ge=64, le=2048)
    sd_height: int = bounded(768, ge=64, le=2048)
    sd_sampler: str = "Euler a"
    sd_cfg_scale: float = bounded(7.0, ge=1, le=30)
    replicate_api_token: Secret | None = None
    replicate_model: str = "black-forest-labs/flux-schnell"
    replicate_base_url: str = "https://api.replicate.com"
    # The offline providers wait this long per call (demo realism, chaos and stream tests).
    offline_delay_seconds: float = bounded(0.0, ge=0)
    # The offline LLM streams word by word with this pause between words.
    offline_stream_delay_ms: float = bounded(15.0, ge=0)
    # Voice in and out, OpenAI-compatible; unset: as LLM_PROVIDER, Venice's URL and key.
    stt_provider: LLMProvider | None = None
    stt_base_url: str | None = None
    stt_api_key: Secret | None = None
    stt_model: str = "openai/whisper-large-v3"
    tts_provider: LLMProvider | None = None
    tts_base_url: str | None = None
    tts_api_key: Secret | None = None
    tts_model: str = "tts-kokoro"
    tts_voice: str = "af_sky"
    provider_timeout_seconds: float = bounded(120.0, gt=0)
    provider_retry_seconds: float = bounded(20.0, ge=0)
    provider_preflight: Preflight = Preflight.STRICT

    # Database.
    database_url: str = "sqlite+aiosqlite:///./ai_girls.db"
    # PostgreSQL's statement_timeout and lock_timeout on the bot's connections (0 = none): a
    # hung statement or a lock never granted fails, and its step is retried, instead of
    # holding one of the CHARGES_AT_ONCE slots (and every message behind it) forever.
    db_statement_timeout_seconds: float = bounded(10.0, ge=0)
    db_lock_timeout_seconds: float = bounded(3.0, ge=0)
    start_energy: int = bounded(100, ge=0)
    start_diamonds: int = bounded(10, ge=0)

    # Bot.
    bot_token: Secret | None = None
    telegram_api_url: str | None = None
    webhook_url: str | None = None
    webhook_secret: Secret | None = None
    webhook_host: str = "127.0.0.1"
    webhook_port: int = bounded(8080, ge=1, le=65535)
    admin_ids: list[int] = field(default_factory=list)
    reply_energy_cost: int = bounded(1, ge=0)
    image_diamond_cost: int = bounded(1, ge=0)
    tts_diamond_cost: int = bounded(1, ge=0)
    # Voice messages longer or bigger than this are refused before anything is charged.
    voice_max_seconds: int = bounded(120, ge=1)
    voice_max_bytes: int = bounded(2_000_000, ge=1)
    # Replies longer than this are read aloud up to it.
    tts_max_chars: int = bounded(1500, ge=1)
    reply_wait_seconds: float = bounded(60.0, gt=0)
    image_wait_seconds: float = bounded(180.0, gt=0)
    history_messages: int = bounded(20, ge=0)
    max_message_chars: int = bounded(2000, ge=1)
    max_prompt_chars: int = bounded(500, ge=1)
    user_messages_per_minute: int = bounded(20, ge=1)
    # Enqueue is idempotent by task id, so a Redis blip is retried this long before the
    # delivery watcher is left to decide (record found: deliver; gone: lost, refunded).
    enqueue_retry_seconds: float = bounded(10.0, ge=0)
    # The bot's database steps (a message's charge, a delivery's claim and apply, its "sent"
    # mark) are retried this long through a database restart or lock.
    db_retry_seconds: float = bounded(60.0, ge=0)
    # Messages charged at once per bot process. A charge is about ten SQL statements of CPU
    # on the bot's one event loop: more at once adds no throughput, and a burst of them
    # would hold back every streamed reply's next draft until the whole burst is charged.
    charges_at_once: int = bounded(2, ge=1)
    # After "it takes longer", how often a waiting delivery checks that its task still exists.
    delivery_recheck_seconds: float = bounded(60.0, gt=0)
    # A task with no record is lost only this long after its delivery row was written.
    lost_grace_seconds: float = bounded(30.0, ge=0)
    # One send budget per chat (every bot process, every call that speaks there): at most one
    # call per this many seconds in a private chat, and in a group (Telegram asks 20/min).
    chat_send_interval_seconds: float = bounded(1.1, gt=0)
    group_send_interval_seconds: float = bounded(3.0, gt=0)
    # Show replies while they are written (drafts in private chats, edits in groups).
    stream_replies: bool = True

    # Operations.
    log_level: str = "INFO"
    log_json: bool | None = None
    metrics_port: int | None = bounded(None, ge=0, le=65535)
    # Loopback by default; compose sets 0.0.0.0 so Prometheus can scrape across containers.
    metrics_host: str = "127.0.0.1"
    dashboard_token: Secret | None = None
    # Sessions live under their own prefix: a consumer's Redis user (keys under the queue
    # and result prefixes) can neither read nor revive them.
    dashboard_redis_prefix: str = "ai_girls:dashboard:"
    # The dashboard is reached over HTTPS (through a TLS proxy): its cookie is then Secure.
    dashboard_https: bool = False
    # Proxies (addresses or networks) whose `X-Forwarded-Proto: https` is believed.
    dashboard_trusted_proxies: list[str] = field(default_factory=list)

    # Shop (Telegram Stars).
    shop_packs: tuple[ShopPack, ...] = parse_packs(DEFAULT_SHOP_PACKS)
    daily_energy: int = bounded(0, ge=0)
    paysupport_contact: str = ""
    # Where the bot journals each payment and refund before the ledger has it (a relative path
    # is under the working directory); replayed at start, every minute and by
    # `scripts.stars_reconcile --apply`. Must survive restarts: a volume in compose.
    payment_spool_dir: str = "payment-spool"

    # The settings given explicitly (environment, `.env` or arguments), not defaulted.
    chosen: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @property
    def gated_providers(self) -> set[str]:
        """Providers whose calls need a global admission (a cap or a rate)."""
        return set(self.provider_limits) | set(self.provider_rates)

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes`, each typed and checked as `load_settings` does."""
        current = {name: getattr(self, name) for name in setting_names()}
        return _build(current | changes, self.chosen | changes.keys())


# Settings whose value is more than a scalar, or has a rule of its own.
_PARSERS: dict[str, Callable[[Any], Any]] = {
    "admin_ids": lambda value: [to_int(item) for item in split_list(value)],
    "redis_sentinels": sentinels,
    "dashboard_trusted_proxies": networks,
    "redis_url": to_url,
    "database_url": to_url,
    "venice_base_url": to_url,
    "image_api_url": to_url,
    "replicate_base_url": to_url,
    "stt_base_url": optional_url,
    "tts_base_url": optional_url,
    "telegram_api_url": optional_url,
    "image_provider": lambda value: enum_or_class_path(ImageProvider, value),
    "webhook_url": optional_url,
    "log_level": log_level,
    "provider_limits": limits,
    "provider_rates": rates,
    "user_max_in_flight": caps,
    "shop_packs": packs,
}


@functools.cache
def _specs() -> dict[str, tuple[dataclasses.Field[Any], Any]]:
    hints = get_type_hints(Settings)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(Settings) if f.name != "chosen"}


def setting_names() -> list[str]:
    """Every setting's name (lower case; the variable is its upper case)."""
    return list(_specs())


def _typed(name: str, value: Any) -> Any:
    spec, hint = _specs()[name]
    parse = _PARSERS.get(name)
    typed = parse(value) if parse is not None else coerce(hint, value)
    check_bounds(spec, typed)
    return typed


def _prefix_overlaps(typed: dict[str, Any]) -> list[str]:
    """The bot's and the dashboard's prefixes must share no key with the consumers' prefixes,
    either way round: the consumer's ACL rule grants everything under those."""

    def value(name: str) -> str:
        return str(typed.get(name, _specs()[name][0].default))

    problems = []
    for owned in ("redis_bot_prefix", "dashboard_redis_prefix"):
        for shared in ("redis_queue_prefix", "redis_result_prefix"):
            mine, theirs = value(owned), value(shared)
            if mine.startswith(theirs) or theirs.startswith(mine):
                problems.append(
                    f"{owned.upper()} ({mine!r}) and {shared.upper()} ({theirs!r}) overlap: "
                    "keys of its own would be reachable by a consumer's Redis user"
                )
    return problems


def _build(values: dict[str, Any], chosen: frozenset[str]) -> Settings:
    typed: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in values.items():
        if name not in _specs():
            problems.append(f"{name.upper()}: not a setting")
            continue
        try:
            typed[name] = _typed(name, value)
        except (ValueError, TypeError) as exc:
            problems.append(f"{name.upper()}: {exc}")
    if typed.get("redis_cluster") and typed.get("redis_sentinels"):
        problems.append("REDIS_CLUSTER and REDIS_SENTINELS exclude each other")
    problems += _prefix_overlaps(typed)
    if problems:
        raise ConfigError(f"invalid configuration: {'; '.join(problems)}")
    return Settings(**typed, chosen=chosen)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a dotenv file; comments, blank lines and `export ` are skipped."""
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip().removeprefix("export ").strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip().lower()] = value
    return values


def load_settings(_env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Build the settings, turning a validation failure into a ConfigError naming the variable.

    Names are case-insensitive; the environment wins over `_env_file`, `overrides` over both.
    """
    fields = _specs()
    values: dict[str, Any] = {}
    if _env_file is not None and Path(_env_file).is_file():
        values.update(read_env_file(Path(_env_file)))
    values.update({k.lower(): v for k, v in os.environ.items() if k.lower() in fields})
    values = {k: v for k, v in values.items() if k in fields}
    values.update(overrides)
    return _build(values, frozenset(values))
