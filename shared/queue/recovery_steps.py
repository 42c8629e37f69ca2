"""Typed steps that take work over from a consumer that stopped or stalled (scripts in
`lua_recovery.py`), declared like every step in `steps.py`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from shared.queue.steps import Arg, Step, names


@dataclass(slots=True)
class Requeue(Step):
    script: ClassVar[str] = "requeue"
    key_names = names("stream record")
    arg_names = names("group entry_id owner min_idle_ms entry")
    stream: str
    record: str
    group: str
    entry_id: str
    owner: str  # "" hands back whoever holds it
    min_idle_ms: int
    entry: bytes


@dataclass(slots=True)
class Renew(Step):
    script: ClassVar[str] = "renew"
    key_names = names("stream")
    arg_names = names("group consumer entry_ids...")
    stream: str
    group: str
    consumer: str
    entry_ids: Sequence[str]

    def keys(self) -> list[str]:
        return [self.stream]

    def args(self) -> list[Arg]:
        return [self.group, self.consumer, *self.entry_ids]


@dataclass(slots=True)
class Heartbeat(Step):
    script: ClassVar[str] = "heartbeat"
    key_names = names("alive")
    arg_names = names("consumer")
    alive: str
    consumer: str

    def keys(self) -> list[str]:
        return [self.alive]

    def args(self) -> list[Arg]:
        return [self.consumer]


@dataclass(slots=True)
class Claim(Step):
    script: ClassVar[str] = "claim"
    key_names = names("stream alive other?")
    arg_names = names("group consumer min_idle_ms cursor count dead_ms")
    stream: str
    alive: str
    group: str
    consumer: str
    min_idle_ms: int
    cursor: str
    count: int
    dead_ms: int
    # The type's other stream: a dead name is forgotten only once it owns nothing there too.
    other: str | None = None

    def keys(self) -> list[str]:
        return [self.stream, self.alive, *([self.other] if self.other else [])]

    def args(self) -> list[Arg]:
        return [
            self.group,
            self.consumer,
            self.min_idle_ms,
            self.cursor,
            self.count,
            self.dead_ms,
        ]


@dataclass(slots=True)
class DeleteConsumer(Step):
    script: ClassVar[str] = "delete_consumer"
    key_names = names("stream alive other?")
    arg_names = names("group consumer min_idle_ms")
    stream: str
    alive: str
    group: str
    consumer: str
    min_idle_ms: int
    other: str | None = None

    def keys(self) -> list[str]:
        return [self.stream, self.alive, *([self.other] if self.other else [])]

    def args(self) -> list[Arg]:
        return [self.group, self.consumer, self.min_idle_ms]


@dataclass(slots=True)
class ForgetConsumers(Step):
    script: ClassVar[str] = "forget_consumers"
    key_names = names("normal high alive")
    arg_names = names("group min_age_ms names...")
    normal: str
    high: str
    alive: str
    group: str
    min_age_ms: int
    names: Sequence[str] = ()  # none: every consumer with a heartbeat

    def keys(self) -> list[str]:
        return [self.normal, self.high, self.alive]

    def args(self) -> list[Arg]:
        return [self.group, self.min_age_ms, *self.names]


@dataclass(slots=True)
class ReplayDead(Step):
    script: ClassVar[str] = "replay_dead"
    key_names = names("stream dead record")
    arg_names = names("dead_id task_ttl")
    stream: str
    dead: str
    record: str
    dead_id: str
    task_ttl: int
