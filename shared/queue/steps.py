"""Typed calls of the Lua steps (scripts in `lua.py`): each class declares its script's KEYS
and ARGV by name and builds them from its fields; tests/queue/test_step_contracts.py checks the
declaration against the builders and the script. Every step, the bot's too, runs through
`scripts.Scripts`. Not frozen: a step is built per task on the hot path, and a frozen
dataclass takes several times longer to build (each field goes through object.__setattr__).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from shared.queue.lua import SCRIPTS

Arg = str | bytes | int | float


def wire(value: Arg | bool | None) -> Arg:
    """A field as an ARGV value: floats exactly (repr), flags as '1'/'0', nothing as ''."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    return value


def names(spaced: str) -> tuple[str, ...]:
    """A step's `key_names` or `arg_names`, written as one space-separated string."""
    return tuple(spaced.split())


class Step:
    """One call of a Lua step.

    `key_names` and `arg_names` name KEYS[1..] and ARGV[1..] in order, each by the field it
    comes from (`len(field)`: that field's length); a last name ending in `?` may be left
    out, one ending in `...` stands for a tail of any length that the script walks in a loop.
    Without such marks, `keys()` and `args()` are built from the names as they are.
    """

    script: ClassVar[str]
    # Name -> Lua text of the scripts this step's owner keeps (the queue's: lua.SCRIPTS).
    library: ClassVar[Mapping[str, str]] = SCRIPTS
    key_names: ClassVar[tuple[str, ...]]
    arg_names: ClassVar[tuple[str, ...]]

    def name(self) -> str:
        """The script this call runs (the finish and fail steps have a lean form)."""
        return self.script

    def body(self) -> str:
        """The script's Lua as its owner wrote it; the runner adds `publish` for the topology."""
        return self.library[self.name()]

    def keys(self) -> list[str]:
        return [getattr(self, name) for name in self.key_names]

    def args(self) -> list[Arg]:
        return [wire(getattr(self, name)) for name in self.arg_names]


@dataclass(slots=True)
class UserSlot:
    """The fairness state a task's end must update: its user's running set and parked list,
    and where a parked task goes back to. Finish and fail take it when the type has a cap."""

    normal: str
    high: str
    users_running: str
    users_parked: str
    running: str
    parked: str
    user_id: str
    cap: int
    records: str
    task_id: str

    def keys(self) -> list[str]:
        return [
            self.normal,
            self.high,
            self.users_running,
            self.users_parked,
            self.running,
            self.parked,
        ]

    def args(self) -> list[Arg]:
        return [self.user_id, self.cap, self.records, self.task_id]


@dataclass(slots=True)
class Enqueue(Step):
    script: ClassVar[str] = "enqueue"
    key_names = names("stream record")
    arg_names = names("entry task_ttl user_id charge_id high?")
    stream: str
    record: str
    entry: bytes
    task_ttl: int
    user_id: int
    charge_id: str | None
    high: bool = False

    def keys(self) -> list[str]:
        return [self.stream, self.record]

    def args(self) -> list[Arg]:
        args: list[Arg] = [self.entry, self.task_ttl, self.user_id, self.charge_id or ""]
        return [*args, "high"] if self.high else args


@dataclass(slots=True)
class Start(Step):
    script: ClassVar[str] = "start"
    key_names = names("records...")
    arg_names = names("consumer started_at task_ttl start_id entries...")
    records: Sequence[str]
    entries: Sequence[bytes]
    consumer: str
    started_at: float
    task_ttl: int
    start_id: str

    def keys(self) -> list[str]:
        return list(self.records)

    def args(self) -> list[Arg]:
        return [self.consumer, repr(self.started_at), self.task_ttl, self.start_id, *self.entries]


