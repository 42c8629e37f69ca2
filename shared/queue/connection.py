"""The one way to open a Redis client: timeouts longer than any blocking read, retries on blips."""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.config import Settings

# XREADGROUP BLOCK stays well below the socket timeout, so a blocking read never times out.
BLOCK_MS = 2000


class _HiredisPacking:
    """Packs commands with hiredis (C) instead of redis-py's Python loop: the same bytes at
    a sixth of the cost, which was the largest item of the consumer's profile."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:  # e.g. "CLIENT SETNAME"
            args = (*args[0].split(), *args[1:])
        return [hiredis.pack_command(args)]


class FastConnection(_HiredisPacking, Connection):
    pass


class FastSSLConnection(_HiredisPacking, SSLConnection):
    pass


class FastUnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    pass


def connection_class(url: str) -> type[AbstractConnection]:
    """The fast-packing connection class for a redis://, rediss:// or unix:// URL."""
    if url.startswith("rediss://"):
        return FastSSLConnection
    return FastUnixConnection if url.startswith("unix://") else FastConnection


def create_redis(settings: Settings, name: str, max_connections: int = 64) -> Redis:
    """A client over a bounded pool: under a burst, callers wait for a free connection
    (up to the socket timeout) instead of opening hundreds or failing."""
    if settings.redis_socket_timeout * 1000 <= BLOCK_MS:
        raise ValueError("REDIS_SOCKET_TIMEOUT must be longer than the 2 s blocking read")
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        connection_class=connection_class(settings.redis_url),
        max_connections=max_connections,
        timeout=settings.redis_socket_timeout,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=5,
        health_check_interval=30,
        client_name=name,
        retry=Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return Redis.from_pool(pool)


def cancel_requested() -> bool:
    """Whether the current task was asked to stop; loops that end by cancellation check it.

    Python 3.11's `asyncio.wait_for`, which redis-py sends every command through, returns
    normally when a cancel lands just as its call completes: the cancel is lost, and a loop
    waiting for CancelledError runs on (a consumer hung at shutdown this way).
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
