"""Where a task type's next entries come from: adopted, claimed from the dead, or read.

Never more entries than the caller can start: as many as it has free slots, and for a gated
provider only as many as it got leases for (taken first; the unused ones go straight back).
While it waits (no lease, no token, a paused provider, or nothing to read) it holds no entry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from dataclasses import dataclass, field

import structlog

from consumers.gates import ProviderGate
from shared.queue import Malformed, Priority, StreamConsumer, TaskEntry
from shared.queue.connection import BLOCK_MS
from shared.queue.reads import ReadBatch
from shared.tasks import TaskType

log = structlog.get_logger(__name__)

Ref = tuple[Priority, str]


@dataclass(frozen=True, slots=True)
class IntakeOptions:
    claim_idle_ms: int
    claim_interval: float
    normal_share: float
    fair: bool  # the type has a user cap: every read goes through the parking read step
    burst: bool


@dataclass(slots=True)
class Taken:
    """Entries to start, and for a gated type the lease each delivery runs under."""

    entries: list[TaskEntry | Malformed]
    leases: dict[Ref, str] = field(default_factory=dict)
    gated: bool = False  # nothing taken for want of a lease: work may still be waiting


class Intake:
    """The reading side of one task type in one consumer."""

    def __init__(
        self,
        consumer: StreamConsumer,
        task_type: TaskType,
        options: IntakeOptions,
        gate: ProviderGate | None,
    ) -> None:
        self.consumer = consumer
        self.task_type = task_type
        self.gate = gate
        self._opts = options
        # Entries left under our own name by an earlier process are taken back first.
        self._adopting = True
        self._last_claim = 0.0
        self._credit = 0.0
        # Leases asked for per read: doubled while reads fill them, back to what a read found
        # otherwise, so an idle consumer does not take (and give back) a lease per free slot.
        self._ask = 1
        # The last read found the streams empty (or short): the next one blocks at once.
        self._drained = False
        self._block_ms = 100 if options.burst else min(BLOCK_MS, 1000)

    async def take(self, free: int, running: Collection[Ref], stopping: asyncio.Event) -> Taken:
        """At most `free` entries to start now; may wait up to about a second for them."""
        if self.gate is None:
            return await self._take_ungated(free, running)
        leases = await self.gate.acquire(min(free, self._ask), stopping)
        if not leases:
            return Taken([], gated=True)
        try:
            entries = await self._claim_or_adopt(len(leases), running)
            batch = ReadBatch(entries) if entries else await self._read(len(leases), True)
        except BaseException:
            for lease in leases:  # held leases are renewed: one never returned would leak
                self.gate.release(lease, used=False)
            raise
        entries = batch.entries
        filled = len(entries) >= len(leases)
        self._ask = min(free, 2 * len(leases)) if filled else max(1, len(entries))
        refs = [e.ref for e in entries if isinstance(e, TaskEntry)]
        for lease in leases[len(refs) :]:
            self.gate.release(lease, used=False)
        if not entries and batch.last_ids is not None:
            await self.consumer.wait_for_new(batch.last_ids, self._block_ms)
        return Taken(entries, dict(zip(refs, leases, strict=False)))

    async def _take_ungated(self, free: int, running: Collection[Ref]) -> Taken:
        entries = await self._claim_or_adopt(free, running)
        if entries:
            return Taken(entries)
        if self._drained and not self._opts.fair:
            return Taken(await self._block(free))
        batch = await self._read(free, self._opts.fair)
        self._drained = len(batch.entries) < free
        if batch.entries:
            return Taken(batch.entries)
        if batch.last_ids is not None:
            await self.consumer.wait_for_new(batch.last_ids, self._block_ms)
            return Taken([])
        if self._opts.fair or batch.recovered:
            return Taken([])
        return Taken(await self._block(free))

    async def _block(self, free: int) -> list[TaskEntry | Malformed]:
        """Nothing was waiting at the last look: block in XREADGROUP like a plain consumer,
        with no read step in front of each task. Half the free slots per stream, so both
        streams together never bring more than there are slots (but one with one slot)."""
        per_stream = max(1, free // 2)
        entries = await self.consumer.read_blocking(
            self.task_type, per_stream, self._block_ms, limit=free
        )
        self._drained = len(entries) < per_stream
        return entries

    def _normal_first(self, count: int) -> int:
        """Slots of this read where the normal stream goes first: its guaranteed share, used
        when it has entries and lost otherwise (it never builds up to starve high)."""
        self._credit += count * self._opts.normal_share
        first = int(self._credit)
        self._credit -= first
        return first

    async def _read(self, count: int, waits: bool) -> ReadBatch:
        """The read step: high first but for normal's share, users at their cap parked."""
        first = self._normal_first(count)
        return await self.consumer.take(self.task_type, count, first, waits=waits)

    async def _claim_or_adopt(
        self, count: int, running: Collection[Ref]
    ) -> list[TaskEntry | Malformed]:
        """Entries left under our own name at start, then dead consumers' (every
        claim_interval); never more than `count`."""
        if self._adopting:
            entries = await self.consumer.adopt(self.task_type, count, running)
            self._adopting = len(entries) >= count
            if entries:
                log.warning("orphans_adopted", task_type=self.task_type, count=len(entries))
                return entries
        now = time.monotonic()
        if now - self._last_claim < self._opts.claim_interval:
            return []
        claimed = await self.consumer.claim(self.task_type, count, self._opts.claim_idle_ms)
        # A full answer may leave more behind: the next round claims again at once (with
        # few leases per read, waiting an interval each time would slow recovery down).
        self._last_claim = 0.0 if len(claimed) >= count else now
        # Our own entries come back when our event loop stalled past the idle time: they
        # are already running here, so they must not start twice.
        return [e for e in claimed if e.ref not in running]
