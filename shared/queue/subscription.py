"""Subscribing to the queue's channels on any topology (the waiter and the cancel listener).

On one server (or behind Sentinel) one connection subscribes to all of a listener's channels.
On a cluster the steps announce with SPUBLISH, so each channel is subscribed (SSUBSCRIBE) on
the shard that owns it, one connection per channel: a failover of one shard does not hold up
the others, and a channel whose shard moved is subscribed afresh where it lives now.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
CONFIRMED = frozenset({"subscribe", "ssubscribe"})
ANNOUNCED = frozenset({"message", "smessage"})


def channel_groups(
    channels: Mapping[str, TaskType], sharded: bool
) -> list[tuple[list[str], list[TaskType]]]:
    """The channels each connection subscribes to, with their task types."""
    if sharded:
        return [([channel], [task_type]) for channel, task_type in channels.items()]
    return [(list(channels), list(channels.values()))]


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


async def next_message(
    pubsub: PubSub, channels: list[str], timeout: float
) -> dict[str, Any] | None:
    """The next message, None after `timeout`; raises a connection error when a cluster
    channel's shard moved, so the caller subscribes afresh and makes up for lost messages."""
    message: dict[str, Any] | None
    if not isinstance(pubsub, ClusterPubSub):
        message = await pubsub.get_message(timeout=timeout)
        return message
    # redis-py follows a moved shard in the background, but announcements in between are
    # gone and its round robin over old and new nodes delays messages.
    owner = pubsub.cluster.get_node_from_key(channels[0])
    if owner is None or set(pubsub.node_pubsub_mapping) != {owner.name}:
        raise RedisConnectionError("the channel's shard moved")
    message = await pubsub.get_sharded_message(timeout=min(timeout, 1.0))
    return message


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
