"""`python -m scripts.reclaim_stuck`: recover work stuck with dead consumers, once or on a loop.

Requeues entries idle too long in a consumer's pending list, dead-letters (failing the task and
announcing it; the bot refunds) tasks that reached the delivery limit, and removes consumers
long gone or dead with their work reclaimed. It needs only Redis.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence

import structlog

from scripts.reclaim_report import ReclaimOptions, ReclaimReport, render
from scripts.runtime import (
    EXIT_FAILED,
    EXIT_OK,
    OUTAGES,
    open_queue,
    repeat_until_stopped,
    run_command,
)
from scripts.tables import print_json, print_text
from shared.config import Settings, load_settings
from shared.errors import ConfigError
from shared.logging import configure_logging
from shared.queue import QueueService, StreamConsumer
from shared.queue.inspect import ConsumerInfo
from shared.queue.keys import Priority
from shared.queue.maintenance import (
    Action,
    Result,
    StuckWork,
    dead_consumers,
    dead_letter_stuck,
    forget_consumer,
    forget_dead_consumers,
    gone_consumers,
    plan_stuck,
    remove_gone_consumers,
    requeue_stuck,
    stuck_entries,
)
from shared.tasks import TaskType

log = structlog.get_logger("reclaim_stuck")


async def _reclaim_type(
    queue: QueueService, options: ReclaimOptions, task_type: TaskType
) -> list[StuckWork]:
    consumer = queue.consumer(f"reclaim-{socket.gethostname()}-{os.getpid()}")
    works: list[StuckWork] = []
    for priority in Priority:
        works += await _reclaim_stream(queue, options, task_type, priority, consumer)
    if any(w.action is Action.DEAD_LETTER for w in works) and not options.dry_run:
        # Taking entries over created this pass's consumer in the group; it owns nothing now.
        await forget_consumer(queue.scripts, queue.keys, task_type, consumer.name)
    return works


async def _reclaim_stream(
    queue: QueueService,
    options: ReclaimOptions,
    task_type: TaskType,
    priority: Priority,
    consumer: StreamConsumer,
) -> list[StuckWork]:
    works: list[StuckWork] = []
    after: str | None = None
    while True:
        stuck = await stuck_entries(
            queue.redis,
            queue.keys,
            task_type,
            options.min_idle_ms,
            count=options.batch,
            after=after,
            priority=priority,
        )
        page = await plan_stuck(
            queue.redis,
            queue.keys,
            task_type,
            stuck,
            max_deliveries=options.max_deliveries,
            max_payload_bytes=queue.settings.max_payload_bytes,
        )
        if not options.dry_run:
            await requeue_stuck(queue.redis, queue.scripts, queue.keys, page, options.min_idle_ms)
            await dead_letter_stuck(consumer, queue.keys, page, options.min_idle_ms)
        works += page
        if len(stuck) < options.batch:
            return works
        after = stuck[-1].entry_id


async def reclaim_pass(queue: QueueService, options: ReclaimOptions) -> ReclaimReport:
    """One pass over every type: stuck entries first, so that consumers whose entries were just
    requeued own nothing and can be removed in the same pass."""
    report = ReclaimReport(options)
    for task_type in options.types:
        report.works += await _reclaim_type(queue, options, task_type)
        report.gone += [(task_type, c) for c in await _remove_gone(queue, options, task_type)]
    for w in report.works:
        if w.result is Result.DEAD_LETTERED:
            log.warning("stuck_task_dead_lettered", task_id=w.task_id, reason=w.reason)
        elif w.result is Result.ERROR:
            log.error("stuck_task_not_dead_lettered", task_id=w.task_id, error=w.detail)
    return report


async def _remove_gone(
    queue: QueueService, options: ReclaimOptions, task_type: TaskType
) -> list[ConsumerInfo]:
    """Consumers idle past --consumer-idle with nothing pending, then consumers whose
    heartbeat is older than --min-idle (and CONSUMER_DEAD_SECONDS) and whose work is back in
    the queue: both are gone, and would otherwise be listed as DEAD forever."""
    idle = options.consumer_idle_ms
    dead_ms = max(options.min_idle_ms, int(queue.settings.consumer_dead_seconds * 1000))
    redis, scripts, keys = queue.redis, queue.scripts, queue.keys
    if options.dry_run:
        gone = await gone_consumers(redis, keys, task_type, idle)
        dead = await dead_consumers(redis, keys, task_type, dead_ms)
    else:
        gone = await remove_gone_consumers(redis, scripts, keys, task_type, idle)
        dead = await forget_dead_consumers(scripts, keys, task_type, dead_ms)
    listed = {c.name for c in gone}
    return gone + [c for c in dead if c.name not in listed]


def parse_args(argv: Sequence[str] | None, settings: Settings) -> argparse.Namespace:
    default_idle = settings.claim_idle_seconds * 2
    parser = argparse.ArgumentParser(prog="python -m scripts.reclaim_stuck", description=__doc__)
    parser.add_argument(
        "--type",
        dest="types",
        action="append",
        metavar="TYPE",
        choices=[t.value for t in TaskType],
        help="task type to check (repeatable; default: every type)",
    )
    parser.add_argument(
        "--min-idle",
        type=float,
        default=default_idle,
        metavar="SECONDS",
        help=f"idle time that makes an entry stuck (default CLAIM_IDLE_SECONDS"
        f" x 2 = {default_idle:g})",
    )
    parser.add_argument(
        "--max-deliveries",
        type=int,
        default=settings.max_deliveries,
        metavar="N",
        help="dead-letter a task started N times (default "
        f"MAX_DELIVERIES = {settings.max_deliveries})",
    )
    parser.add_argument(
        "--consumer-idle",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="remove consumers idle this long with nothing pending (default 3600)",
    )
    parser.add_argument("--dry-run", action="store_true", help="report only, change nothing")
    parser.add_argument(
        "--loop", type=float, metavar="SECONDS", help="repeat every SECONDS until SIGTERM/SIGINT"
    )
    parser.add_argument("--json", action="store_true", help="print JSON (one line per pass)")
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace) -> ReclaimOptions:
    return ReclaimOptions(
        types=[TaskType(t) for t in args.types] if args.types else list(TaskType),
        min_idle_ms=max(0, int(args.min_idle * 1000)),
        max_deliveries=max(1, args.max_deliveries),
        consumer_idle_ms=max(0, int(args.consumer_idle * 1000)),
        dry_run=args.dry_run,
    )


def show(report: ReclaimReport, as_json: bool) -> None:
    if as_json:
        print_json(report.to_json())
    else:
        print_text(render(report))


async def loop_pass(queue: QueueService, options: ReclaimOptions, as_json: bool) -> None:
    """One pass of `--loop`: a quiet pass prints nothing, so a service's log holds only events,
    and an outage is logged rather than fatal, so the service outlives a Redis restart."""
    try:
        report = await reclaim_pass(queue, options)
    except OUTAGES as exc:
        log.error("reclaim_pass_failed", error=f"{type(exc).__name__}: {exc}")
        return
    if report.works or report.gone:
        show(report, as_json)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    options = options_from(args)
    async with open_queue(settings, "reclaim_stuck") as queue:
        if args.loop is not None:
            await repeat_until_stopped(args.loop, lambda: loop_pass(queue, options, args.json))
            return EXIT_OK
        report = await reclaim_pass(queue, options)
        show(report, args.json)
        return EXIT_FAILED if report.failed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    args = parse_args(argv, settings)
    configure_logging(settings.log_level, settings.log_json)
    return run_command(run(args, settings))


if __name__ == "__main__":
    sys.exit(main())
