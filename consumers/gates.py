"""A consumer's side of a provider's global limits: leases before reading, back after the call.

One gate per gated provider per process, shared by the task types that call it. Leases are
renewed with the heartbeat while their calls run and released as soon as a call ends (a
background flush, so a finishing task never waits for it); a lease whose release is lost
expires with the lease ttl, since only held leases are renewed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping

import structlog
from redis.exceptions import RedisError

from consumers.metrics import Metrics
from consumers.providers.factory import provider_for
from shared.config import Settings
from shared.queue import QueueService
from shared.queue.connection import cancel_requested
from shared.queue.leases import ProviderLeases, ProviderLimit
from shared.tasks import TaskType

log = structlog.get_logger(__name__)

# Waits are cut into pieces this long, so a stop or a changed pause is seen soon.
MAX_WAIT = 1.0
MIN_WAIT = 0.01


class ProviderGate:
    """Admission to one provider for this consumer process."""

    def __init__(self, limit: ProviderLimit, metrics: Metrics | None = None) -> None:
        self.limit = limit
        self.provider = limit.provider
        self._metrics = metrics or Metrics.disabled()
        self._leases: ProviderLeases | None = None
        self._held: set[str] = set()
        # Leases a predecessor with our name died holding: handed out before new ones.
        self._inherited: list[str] = []
        self._used: list[str] = []
        self._unused: list[str] = []
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._paused = False

    def attach(self, leases: ProviderLeases) -> None:
        """Connect to Redis (the providers' throttle hook may exist before this)."""
        self._leases = leases

    def _require(self) -> ProviderLeases:
        if self._leases is None:
            raise RuntimeError(f"gate {self.provider} is not attached")
        return self._leases

    @property
    def held(self) -> int:
        return len(self._held)

    async def acquire(self, want: int, stopping: asyncio.Event) -> list[str]:
        """Up to `want` leases; none when paused, out of tokens or at the cap, after waiting
        (without holding anything) until that may have changed, so the caller asks again."""
        leases = self._require()
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop(), name=f"gate-{self.provider}")
            await self._take_back(leases)
        if self._inherited:
            granted, self._inherited = self._inherited[:want], self._inherited[want:]
            return granted
        admission = await leases.admit(want)
        self._held.update(admission.granted)
        self._show_pause(admission.paused)
        if admission.granted:
            return admission.granted
        if admission.at_cap:
            # A release pushes a wake-up; the timeout covers holders that died instead.
            await leases.wait_for_release(MAX_WAIT)
            return []
        delay = admission.paused or admission.token_wait or MIN_WAIT
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), min(delay, MAX_WAIT))
        return []

    async def _take_back(self, leases: ProviderLeases) -> None:
        """At start: the leases of a predecessor with our name become ours (renewed, and
        used first), so the entries we adopt from it start without waiting for them to
        expire, and the cap counts them all along."""
        inherited = await leases.inherited()
        if inherited:
            self._held.update(inherited)
            self._inherited = inherited
            log.warning("leases_taken_back", provider=self.provider, count=len(inherited))

    def release(self, lease_id: str, *, used: bool) -> None:
        """Give a lease back; one never used also gives its token back."""
        if lease_id not in self._held:
            return
        self._held.discard(lease_id)
        (self._used if used else self._unused).append(lease_id)
        self._wakeup.set()

    async def renew(self) -> None:
        """Extend the leases of running calls (with the heartbeat).

        A lease found expired (this process stalled past the ttl) is added back while its
        call still runs, so the count stays true; one released meanwhile is left alone.
        """
        if self._leases is None or not self._held:
            return
        missing = await self._leases.renew(sorted(self._held))
        lost = [lease_id for lease_id in missing if lease_id in self._held]
        if lost:
            await self._leases.renew(lost, restore=True)
            log.warning("leases_lost", provider=self.provider, count=len(lost), action="re-added")

    def throttled(self, seconds: float) -> None:
        """The providers' hook on a 429 or 503 with Retry-After: pause every consumer."""
        if self._leases is None or seconds <= 0:
            return
        task = asyncio.create_task(self._pause(self._leases, seconds))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _pause(self, leases: ProviderLeases, seconds: float) -> None:
        try:
            left = await leases.pause(seconds)
        except (RedisError, OSError) as exc:
            log.warning("provider_pause_failed", provider=self.provider, error=str(exc))
            return
        log.warning("provider_pause_set", provider=self.provider, seconds=round(left, 3))

    def _show_pause(self, paused: float) -> None:
        if paused and not self._paused:
            log.warning("provider_paused", provider=self.provider, seconds=round(paused, 3))
        elif not paused and self._paused:
            log.info("provider_resumed", provider=self.provider)
        if bool(paused) != self._paused:
            self._paused = bool(paused)
            self._metrics.set_provider_paused(self.provider, self._paused)

    async def _flush_loop(self) -> None:
        backoff = 0.05
        while not cancel_requested():
            await self._wakeup.wait()
            self._wakeup.clear()
            if await self._flush():
                backoff = 0.05
                continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
            self._wakeup.set()

    async def _flush(self) -> bool:
        used, unused = self._used, self._unused
        if not used and not unused:
            return True
        self._used, self._unused = [], []
        try:
            await self._require().release(used, unused)
        except (RedisError, OSError) as exc:
            log.warning("lease_release_failed", provider=self.provider, error=str(exc))
            self._used, self._unused = used + self._used, unused + self._unused
            return False
        return True

    async def aclose(self) -> None:
        """Stop the flush loop after one last flush; pauses being set are let finish."""
        for lease_id in self._inherited:
            self.release(lease_id, used=False)
        self._inherited = []
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        if self._leases is not None:
            await self._flush()
        if self._background:
            await asyncio.wait(self._background, timeout=2.0)


def build_gates(
    settings: Settings, types: Iterable[TaskType], metrics: Metrics | None = None
) -> dict[TaskType, ProviderGate]:
    """A gate for each served type whose provider is capped or rate-limited; types calling
    the same provider share one."""
    by_provider: dict[str, ProviderGate] = {}
    gates: dict[TaskType, ProviderGate] = {}
    for task_type in types:
        provider = provider_for(settings, task_type)
        limit = ProviderLimit.from_settings(settings, provider)
        if limit is not None:
            gate = by_provider.setdefault(provider, ProviderGate(limit, metrics))
            gates[task_type] = gate
    return gates


def attach_gates(gates: Mapping[TaskType, ProviderGate], queue: QueueService, holder: str) -> None:
    """Connect the gates; a lease lives as long as a heartbeat says its holder does."""
    ttl_ms = int(queue.settings.consumer_dead_seconds * 1000)
    for gate in set(gates.values()):
        leases = ProviderLeases(
            redis=queue.redis,
            scripts=queue.scripts,
            keys=queue.keys,
            limit=gate.limit,
            holder=holder,
            ttl_ms=ttl_ms,
        )
        gate.attach(leases)
