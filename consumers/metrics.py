"""Prometheus metrics of a consumer: task counters, durations, stream health per type, and
scheduling (provider leases, pauses, tasks waiting on a cap, the busiest users)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog
from redis.exceptions import RedisError

from shared.queue import QueueDepth, QueueService
from shared.queue.inspect import heartbeats
from shared.queue.scheduling import busiest_users, provider_views
from shared.tasks import TaskType

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = structlog.get_logger(__name__)


class Metrics:
    """Counters per task type; a disabled instance costs nothing on the hot path."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.registry = registry
        if registry is None:
            return
        # Imported only when metrics are served: a consumer without them stays smaller.
        from prometheus_client import Counter, Gauge, Histogram  # noqa: PLC0415

        label = ["task_type"]
        self._processed = Counter("tasks_processed", "Tasks completed", label, registry=registry)
        self._failed = Counter("tasks_failed", "Tasks failed for good", label, registry=registry)
        self._retried = Counter("tasks_retried", "Task attempts retried", label, registry=registry)
        self._dead = Counter(
            "tasks_dead_lettered", "Entries dead-lettered", label, registry=registry
        )
        self._in_flight = Gauge("tasks_in_flight", "Tasks running here", label, registry=registry)
        self._duration = Histogram(
            "task_duration_seconds",
            "Handler duration",
            label,
            registry=registry,
            buckets=(0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.waiting = Gauge(
            "stream_waiting", "Entries not yet delivered (group lag)", label, registry=registry
        )
        self.pending = Gauge(
            "stream_pending",
            "Entries delivered, not acked (pending list)",
            label,
            registry=registry,
        )
        self.oldest_pending = Gauge(
            "stream_oldest_pending_seconds",
            "Age of the oldest pending entry",
            label,
            registry=registry,
        )
        self.dead_size = Gauge(
            "stream_dead_letters", "Dead-letter stream size", label, registry=registry
        )
        self.oldest_waiting = Gauge(
            "stream_oldest_waiting_seconds",
            "Age of the oldest entry not yet delivered to any consumer",
            label,
            registry=registry,
        )
        self.consumers_alive = Gauge(
            "stream_consumers_alive",
            "Consumers of the type whose heartbeat is younger than CONSUMER_DEAD_SECONDS",
            label,
            registry=registry,
        )
        self._provider_paused = Gauge(
            "provider_paused",
            "1 while this consumer holds back calls to the provider, else 0",
            ["provider"],
            registry=registry,
        )
        self._scheduling(registry)

    def _scheduling(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Gauge  # noqa: PLC0415

        provider = ["provider"]
        self.leases = Gauge(
            "provider_leases",
            "Calls to the provider running now, all consumers",
            provider,
            registry=registry,
        )
        self.lease_limit = Gauge(
            "provider_lease_limit",
            "PROVIDER_LIMITS of the provider (0: no cap)",
            provider,
            registry=registry,
        )
        self.paused_until = Gauge(
            "provider_paused_until",
            "Unix time the provider's shared pause ends (0: not paused)",
            provider,
            registry=registry,
        )
        self.waiting_on_cap = Gauge(
            "provider_waiting_on_cap",
            "Tasks waiting while the provider admits no new call (cap, rate or pause)",
            provider,
            registry=registry,
        )
        self.parked = Gauge(
            "stream_parked",
            "Tasks parked while their users are at USER_MAX_IN_FLIGHT",
            ["task_type"],
            registry=registry,
        )
        user = ["task_type", "user_id"]
        self.user_running = Gauge(
            "user_tasks_in_flight", "Running tasks of the busiest users", user, registry=registry
        )
        self.user_parked = Gauge(
            "user_tasks_parked", "Parked tasks of the busiest users", user, registry=registry
        )

    @classmethod
    def disabled(cls) -> Metrics:
        return cls(None)

    @property
    def enabled(self) -> bool:
        return self.registry is not None

    def processed(self, task_type: TaskType, seconds: float) -> None:
        if self.registry is not None:
            self._processed.labels(task_type).inc()
            self._duration.labels(task_type).observe(seconds)

    def failed(self, task_type: TaskType) -> None:
        if self.registry is not None:
            self._failed.labels(task_type).inc()

    def retried(self, task_type: TaskType) -> None:
        if self.registry is not None:
            self._retried.labels(task_type).inc()

    def dead_lettered(self, task_type: TaskType) -> None:
        if self.registry is not None:
            self._dead.labels(task_type).inc()

    def set_in_flight(self, task_type: TaskType, count: int) -> None:
        if self.registry is not None:
            self._in_flight.labels(task_type).set(count)

    def set_provider_paused(self, provider: str, paused: bool) -> None:
        if self.registry is not None:
            self._provider_paused.labels(provider).set(1 if paused else 0)


def serve_metrics(port: int, host: str = "127.0.0.1") -> Metrics:
    from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    start_http_server(port, addr=host, registry=registry)
    return metrics


async def watch_streams(
    metrics: Metrics,
    queue: QueueService,
    types: list[TaskType],
    every: float = 5.0,
    providers: dict[str, list[TaskType]] | None = None,
) -> None:
    """Refresh the stream-health gauges; XLEN is not depth, so lag and pending are used.

    Liveness comes from the heartbeats in Redis, not from this process being up: a consumer
    whose runner is stuck stops beating, and its type's count drops even while it is scraped.
    `providers` names the types calling each provider, for the scheduling gauges.
    """
    dead_after = queue.settings.consumer_dead_seconds
    while metrics.enabled:
        depths: dict[TaskType, QueueDepth] = {}
        for task_type in types:
            try:
                depth = await queue.get_queue_depth(task_type)
                beats = await heartbeats(queue.redis, queue.keys, task_type)
            except (RedisError, OSError) as exc:
                log.warning("stream_health_failed", task_type=task_type, error=str(exc))
                continue
            depths[task_type] = depth
            metrics.waiting.labels(task_type).set(depth.waiting)
            metrics.pending.labels(task_type).set(depth.in_flight)
            metrics.parked.labels(task_type).set(depth.parked)
            metrics.oldest_pending.labels(task_type).set(depth.oldest_in_flight_seconds or 0)
            metrics.oldest_waiting.labels(task_type).set(depth.oldest_waiting_seconds or 0)
            metrics.dead_size.labels(task_type).set(depth.dead)
            alive = sum(1 for age in beats.values() if age < dead_after)
            metrics.consumers_alive.labels(task_type).set(alive)
        try:
            await _watch_scheduling(metrics, queue, types, providers or {}, depths)
        except (RedisError, OSError) as exc:
            log.warning("scheduling_health_failed", error=str(exc))
        await asyncio.sleep(every)


async def _watch_scheduling(
    metrics: Metrics,
    queue: QueueService,
    types: list[TaskType],
    providers: dict[str, list[TaskType]],
    depths: dict[TaskType, QueueDepth],
) -> None:
    views = await provider_views(queue.redis, queue.keys, queue.settings, providers, depths)
    for view in views:
        name = view.state.provider
        if name not in providers:
            continue  # a provider this consumer does not call
        metrics.leases.labels(name).set(view.state.leases)
        metrics.lease_limit.labels(name).set(view.state.limit)
        metrics.paused_until.labels(name).set(view.state.paused_until or 0)
        metrics.waiting_on_cap.labels(name).set(view.waiting_on_cap)
    users = await busiest_users(queue.redis, queue.keys, types)
    # The busiest users change: old label sets go, so a user who left is not shown forever.
    metrics.user_running.clear()
    metrics.user_parked.clear()
    for row in users:
        metrics.user_running.labels(row.task_type, row.user_id).set(row.running)
        metrics.user_parked.labels(row.task_type, row.user_id).set(row.parked)
