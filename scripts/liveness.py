"""Consumer liveness as the operations tools show it (queuectl stats, the dashboard)."""

from __future__ import annotations

from shared.queue import QueueDepth, QueueService
from shared.queue.inspect import ConsumerInfo, heartbeats, queue_depth
from shared.tasks import TaskType


async def depth_with_liveness(queue: QueueService, task_type: TaskType) -> QueueDepth:
    """Depth and consumers, liveness judged by CONSUMER_DEAD_SECONDS, plus consumers that
    beat but never read (XINFO CONSUMERS lists a consumer only once it has read)."""
    dead_after = queue.settings.consumer_dead_seconds
    depth = await queue_depth(
        queue.redis, queue.keys, task_type, with_consumers=True, dead_after=dead_after
    )
    listed = {c.name for c in depth.consumers}
    for name, age in (await heartbeats(queue.redis, queue.keys, task_type)).items():
        if name not in listed:
            depth.consumers.append(ConsumerInfo(name, 0, age, age, age < dead_after))
    depth.consumers.sort(key=lambda c: c.name)
    return depth
