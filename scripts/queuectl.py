"""`python -m scripts.queuectl`: look at the queues and act on them (stats, task, clear, dead)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from scripts import queuectl_dead
from scripts.liveness import depth_with_liveness
from scripts.queuectl_sched import load_scheduling, render_scheduling, scheduling_json
from scripts.queuectl_tasks import show_task
from scripts.runtime import (
    EXIT_OK,
    EXIT_USAGE,
    confirm,
    open_queue,
    repeat_until_stopped,
    run_command,
)
from scripts.tables import duration, print_json, print_text, table, timestamp
from shared.config import Settings, load_settings
from shared.errors import ConfigError
from shared.logging import configure_logging
from shared.queue import QueueDepth, QueueService
from shared.queue.inspect import ConsumerInfo
from shared.tasks import TaskType

TYPES = [t.value for t in TaskType]


def depth_json(d: QueueDepth) -> dict[str, Any]:
    return {
        "task_type": d.task_type,
        "stream_length": d.stream_length,
        "waiting": d.waiting,
        "waiting_high": d.waiting_high,
        "parked": d.parked,
        "in_flight": d.in_flight,
        "dead": d.dead,
        "oldest_waiting_seconds": d.oldest_waiting_seconds,
        "oldest_in_flight_seconds": d.oldest_in_flight_seconds,
        "consumers": [
            {
                "name": c.name,
                "pending": c.pending,
                "idle_seconds": c.idle_seconds,
                "alive": c.alive,
                "heartbeat_age_seconds": c.heartbeat_age,
            }
            for c in d.consumers
        ],
    }


def _depth_row(d: QueueDepth) -> list[object]:
    oldest = [duration(d.oldest_waiting_seconds), duration(d.oldest_in_flight_seconds)]
    return [d.task_type, d.stream_length, d.waiting, d.in_flight, *oldest, *_of_waiting(d), d.dead]


def _of_waiting(d: QueueDepth) -> list[object]:
    """Of the waiting tasks: those in the high-priority stream, those parked at a user cap."""
    return [d.waiting_high, d.parked]


def _state(consumer: ConsumerInfo) -> str:
    if consumer.alive is None:
        return "-"
    return "ALIVE" if consumer.alive else "DEAD"


def _heartbeat(consumer: ConsumerInfo) -> str:
    # A consumer that never sent one predates heartbeats or died before its first.
    age = consumer.heartbeat_age
    return "never" if age is None else f"{duration(age)} ago"


def render_stats(depths: Sequence[QueueDepth]) -> str:
    headers = ["TYPE", "STREAM", "WAITING", "IN FLIGHT", "OLDEST WAITING", "OLDEST IN FLIGHT"]
    headers += ["HIGH", "PARKED"]
    rows = [_depth_row(d) for d in depths]
    consumers: list[list[object]] = [
        [d.task_type, c.name, _state(c), _heartbeat(c), c.pending, duration(c.idle_seconds)]
        for d in depths
        for c in d.consumers
    ]
    text = table([*headers, "DEAD"], rows)
    if consumers:
        columns = ["TYPE", "CONSUMER", "STATE", "HEARTBEAT", "PENDING", "IDLE"]
        text += "\n\n" + table(columns, consumers)
    else:
        text += "\n\nno consumers"
    return text


async def stats(queue: QueueService, args: argparse.Namespace) -> int:
    async def once() -> None:
        depths = [await depth_with_liveness(queue, t) for t in TaskType]
        scheduling = await load_scheduling(queue, depths)
        if args.json:
            body = {"at": time.time(), "types": [depth_json(d) for d in depths]}
            print_json(body | scheduling_json(scheduling))
            return
        if args.watch is not None:
            # Clear the screen on a terminal so the numbers update in place.
            prefix = "\x1b[2J\x1b[H" if sys.stdout.isatty() else "\n"
            print_text(f"{prefix}{timestamp(time.time())}")
        print_text(render_stats(depths) + "\n\n" + render_scheduling(scheduling))

    if args.watch is None:
        await once()
    else:
        await repeat_until_stopped(args.watch, once)
    return EXIT_OK


async def clear(queue: QueueService, args: argparse.Namespace, settings: Settings) -> int:
    """Fail every unfinished task of the type; the bot refunds each paid one it announces."""
    task_type = TaskType(args.type)
    depth = await queue.get_queue_depth(task_type)
    question = f"Fail {depth.unfinished} unfinished {task_type} tasks (the bot refunds them)?"
    if not args.yes and not await confirm(question):
        return EXIT_USAGE
    failed = await queue.drain(task_type, "cleared by operator")
    print_text(f"cleared {len(failed)} {task_type} tasks; their failures were announced")
    return EXIT_OK


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.queuectl", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("stats", help="depth, consumers and dead letters of every type")
    p.add_argument("--json", action="store_true", help="print JSON (one line per refresh)")
    p.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS")
    p = commands.add_parser(
        "task",
        help="one task's record (results summarized)",
        description="Show one task: status, attempts, consumer, times, error, payload and "
        "result (images and long texts summarized). Exit code 1 if there is no such task.",
    )
    p.add_argument(
        "task_id",
        help="the task id (printed by the bot's logs, queuectl dead list, the dashboard)",
    )
    p.add_argument("--json", action="store_true", help="print the record as one JSON object")
    p = commands.add_parser("clear", help="fail every unfinished task of a type (the bot refunds)")
    p.add_argument("type", choices=TYPES, metavar="TYPE", help=f"task type: {', '.join(TYPES)}")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    queuectl_dead.add_commands(commands.add_parser("dead", help="the dead-letter stream"))
    return parser.parse_args(argv)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    async with open_queue(settings, "queuectl") as queue:
        if args.command == "stats":
            return await stats(queue, args)
        if args.command == "task":
            return await show_task(queue, args.task_id, as_json=args.json)
        if args.command == "clear":
            return await clear(queue, args, settings)
        return await queuectl_dead.run(queue, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    configure_logging(settings.log_level, settings.log_json)
    return run_command(run(args, settings))


if __name__ == "__main__":
    sys.exit(main())
