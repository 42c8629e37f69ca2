"""`queuectl dead list|replay|purge TYPE`: the dead-letter stream of a task type."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from scripts.queuectl_tasks import summarize
from scripts.runtime import EXIT_OK, EXIT_USAGE, confirm
from scripts.tables import duration, print_json, print_text, table
from shared.queue import QueueService
from shared.queue.dead_letters import DeadEntry, list_dead, purge_dead, replay_dead
from shared.tasks import TaskType

REASON_WIDTH = 70


def add_commands(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="dead_command", required=True)
    types = [t.value for t in TaskType]
    type_help = f"task type: {', '.join(types)}"
    json_help = "print JSON instead of a table"
    p = commands.add_parser("list", help="dead entries of a type, oldest first")
    p.add_argument("type", choices=types, metavar="TYPE", help=type_help)
    p.add_argument("--json", action="store_true", help=json_help)
    p = commands.add_parser("replay", help="put dead tasks back on the stream (all by default)")
    p.add_argument("type", choices=types, metavar="TYPE", help=type_help)
    p.add_argument("ids", nargs="*", metavar="ID", help="dead entry ids (default: every one)")
    p.add_argument("--json", action="store_true", help=json_help)
    p = commands.add_parser("purge", help="delete the dead-letter stream of a type")
    p.add_argument("type", choices=types, metavar="TYPE", help=type_help)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def dead_json(entry: DeadEntry) -> dict[str, Any]:
    return {
        "dead_id": entry.dead_id,
        "task_id": entry.task_id,
        "reason": entry.reason,
        "consumer": entry.consumer,
        "entry_id": entry.entry_id,
        "failed_at": entry.failed_at,
        "replayable": entry.replayable,
        "task": entry.task,
        "original": entry.original,
    }


def _short(text: str) -> str:
    return text if len(text) <= REASON_WIDTH else text[: REASON_WIDTH - 3] + "..."


def _dead_row(e: DeadEntry, now: float) -> list[object]:
    age = duration(now - e.failed_at) if e.failed_at else None
    return [e.dead_id, e.task_id or "(malformed)", age, e.consumer, e.entry_id, _short(e.reason)]


def render_dead(entries: Sequence[DeadEntry]) -> str:
    now = time.time()
    rows = [_dead_row(e, now) for e in entries]
    headers = ["DEAD ID", "TASK", "AGE", "CONSUMER", "ENTRY", "REASON"]
    return f"dead entries: {len(entries)}\n" + (table(headers, rows) if rows else "")


async def list_command(queue: QueueService, task_type: TaskType, as_json: bool) -> int:
    entries = await list_dead(queue.redis, queue.keys, task_type)
    if as_json:
        # A malformed entry's original fields may be large: summarized like a task's data.
        print_json([dict(dead_json(e), original=summarize(e.original)) for e in entries])
    else:
        print_text(render_dead(entries).rstrip())
    return EXIT_OK


async def replay_command(
    queue: QueueService, task_type: TaskType, ids: Sequence[str], as_json: bool
) -> int:
    results = await replay_dead(
        queue.redis,
        queue.scripts,
        queue.keys,
        task_type,
        task_ttl=queue.settings.redis_task_ttl,
        ids=ids or None,
    )
    replayed = [r for r in results if r.new_entry_id]
    skipped = [r for r in results if not r.new_entry_id]
    if as_json:
        print_json(
            {
                "replayed": [
                    {"dead_id": r.dead_id, "task_id": r.task_id, "entry_id": r.new_entry_id}
                    for r in replayed
                ],
                "skipped": [
                    {"dead_id": r.dead_id, "task_id": r.task_id, "reason": r.skipped}
                    for r in skipped
                ],
            }
        )
        return EXIT_OK
    print_text(f"replayed {len(replayed)} {task_type} tasks; skipped {len(skipped)}")
    if skipped:
        rows = [[r.dead_id, r.task_id, r.skipped] for r in skipped]
        print_text(table(["DEAD ID", "TASK", "SKIPPED BECAUSE"], rows))
    return EXIT_OK


async def purge_command(queue: QueueService, task_type: TaskType, yes: bool) -> int:
    size = await queue.redis.xlen(queue.keys.dead(task_type))
    question = f"Delete all {size} dead entries of {task_type}?"
    if not yes and not await confirm(question):
        return EXIT_USAGE
    purged = await purge_dead(queue.redis, queue.keys, task_type)
    print_text(f"purged {purged} dead {task_type} entries")
    return EXIT_OK


async def run(queue: QueueService, args: argparse.Namespace) -> int:
    task_type = TaskType(args.type)
    if args.dead_command == "list":
        return await list_command(queue, task_type, args.json)
    if args.dead_command == "replay":
        return await replay_command(queue, task_type, args.ids, args.json)
    return await purge_command(queue, task_type, args.yes)
