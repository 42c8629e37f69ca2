"""Every Redis key and channel name: the queue's (`Keys`), shared by the bot and the
consumers, and the bot's own (`BotKeys`), which no consumer may reach.

Queue keys carry the `{task_type}` hash tag: everything one atomic step touches (a type's two
streams, its dead-letter stream, the records of its tasks and its users' fairness state) lives
in one Redis Cluster slot, so the Lua steps stay valid on a cluster. A provider's global
limits live under their own tag, `{provider:NAME}`, and are touched only by the lease scripts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shared.config import Settings
from shared.tasks import TaskType

GROUP = "workers"


class Priority(StrEnum):
    """Which of a type's two streams a task waits in."""

    NORMAL = "normal"
    HIGH = "high"


@dataclass(frozen=True, slots=True)
class Keys:
    queue_prefix: str
    result_prefix: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Keys:
        return cls(settings.redis_queue_prefix, settings.redis_result_prefix)

    def stream(self, task_type: TaskType, priority: Priority = Priority.NORMAL) -> str:
        if priority is Priority.HIGH:
            return f"{self.queue_prefix}{{{task_type}}}:high"
        return f"{self.queue_prefix}{{{task_type}}}"

    def streams(self, task_type: TaskType) -> dict[Priority, str]:
        return {p: self.stream(task_type, p) for p in Priority}

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

    def read_memo(self, task_type: TaskType, consumer: str) -> str:
        """The last batch a consumer read, so a read repeated after a lost reply answers it."""
        return f"{self.queue_prefix}{{{task_type}}}:read:{consumer}"

    def record_prefix(self, task_type: TaskType) -> str:
        return f"{self.result_prefix}{{{task_type}}}:"

    def user_prefix(self, task_type: TaskType) -> str:
        """`<prefix><user id>:running` (set of task ids) and `:parked` (list of entries)."""
        return f"{self.queue_prefix}{{{task_type}}}:user:"

    def user_running(self, task_type: TaskType, user_id: int | str) -> str:
        return f"{self.user_prefix(task_type)}{user_id}:running"

    def user_parked(self, task_type: TaskType, user_id: int | str) -> str:
        return f"{self.user_prefix(task_type)}{user_id}:parked"

    def users_running(self, task_type: TaskType) -> str:
        """Sorted set of user id -> running tasks (the top users, at a glance)."""
        return f"{self.queue_prefix}{{{task_type}}}:users:running"

    def users_parked(self, task_type: TaskType) -> str:
        """Sorted set of user id -> tasks parked while the user is at the cap."""
        return f"{self.queue_prefix}{{{task_type}}}:users:parked"

    # A provider's global admission state, under its own hash tag.
    def leases(self, provider: str) -> str:
        """Sorted set of lease id -> expiry (server ms): the calls running now."""
        return f"{self.queue_prefix}{{provider:{provider}}}:leases"

    def bucket(self, provider: str) -> str:
        """Hash of the token bucket: tokens left and when they were counted (server ms)."""
        return f"{self.queue_prefix}{{provider:{provider}}}:bucket"

    def paused(self, provider: str) -> str:
        """Hash `until` (server ms) and `id` of the shared back-off, expiring with it."""
        return f"{self.queue_prefix}{{provider:{provider}}}:paused"

    def freed(self, provider: str) -> str:
        """List a release pushes to, waking one consumer that waits for a lease."""
        return f"{self.queue_prefix}{{provider:{provider}}}:freed"

    def live(self, task_type: TaskType, task_id: str) -> str:
        """Stream of a running task's text deltas (fields `d`, then a last `end`)."""
        return f"{self.queue_prefix}{{{task_type}}}:live:{task_id}"

    def audio(self, task_type: TaskType, task_id: str) -> str:
        """A voice task's audio, kept out of its entry (shared.queue.audio)."""
        return f"{self.queue_prefix}{{{task_type}}}:audio:{task_id}"

    def cancels(self, task_type: TaskType) -> str:
        """Pub/sub channel of cancel requests (task ids) for the type's consumers."""
        return f"{self.queue_prefix}{{{task_type}}}:cancel"

    def channels(self) -> dict[str, TaskType]:
        return {self.channel(t): t for t in TaskType}


@dataclass(frozen=True, slots=True)
class DashboardKeys:
    """The dashboard's own keys, under DASHBOARD_REDIS_PREFIX (no consumer may touch them)."""

    prefix: str

    @classmethod
    def from_settings(cls, settings: Settings) -> DashboardKeys:
        return cls(settings.dashboard_redis_prefix)

    def session(self, session_id: str) -> str:
        """Present while the session is open: logging out deletes it, expiry ends it."""
        return f"{self.prefix}session:{session_id}"


@dataclass(frozen=True, slots=True)
class BotKeys:
    """The bot's own state, under REDIS_BOT_PREFIX: only bot processes read or write it, and
    a consumer's ACL user (`scripts.redis_acl`) is refused all of it.

    A chat's keys carry the chat id as hash tag, so a step on them touches one cluster slot.
    """

    prefix: str

    @classmethod
    def from_settings(cls, settings: Settings) -> BotKeys:
        return cls(settings.redis_bot_prefix)

    def rate(self, user_id: int) -> str:
        """A user's message counter of the current minute."""
        return f"{self.prefix}rate:{user_id}"

    def photo_lock(self, user_id: int) -> str:
        """The user's photo in progress: its holder's charge id."""
        return f"{self.prefix}photo:{user_id}"

    def budget(self, chat_id: int | str) -> str:
        """Hash: when the chat's next Bot API call may go, and the call in flight."""
        return f"{self.prefix}chat:{{{chat_id}}}:budget"

    def turns(self, chat_id: int) -> str:
        """Sorted set of the chat's update ids waiting for their turn."""
        return f"{self.prefix}chat:{{{chat_id}}}:turns"

    def turn_leases(self, chat_id: int) -> str:
        """Hash: update id -> `deadline_ms:holder` of the chat's turns."""
        return f"{self.prefix}chat:{{{chat_id}}}:leases"

    def view(self, chat_id: int, task_id: str) -> str:
        """Hash: how a reply being written is shown (draft or edit, the edited message)."""
        return f"{self.prefix}chat:{{{chat_id}}}:view:{task_id}"

    def replies(self, chat_id: int) -> str:
        """Set of the chat's replies being written now (what `/stop` stops)."""
        return f"{self.prefix}chat:{{{chat_id}}}:replies"

    def draft(self, chat_id: int, draft_id: int) -> str:
        """The task a draft id shows (what Telegram's stop button names)."""
        return f"{self.prefix}chat:{{{chat_id}}}:draft:{draft_id}"

    def live_wake(self, task_type: TaskType, reader: str) -> str:
        """A live reader's own stream: an entry here ends its blocking XREAD early. The type's
        hash tag puts it in the slot of the type's live streams, read in the same XREAD."""
        return f"{self.prefix}{{{task_type}}}:live_wake:{reader}"
