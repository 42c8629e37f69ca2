"""Subscribing to the queue's channels on any topology (the waiter and the cancel listener).

On one server (or behind Sentinel) one connection subscribes to all of a listener's channels.
On a cluster the steps announce with SPUBLISH, so each channel is subscribed (SSUBSCRIBE) on
the shard that owns it, one connection per channel: a failover of one shard does not hold up
the others, and a channel whose shard moved is subscribed afresh where it lives now.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any, TypeAlias

from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterPubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.queue.connection import RedisClient
from shared.queue.keys import Keys
from shared.tasks import TaskType

# A cluster client also raises its own exceptions (a slot not covered while a master is
# replaced) outside redis-py's error tree.
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, RedisClusterException, OSError)
CONFIRMED = frozenset({b"subscribe", b"ssubscribe"})
ANNOUNCED = frozenset({b"message", b"smessage"})
# At most this many messages already received are taken in one go.
BURST = 256

# kind (b"subscribe", b"message", ...), channel, data
Message: TypeAlias = tuple[bytes, bytes, Any]


def channel_groups(
    channels: Mapping[str, TaskType], sharded: bool
) -> list[tuple[list[str], list[TaskType]]]:
    """The channels each connection subscribes to, with their task types."""
    if sharded:
        return [([channel], [task_type]) for channel, task_type in channels.items()]
    return [(list(channels), list(channels.values()))]


def open_pubsub(client: RedisClient) -> PubSub:
    """A pub/sub of `client` whose messages skip redis-py's default push handler, which
    formats a debug line of every message whether debug logging is on or not."""
    return client.pubsub(push_handler_func=_as_is)


async def _as_is(response: Any) -> Any:
    return response


async def subscribe(
    client: RedisClient, pubsub: PubSub, keys: Keys, channels: list[str], task_type: TaskType
) -> None:
    """Subscribe `pubsub` (from `client.pubsub()`) to `channels` of `task_type`'s slot."""
    if not isinstance(pubsub, ClusterPubSub):
        await pubsub.subscribe(*channels)
        return
    # A keyed read through the cluster client first: SSUBSCRIBE routes by a slot map it
    # never fetches itself (a fresh client has none), and after a failover the map still
    # names the dead master until a command routed there makes redis-py reload it.
    await client.exists(keys.stream(task_type))
    await pubsub.ssubscribe(*channels)


async def next_messages(pubsub: PubSub, channels: list[str], timeout: float) -> list[Message]:
    """The next messages, none after `timeout`; raises a connection error when a cluster
    channel's shard moved, so the caller subscribes afresh and makes up for lost messages."""
    if not isinstance(pubsub, ClusterPubSub):
        return await _received(pubsub, timeout)
    # redis-py follows a moved shard in the background, but announcements in between are
    # gone and its round robin over old and new nodes delays messages.
    owner = pubsub.cluster.get_node_from_key(channels[0])
    if owner is None or set(pubsub.node_pubsub_mapping) != {owner.name}:
        raise RedisConnectionError("the channel's shard moved")
    message = await pubsub.get_sharded_message(timeout=min(timeout, 1.0))
    if message is None:
        return []
    return [(str(message["type"]).encode(), message["channel"], message["data"])]


async def _received(pubsub: PubSub, timeout: float) -> list[Message]:
    """The next message and those already received behind it, read off the connection.

    redis-py's get_message costs several times the read itself: a timer per read, a retry
    wrapper and a dict per message. Here one deadline covers the whole burst (a message
    cut short by a silent peer cannot hang the read), and the messages come as they are.
    """
    conn: Any = pubsub.connection
    if conn is None:
        raise RedisConnectionError("not subscribed")
    await pubsub.check_health()  # type: ignore[no-untyped-call]  # PING when idle
    replies: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            replies.append(await _read(conn))
            while len(replies) < BURST and await conn.can_read():
                replies.append(await _read(conn))
    except TimeoutError:
        pass  # a reply cut short stays buffered for the next call
    except REDIS_ERRORS:
        if not replies:
            raise
        # Those read so far are handed out; the next call meets the error again.
    return [
        (reply[0], reply[1], reply[2])
        for reply in replies
        if isinstance(reply, list) and len(reply) == 3  # not a health check's PONG
    ]


async def _read(conn: Any) -> Any:
    # math.inf: no timer of redis-py's own (the caller's deadline covers the read).
    return await conn.read_response(timeout=math.inf, disconnect_on_error=False, push_request=True)


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
