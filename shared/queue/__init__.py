"""The Redis Streams queue core."""

from shared.queue.consume import Outcome, StreamConsumer
from shared.queue.inspect import QueueDepth
from shared.queue.records import Delivery, Malformed
from shared.queue.service import QueueService
from shared.tasks import QueueTask, TaskStatus, TaskType

__all__ = [
    "Delivery",
    "Malformed",
    "Outcome",
    "QueueDepth",
    "QueueService",
    "QueueTask",
    "StreamConsumer",
    "TaskStatus",
    "TaskType",
]
