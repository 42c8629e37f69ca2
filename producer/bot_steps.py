"""Typed calls of the bot's own Lua scripts (`bot_lua.py`), run by the queue's runner
(`shared.queue.scripts.Scripts`) like every other step: KEYS and ARGV come from the named
fields, in the order `key_names` and `arg_names` give."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from producer.bot_lua import BOT_SCRIPTS
from shared.queue.steps import Step, names


class BotStep(Step):
    """A step on the bot's own keys (REDIS_BOT_PREFIX)."""

    library: ClassVar[Mapping[str, str]] = BOT_SCRIPTS


@dataclass(frozen=True, slots=True)
class BudgetTake(BotStep):
    """Book the chat's next slot (`wait`), or start a call only if the chat is free now."""

    script: ClassVar[str] = "bot_budget_take"
    key_names = names("budget")
    arg_names = names("interval_ms wait lease_ms owner")
    budget: str
    interval_ms: int
    wait: bool
    lease_ms: int
    owner: str


@dataclass(frozen=True, slots=True)
class BudgetStart(BotStep):
    """Start a call on the slot booked before, once the call before it was answered."""

    script: ClassVar[str] = "bot_budget_start"
    key_names = names("budget")
    arg_names = names("lease_ms owner")
    budget: str
    lease_ms: int
    owner: str


@dataclass(frozen=True, slots=True)
class BudgetAnswered(BotStep):
    """The call in flight was answered: the chat stays quiet for `quiet_ms`."""

    script: ClassVar[str] = "bot_budget_answered"
    key_names = names("budget")
    arg_names = names("quiet_ms")
    budget: str
    quiet_ms: int


@dataclass(frozen=True, slots=True)
class BudgetRelease(BotStep):
    """A call that never left frees the chat, if it is still the one in flight."""

    script: ClassVar[str] = "bot_budget_release"
    key_names = names("budget")
    arg_names = names("owner")
    budget: str
    owner: str


@dataclass(frozen=True, slots=True)
class TurnEnter(BotStep):
    """Line an update up for its chat's turn; true when it is the update's turn now."""

    script: ClassVar[str] = "bot_turn_enter"
    key_names = names("turns leases")
    arg_names = names("update_id holder lease_ms")
    turns: str
    leases: str
    update_id: int
    holder: str
    lease_ms: int


@dataclass(frozen=True, slots=True)
class TurnRenew(BotStep):
    """Extend the update's lease while it is handled; false once another process took it."""

    script: ClassVar[str] = "bot_turn_renew"
    key_names = names("turns leases")
    arg_names = names("update_id holder lease_ms")
    turns: str
    leases: str
    update_id: int
    holder: str
    lease_ms: int


@dataclass(frozen=True, slots=True)
class TurnLeave(BotStep):
    """Give the chat's turn back (only this process's own)."""

    script: ClassVar[str] = "bot_turn_leave"
    key_names = names("turns leases")
    arg_names = names("update_id holder")
    turns: str
    leases: str
    update_id: int
    holder: str


@dataclass(frozen=True, slots=True)
class PhotoLockTake(BotStep):
    """Take the user's photo lock for `holder`, or find it already held by `holder`."""

    script: ClassVar[str] = "bot_photo_lock_take"
    key_names = names("lock")
    arg_names = names("holder ttl_seconds")
    lock: str
    holder: str
    ttl_seconds: int


@dataclass(frozen=True, slots=True)
class PhotoLockRelease(BotStep):
    """Release the user's photo lock if `holder` still holds it."""

    script: ClassVar[str] = "bot_photo_lock_release"
    key_names = names("lock")
    arg_names = names("holder")
    lock: str
    holder: str
