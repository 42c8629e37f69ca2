"""Every Redis key and channel name of the queue; all carry the `{task_type}` hash tag.

Everything one atomic step touches (a type's stream, its dead-letter stream and the records of
its tasks) lives in one Redis Cluster slot, so the Lua steps stay valid on a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import Settings
from shared.tasks import TaskType

GROUP = "workers"


@dataclass(frozen=True, slots=True)
class Keys:
    queue_prefix: str
    result_prefix: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Keys:
        return cls(settings.redis_queue_prefix, settings.redis_result_prefix)

    def stream(self, task_type: TaskType) -> str:
        return f"{self.queue_prefix}{{{task_type}}}"

    def dead(self, task_type: TaskType) -> str:
        return f"{self.queue_prefix}{{{task_type}}}:dead"

    def record(self, task_type: TaskType, task_id: str) -> str:
        return f"{self.result_prefix}{{{task_type}}}:{task_id}"

    def channel(self, task_type: TaskType) -> str:
        return f"{self.queue_prefix}{{{task_type}}}:done"

    def alive(self, task_type: TaskType) -> str:
        """Hash of consumer name -> last heartbeat (unix ms) of the type's consumers."""
        return f"{self.queue_prefix}{{{task_type}}}:alive"

    def completions(self, task_type: TaskType) -> str:
        """Hash of unix minute -> tasks finished in it (the dashboard's chart)."""
        return f"{self.queue_prefix}{{{task_type}}}:done_per_minute"

    def live(self, task_type: TaskType, task_id: str) -> str:
        """Stream of a running task's text deltas (fields `d`, then a last `end`)."""
        return f"{self.queue_prefix}{{{task_type}}}:live:{task_id}"

    def live_wake(self, task_type: TaskType, reader: str) -> str:
        """A live reader's own stream: an entry here ends its blocking XREAD early."""
        return f"{self.queue_prefix}{{{task_type}}}:live_wake:{reader}"

    def cancels(self, task_type: TaskType) -> str:
        """Pub/sub channel of cancel requests (task ids) for the type's consumers."""
        return f"{self.queue_prefix}{{{task_type}}}:cancel"

    def channels(self) -> dict[str, TaskType]:
        return {self.channel(t): t for t in TaskType}

    # The bot's own per-user state, under the queue prefix (one namespace per deploy).
    def bot_rate(self, user_id: int) -> str:
        return f"{self.queue_prefix}bot:rate:{user_id}"

    def bot_photo_lock(self, user_id: int) -> str:
        return f"{self.queue_prefix}bot:photo:{user_id}"