@dataclass(slots=True)
class Finish(Step):
    script: ClassVar[str] = "finish"
    key_names = names("stream record user...")
    arg_names = names(
        "group entry_id status finished_at result error result_ttl channel message entry final_id "
        "user..."
    )
    stream: str
    record: str
    group: str
    entry_id: str
    status: str
    finished_at: float
    result: bytes
    error: str
    result_ttl: int
    channel: str
    message: bytes
    entry: bytes
    final_id: str
    user: UserSlot | None = None

    def name(self) -> str:
        return f"{self.script}_fair" if self.user else self.script

    def keys(self) -> list[str]:
        return [self.stream, self.record, *(self.user.keys() if self.user else ())]

    def args(self) -> list[Arg]:
        return [
            self.group,
            self.entry_id,
            self.status,
            repr(self.finished_at),
            self.result,
            self.error,
            self.result_ttl,
            self.channel,
            self.message,
            self.entry,
            self.final_id,
            *(self.user.args() if self.user else ()),
        ]


@dataclass(slots=True)
class Fail(Step):
    script: ClassVar[str] = "fail"
    key_names = names("stream dead record user...")
    arg_names = names(
        "group entry_id reason failed_at result_ttl channel message consumer dead_maxlen final_id "
        "entry create user_then_dead_fields..."
    )
    stream: str
    dead: str
    record: str
    group: str
    entry_id: str
    reason: str
    failed_at: float
    result_ttl: int
    channel: str
    message: bytes
    consumer: str
    dead_maxlen: int
    final_id: str
    # The task json the failed record keeps (a stub naming the task for an unparsable entry).
    entry: bytes
    # A parsed task may recreate a missing record; an unparsable entry never creates one.
    create: bool
    # What the dead-letter entry keeps besides reason, entry id, consumer and time.
    dead_fields: Sequence[tuple[bytes, bytes]] = field(default_factory=tuple)
    user: UserSlot | None = None

    def name(self) -> str:
        return f"{self.script}_fair" if self.user else self.script

    def keys(self) -> list[str]:
        return [self.stream, self.dead, self.record, *(self.user.keys() if self.user else ())]

    def args(self) -> list[Arg]:
        args: list[Arg] = [
            self.group,
            self.entry_id,
            self.reason,
            repr(self.failed_at),
            self.result_ttl,
            self.channel,
            self.message,
            self.consumer,
            self.dead_maxlen,
            self.final_id,
            self.entry,
            "1" if self.create else "0",
            *(self.user.args() if self.user else ("", "", "", "")),
        ]
        for name, value in self.dead_fields:
            args += [name, value]
        return args


@dataclass(slots=True)
class Read(Step):
    script: ClassVar[str] = "read"
    key_names = names("normal high memo users_running users_parked")
    arg_names = names(
        "group consumer count normal_first read_id memo_ttl_ms user_cap records users examine "
        "want_last_ids"
    )
    normal: str
    high: str
    memo: str
    users_running: str
    users_parked: str
    group: str
    consumer: str
    count: int
    normal_first: int
    read_id: str
    memo_ttl_ms: int
    user_cap: int  # 0: no fairness for the type
    records: str
    users: str
    examine: int
    want_last_ids: bool


@dataclass(slots=True)
class Sweep(Step):
    script: ClassVar[str] = "sweep"
    key_names = names("normal high users_running users_parked users...")
    arg_names = names("cap records users...")
    normal: str
    high: str
    users_running: str
    users_parked: str
    # Per user: (user id, its running set, its parked list).
    users: Sequence[tuple[str, str, str]]
    cap: int
    records: str

    def keys(self) -> list[str]:
        keys = [self.normal, self.high, self.users_running, self.users_parked]
        for _, running, parked in self.users:
            keys += [running, parked]
        return keys

    def args(self) -> list[Arg]:
        return [self.cap, self.records, *(user for user, _, _ in self.users)]


@dataclass(slots=True)
class Cancel(Step):
    script: ClassVar[str] = "cancel"
    key_names = names("normal record high users_running users_parked")
    arg_names = names("finished_at result_ttl channel cancels task_id users records user_cap")
    normal: str
    record: str
    high: str
    users_running: str
    users_parked: str
    task_id: str
    finished_at: float
    result_ttl: int
    channel: str
    cancels: str
    users: str
    records: str
    user_cap: int  # 0: no cap


@dataclass(slots=True)
class MarkSettled(Step):
    """A failed task's owner refunded it and told the user: an operator cannot replay it."""

    script: ClassVar[str] = "mark_settled"
    key_names = names("record")
    arg_names = names("")
    record: str
