"""The one way to open a Redis client: one server, a Redis Cluster, or a master behind Sentinel.

Every client has timeouts longer than any blocking read and retries on blips; the settings
alone decide the topology, so no caller ever branches on it to connect.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias

import hiredis
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
    parse_url,
)
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
)
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.config import Settings

# XREADGROUP BLOCK stays well below the socket timeout, so a blocking read never times out.
BLOCK_MS = 2000

RedisClient: TypeAlias = Redis | RedisCluster


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


class FastSentinelConnection(_HiredisPacking, SentinelManagedConnection):
    """A connection of a master found through Sentinel that talks only to a master.

    Right after a failover a sentinel that has not caught up may still name the old master,
    which may be back already as a replica of the new one: empty while it syncs, and a
    replica serves its data by default. Reads there would find no record (and a waiting
    delivery would count its task as lost). So each new connection asks ROLE, and one that
    reached a replica is closed and refused; redis-py then asks the sentinels again.
    """

    async def connect_to(self, address: tuple[str, int]) -> None:
        await super().connect_to(address)  # type: ignore[no-untyped-call]
        if not self.connection_pool.is_master:
            return
        try:
            await self.send_command("ROLE")
            role = await self.read_response()
        except BaseException:
            await self.disconnect()
            raise
        name = role[0].decode() if isinstance(role[0], bytes) else str(role[0])
        if name != "master":
            await self.disconnect()
            raise RedisConnectionError(f"{address[0]}:{address[1]} is a {name}, not the master")


class FastSentinelSSLConnection(FastSentinelConnection, SSLConnection):
    pass


def connection_class(url: str) -> type[AbstractConnection]:
    """The fast-packing connection class for a redis://, rediss:// or unix:// URL."""
    if url.startswith("rediss://"):
        return FastSSLConnection
    return FastUnixConnection if url.startswith("unix://") else FastConnection


class SentinelRedis(Redis):
    """A master client found through Sentinel; closing it also closes the sentinel clients."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        pool = self.connection_pool
        await super().aclose(close_connection_pool)
        if isinstance(pool, SentinelConnectionPool):
            await pool.sentinel_manager.aclose()


def create_redis(
    settings: Settings, name: str, max_connections: int = 64, *, retries: int = 3
) -> RedisClient:
    """A client of the configured topology, named `name` on the server.

    On one server the pool blocks when full: under a burst, callers wait for a free
    connection (up to the socket timeout) instead of opening hundreds or failing. On a
    cluster `max_connections` bounds each node's pool (and redis-py never retries there).
    `retries=0` makes every dropped connection visible to the caller (the waiter must know
    when it missed messages).
    """
    if settings.redis_socket_timeout * 1000 <= BLOCK_MS:
        raise ValueError("REDIS_SOCKET_TIMEOUT must be longer than the 2 s blocking read")
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": 5,
        "health_check_interval": 30,
        "client_name": name,
        "retry": Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), retries),
    }
    if settings.redis_cluster:
        # Without full coverage the client keeps serving the other shards while one fails over.
        # No retries inside redis-py: it retries a pipeline that could not reach a node by
        # first closing every connection of the client, which would cut the blocking reads of
        # the other shards' types; the callers here retry by themselves.
        options["retry"] = Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), 0)
        return RedisCluster.from_url(
            settings.redis_url,
            max_connections=max_connections,
            require_full_coverage=False,
            **options,
        )
    options["retry_on_error"] = [RedisConnectionError, RedisTimeoutError]
    if settings.redis_sentinels:
        return _sentinel_master(settings, max_connections, options)
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        connection_class=connection_class(settings.redis_url),
        max_connections=max_connections,
        timeout=settings.redis_socket_timeout,
        **options,
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


def _sentinel_master(
    settings: Settings, max_connections: int, options: dict[str, Any]
) -> SentinelRedis:
    """REDIS_URL gives credentials, db and TLS; the sentinels give the master's address, asked
    again on every new connection, so clients follow a promoted replica by themselves."""
    url: dict[str, Any] = dict(parse_url(settings.redis_url))
    url.pop("host", None)
    url.pop("port", None)
    tls = url.pop("connection_class", None) is SSLConnection
    url["connection_class"] = FastSentinelSSLConnection if tls else FastSentinelConnection
    addresses = [address.rpartition(":") for address in settings.redis_sentinels]
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        [(host, int(port)) for host, _, port in addresses],
        sentinel_kwargs={"socket_timeout": 2.0, "socket_connect_timeout": 2.0},
    )
    client: SentinelRedis = sentinel.master_for(
        settings.redis_sentinel_master,
        redis_class=SentinelRedis,
        max_connections=max_connections,
        **url,
        **options,
    )
    return client


def single_connection_client(settings: Settings, name: str) -> RedisClient:
    """A client for a process-wide listener or reader: one connection (per node on a
    cluster) and no retries, so a dropped connection surfaces where lost messages are
    made up for."""
    return create_redis(settings, name, 1, retries=0)
