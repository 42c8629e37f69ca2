"""Settings read from the environment and `.env`; built once per process and passed down.

A plain pydantic model filled by `load_settings` (environment over `.env`, explicit values
over both): pydantic-settings did the same at 2 MB more per consumer process.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.errors import ConfigError
from shared.limits import Rate, parse_limits, parse_rate, parse_rates, parse_user_caps


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


# Shop.

DEFAULT_SHOP_PACKS = "d10:diamonds:10:50,d50:diamonds:50:200,e100:energy:100:25"
_PACK_ID = re.compile(r"[a-z0-9_]{1,32}")
# A sanity cap, not Telegram's limit: a typo like 50000 for 500 should stop the start.
MAX_PACK_STARS = 10_000
MAX_PACK_AMOUNT = 1_000_000


class ShopPack(BaseModel):
    """One thing the shop sells: `amount` of a balance for `price` Telegram Stars."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(pattern=_PACK_ID.pattern)
    currency: Literal["energy", "diamonds"]
    amount: int = Field(ge=1, le=MAX_PACK_AMOUNT)
    price: int = Field(ge=1, le=MAX_PACK_STARS)


def _parse_pack(item: str) -> dict[str, str]:
    parts = [part.strip() for part in item.split(":")]
    if len(parts) != 4:
        raise ValueError(f"{item!r} is not id:currency:amount:price_in_stars")
    pack_id, currency, amount, price = parts
    if not _PACK_ID.fullmatch(pack_id):
        raise ValueError(f"{item!r}: the id must be 1-32 of a-z, 0-9 and _")
    if currency not in {"energy", "diamonds"}:
        raise ValueError(f"{item!r}: the currency must be energy or diamonds")
    if not (amount.isdigit() and price.isdigit()):
        raise ValueError(f"{item!r}: amount and price must be whole positive numbers")
    return {"id": pack_id, "currency": currency, "amount": amount, "price": price}


def parse_packs(raw: str) -> list[dict[str, str]]:
    """`id:currency:amount:price,...` into pack fields; ValueError names the bad item.

    An empty value means no packs: the shop then says it is closed.
    """
    packs = [_parse_pack(item) for item in raw.split(",") if item.strip()]
    ids = [pack["id"] for pack in packs]
    if duplicates := sorted({i for i in ids if ids.count(i) > 1}):
        raise ValueError(f"pack ids must be unique: {', '.join(duplicates)}")
    return packs


