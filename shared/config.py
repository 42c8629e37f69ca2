"""Settings read from the environment and `.env`; built once per process and passed down."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.errors import ConfigError


class LLMProvider(StrEnum):
    VENICE = "venice"
    OFFLINE = "offline"


class ImageProvider(StrEnum):
    LOCAL = "local"
    REPLICATE = "replicate"
    VENICE = "venice"
    OFFLINE = "offline"


class Settings(BaseSettings):
    """Every setting of the pipeline, with the seed's names and defaults."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # Redis and the queue (names and defaults from the seed).
    redis_url: str = "redis://localhost:6379/0"
    redis_queue_prefix: str = "ai_girls:queue:"
    redis_result_prefix: str = "ai_girls:result:"
    redis_result_ttl: int = Field(3600, gt=0)
    redis_task_ttl: int = Field(86400, gt=0, description="lifetime of an unfinished task record")
    redis_socket_timeout: float = Field(10.0, gt=0)
    max_payload_bytes: int = Field(65536, gt=0)
    max_deliveries: int = Field(5, ge=1)
    claim_idle_seconds: float = Field(6.0, gt=0)
    # A consumer whose heartbeat is older than this is dead: its entries are taken at once.
    consumer_dead_seconds: float = Field(3.0, gt=0)
    shutdown_grace_seconds: float = Field(20.0, ge=0)

    # Consumer concurrency per type (the seed's semaphores).
    max_concurrent_image_generations: int = Field(5, ge=1)
    max_concurrent_reply_generations: int = Field(10, ge=1)
    max_concurrent_prompt_generations: int = Field(10, ge=1)

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
    provider_timeout_seconds: float = Field(120.0, gt=0)
    provider_retry_seconds: float = Field(20.0, ge=0)

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
    admin_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
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

    # Operations.
    log_level: str = "INFO"
    log_json: bool | None = None
    metrics_port: int | None = Field(None, ge=0, le=65535)

    @field_validator("admin_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("redis_url", "database_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        # Never quote the value: a URL that parses wrongly (an unescaped "/" or "#" in its
        # password) would put a piece of the password into the error.
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


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning a validation failure into a ConfigError naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
