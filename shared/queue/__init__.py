"""The Redis Streams queue core."""

from shared.queue.consume import StreamConsumer
from shared.queue.inspect import QueueDepth
from shared.queue.keys import Priority
from shared.queue.outcomes import Outcome
from shared.queue.records import Delivery, Malformed
from shared.queue.service import QueueService
from shared.tasks import QueueTask, TaskStatus, TaskType

__all__ = [
    "Delivery",
    "Malformed",
    "Outcome",
    "Priority",
    "QueueDepth",
    "QueueService",
    "QueueTask",
    "StreamConsumer",
    "TaskStatus",
    "TaskType",
]
