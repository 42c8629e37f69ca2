"""The Redis Streams queue core."""

from shared.queue.consume import StreamConsumer
from shared.queue.endings import Ending
from shared.queue.inspect import QueueDepth
from shared.queue.keys import Priority
from shared.queue.records import Malformed, TaskEntry
from shared.queue.service import QueueService
from shared.tasks import QueueTask, TaskStatus, TaskType

__all__ = [
    "Ending",
    "Malformed",
    "Priority",
    "QueueDepth",
    "QueueService",
    "QueueTask",
    "StreamConsumer",
    "TaskEntry",
    "TaskStatus",
    "TaskType",
]
