"""Typed calls of the lease scripts (`lua_leases.py`): KEYS and ARGV from named fields."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from shared.queue.steps import Arg, Step, names


@dataclass(frozen=True, slots=True)
class Admit(Step):
    script: ClassVar[str] = "admit"
    key_names = names("leases bucket paused freed")
    arg_names = names("limit per_ms burst ttl_ms lease_ids...")
    leases: str
    bucket: str
    paused: str
    freed: str
    limit: int  # 0: no cap
    per_ms: float  # 0: no rate
    burst: int
    ttl_ms: int
    lease_ids: Sequence[str]

    def keys(self) -> list[str]:
        return [self.leases, self.bucket, self.paused, self.freed]

    def args(self) -> list[Arg]:
        return [self.limit, repr(self.per_ms), self.burst, self.ttl_ms, *self.lease_ids]


@dataclass(frozen=True, slots=True)
class Release(Step):
    script: ClassVar[str] = "release"
    key_names = names("leases bucket freed")
    arg_names = names("per_ms burst len(used) used_then_unused...")
    leases: str
    bucket: str
    freed: str
    per_ms: float
    burst: int
    used: Sequence[str]
    # Leases whose call never happened: their tokens go back to the bucket.
    unused: Sequence[str]

    def keys(self) -> list[str]:
        return [self.leases, self.bucket, self.freed]

    def args(self) -> list[Arg]:
        return [repr(self.per_ms), self.burst, len(self.used), *self.used, *self.unused]


@dataclass(frozen=True, slots=True)
class RenewLeases(Step):
    script: ClassVar[str] = "renew_leases"
    key_names = names("leases")
    arg_names = names("ttl_ms restore lease_ids...")
    leases: str
    ttl_ms: int
    lease_ids: Sequence[str]
    restore: bool = False  # add back the ids found missing (their calls still run)

    def keys(self) -> list[str]:
        return [self.leases]

    def args(self) -> list[Arg]:
        return [self.ttl_ms, "1" if self.restore else "0", *self.lease_ids]


@dataclass(frozen=True, slots=True)
class Pause(Step):
    script: ClassVar[str] = "pause"
    key_names = names("paused")
    arg_names = names("pause_ms pause_id")
    paused: str
    pause_ms: int
    pause_id: str