class Settings(BaseModel):
    """Every setting of the pipeline, with the seed's names and defaults."""

    model_config = ConfigDict(extra="ignore")

    # Redis and the queue (names and defaults from the seed).
    redis_url: str = "redis://localhost:6379/0"
    redis_queue_prefix: str = "ai_girls:queue:"
    redis_result_prefix: str = "ai_girls:result:"
    redis_result_ttl: int = Field(3600, gt=0)
    redis_task_ttl: int = Field(86400, gt=0, description="lifetime of an unfinished task record")
    redis_socket_timeout: float = Field(10.0, gt=0)
    # Topology: one server (default), a Redis Cluster reached through any node of REDIS_URL,
    # or a master found through Sentinel (REDIS_URL then gives only credentials and db).
    redis_cluster: bool = False
    redis_sentinels: list[str] = Field(default_factory=list)
    redis_sentinel_master: str = "mymaster"
    # Enqueue and finish wait for this many replica acknowledgements (WAIT) before returning.
    redis_wait_replicas: int = Field(0, ge=0)
    redis_wait_timeout_ms: int = Field(1000, gt=0)
    max_payload_bytes: int = Field(65536, gt=0)
    max_deliveries: int = Field(5, ge=1)
    claim_idle_seconds: float = Field(6.0, gt=0)
    # A consumer whose heartbeat is older than this is dead: its entries are taken at once.
    consumer_dead_seconds: float = Field(3.0, gt=0)
    shutdown_grace_seconds: float = Field(20.0, ge=0)
    # Live output of streamed replies: one XADD per this many ms or characters, whichever
    # first; the live stream expires this long after its last write.
    live_flush_ms: float = Field(50.0, ge=0)
    live_flush_chars: int = Field(200, ge=1)
    live_ttl_seconds: int = Field(900, gt=0)

    # Consumer concurrency per type (the seed's semaphores).
    max_concurrent_image_generations: int = Field(5, ge=1)
    max_concurrent_reply_generations: int = Field(10, ge=1)
    max_concurrent_prompt_generations: int = Field(10, ge=1)

    # Scheduling across all consumers (shared/limits.py has the syntax).
    provider_limits: dict[str, int] = Field(default_factory=dict)
    provider_rates: dict[str, Rate] = Field(default_factory=dict)
    user_max_in_flight: dict[str, int] = Field(default_factory=lambda: {"generate_image": 1})
    priority_normal_share: float = Field(0.2, ge=0, le=1)

    # Providers.
    use_live3d: bool = False
    use_replicate: bool = False
    llm_provider: LLMProvider = LLMProvider.VENICE
    image_provider: ImageProvider | None = None
    image_default_negative_prompt: str = (
        "lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, "
        "fewer digits, cropped, worst quality, low quality, jpeg artifacts, signature, "
        "watermark, blurry"
    )
    venice_api_key: SecretStr | None = None
    venice_base_url: str = "https://api.venice.ai/api/v1"
    venice_model: str = "venice-uncensored-1-2"
    venice_image_model: str = "wai-Illustrious"
    venice_safe_mode: bool = True
    image_api_url: str = "http://127.0.0.1:7860"
    replicate_api_token: SecretStr | None = None
    replicate_model: str = "black-forest-labs/flux-schnell"
    replicate_base_url: str = "https://api.replicate.com"
    # The offline providers wait this long per call (demo realism, chaos and stream tests).
    offline_delay_seconds: float = Field(0.0, ge=0)
    # The offline LLM streams word by word with this pause between words.
    offline_stream_delay_ms: float = Field(15.0, ge=0)
    provider_timeout_seconds: float = Field(120.0, gt=0)
    provider_retry_seconds: float = Field(20.0, ge=0)
    provider_preflight: Preflight = Preflight.STRICT

    # Database.
    database_url: str = "sqlite+aiosqlite:///./ai_girls.db"
    start_energy: int = Field(100, ge=0)
    start_diamonds: int = Field(10, ge=0)

    # Bot.
    bot_token: SecretStr | None = None
    telegram_api_url: str | None = None
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_host: str = "127.0.0.1"
    webhook_port: int = Field(8080, ge=1, le=65535)
    admin_ids: list[int] = Field(default_factory=list)
    reply_energy_cost: int = Field(1, ge=0)
    image_diamond_cost: int = Field(1, ge=0)
    reply_wait_seconds: float = Field(60.0, gt=0)
    image_wait_seconds: float = Field(180.0, gt=0)
    history_messages: int = Field(20, ge=0)
    max_message_chars: int = Field(2000, ge=1)
    max_prompt_chars: int = Field(500, ge=1)
    user_messages_per_minute: int = Field(20, ge=1)
    # Enqueue is idempotent by task id, so a Redis blip is retried this long before the
    # delivery watcher is left to decide (record found: deliver; gone: lost, refunded).
    enqueue_retry_seconds: float = Field(10.0, ge=0)
    # After "it takes longer", how often a waiting delivery checks that its task still exists.
    delivery_recheck_seconds: float = Field(60.0, gt=0)
    # A task with no record is lost only this long after its delivery row was written.
    lost_grace_seconds: float = Field(30.0, ge=0)
    # One send budget per chat (every bot process, every call that speaks there): at most one
    # call per this many seconds in a private chat, and in a group (Telegram asks 20/min).
    chat_send_interval_seconds: float = Field(1.1, gt=0)
    group_send_interval_seconds: float = Field(3.0, gt=0)
    # Show replies while they are written (drafts in private chats, edits in groups).
    stream_replies: bool = True

    # Operations.
    log_level: str = "INFO"
    log_json: bool | None = None
    metrics_port: int | None = Field(None, ge=0, le=65535)
    # Loopback by default; compose sets 0.0.0.0 so Prometheus can scrape across containers.
    metrics_host: str = "127.0.0.1"
    dashboard_token: SecretStr | None = None

    # Shop (Telegram Stars).
    shop_packs: tuple[ShopPack, ...] = Field(
        default_factory=lambda: tuple(
            map(ShopPack.model_validate, parse_packs(DEFAULT_SHOP_PACKS))
        )
    )
    daily_energy: int = Field(0, ge=0)
    paysupport_contact: str = ""

    @field_validator("admin_ids", "redis_sentinels", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _check_sentinels(cls, value: list[str]) -> list[str]:
        for address in value:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{address!r} is not host:port")
        return value

    @model_validator(mode="after")
    def _one_topology(self) -> Settings:
        if self.redis_cluster and self.redis_sentinels:
            raise ValueError("REDIS_CLUSTER and REDIS_SENTINELS exclude each other")
        return self

    @field_validator("shop_packs", mode="before")
    @classmethod
    def _parse_packs(cls, value: Any) -> Any:
        return parse_packs(value) if isinstance(value, str) else value

    @field_validator("provider_limits", mode="before")
    @classmethod
    def _parse_limits(cls, value: Any) -> Any:
        return parse_limits(value) if isinstance(value, str) else value

    @field_validator("provider_rates", mode="before")
    @classmethod
    def _parse_rates(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_rates(value)
        if isinstance(value, dict):
            return {k: parse_rate(v) if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("user_max_in_flight", mode="before")
    @classmethod
    def _parse_user_caps(cls, value: Any) -> Any:
        return parse_user_caps(value) if isinstance(value, str) else value

    @property
    def gated_providers(self) -> set[str]:
        """Providers whose calls need a global admission (a cap or a rate)."""
        return set(self.provider_limits) | set(self.provider_rates)

    @field_validator("redis_url", "database_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        # Never quote the value: a URL that parses wrongly (an unescaped "/" or "#" in its
        # password) would put a piece of the password into the error.
        if not value:  # no database: consumers and maintenance scripts need only Redis
            return value
        try:
            parts = urlsplit(value)
            _ = parts.port
        except ValueError:
            raise ValueError(
                "malformed URL (percent-encode special characters in the password)"
            ) from None
        if not parts.scheme:
            raise ValueError("not a URL: it must start with a scheme such as redis://")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level


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
    fields = Settings.model_fields
    values: dict[str, Any] = {}
    if _env_file is not None and Path(_env_file).is_file():
        values.update(read_env_file(Path(_env_file)))
    values.update({k.lower(): v for k, v in os.environ.items() if k.lower() in fields})
    values = {k: v for k, v in values.items() if k in fields}
    values.update(overrides)
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            ": ".join(filter(None, [".".join(str(p) for p in err["loc"]).upper(), err["msg"]]))
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
