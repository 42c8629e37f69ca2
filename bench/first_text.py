"""`first_text_ms` of the streaming benchmark: from a user's update reaching the bot to the
first text the user sees (a draft, or the final message), with an instant model, for a lone
message and for a burst of every chat at once, and where that time goes.

The points are taken where each is recorded: the update handed to the bot (the fake Bot
API's getUpdates), the task's enqueue (`created_at` in its record), its start in the
consumer (`started_at`), the model request and its first chunk (the fake Venice), and the
first draft or message (the fake Bot API). One clock: everything runs on this machine.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from typing import Any

import orjson

from shared.queue.connection import create_redis
from shared.queue.keys import Keys
from shared.tasks import TaskType
from tests.support.fakes.venice import StreamPlan

_ASKED = re.compile(r"вопрос (\d+):(\d+)")
# Where the time goes, in order: each part ends where the next begins.
PARTS = (
    "charging",  # update handed to the bot -> task enqueued (chat turn, charge, payload)
    "enqueue_and_pick_up",  # enqueue -> the consumer's start of the task
    "to_model",  # the consumer's start -> the model request (handler, provider call)
    "model_first_chunk",  # model request -> its first chunk (instant model: ~0)
    "live_stream_and_send",  # first chunk -> first text shown (live stream, send budget, API)
)


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0, "p50_ms": 0.0, "p95_ms": 0.0, "max_ms": 0.0}
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


async def _records(rig: Any) -> dict[tuple[int, int], dict[bytes, bytes]]:
    """The finished reply records of the run, by (chat, question number)."""
    keys = Keys.from_settings(rig.settings)
    redis = create_redis(rig.settings, "bench-first-text")
    found: dict[tuple[int, int], dict[bytes, bytes]] = {}
    try:
        pattern = keys.record_prefix(TaskType.GENERATE_REPLY) + "*"
        async for key in redis.scan_iter(match=pattern, count=1000):
            record: dict[Any, Any] = await redis.hgetall(key)
            task = orjson.loads(record.get(b"task", b"{}"))
            asked = _ASKED.search(str(task.get("data", {}).get("user_message", "")))
            if asked:
                found[int(asked[1]), int(asked[2])] = record
    finally:
        await redis.aclose()
    return found


def _parts(
    rig: Any, record: dict[bytes, bytes], handed: float, shown: float, stream: Any
) -> list[float]:
    created = float(orjson.loads(record[b"task"])["created_at"])
    started = float(record[b"started_at"])
    opened = stream.opened_at + rig.offset
    first_chunk = stream.first_chunk_at + rig.offset
    return [
        created - handed,
        started - created,
        opened - started,
        first_chunk - opened,
        shown - first_chunk,
    ]


async def _measure(rig: Any, asked: dict[int, tuple[int, int, float]]) -> dict[str, Any]:
    """Wait for each asked reply's first text; the totals and their parts."""
    shown = await asyncio.gather(
        *(rig.first_visible(chat, number, since) for chat, (number, _, since) in asked.items())
    )
    await asyncio.gather(*(rig.delivered(chat, n, 60) for chat, (n, _, _) in asked.items()))
    records = await _records(rig)
    totals: list[float] = []
    parts: list[list[float]] = []
    for (chat, (number, update_id, _)), first in zip(asked.items(), shown, strict=True):
        handed = rig.tg.handed_out[update_id]
        totals.append(first.timestamp - handed)
        stream = rig.stream_of(chat, number)
        parts.append(_parts(rig, records[chat, number], handed, first.timestamp, stream))
    breakdown = {name: _ms([p[i] for p in parts]) for i, name in enumerate(PARTS)}
    no_draft = sum(r.method != "sendMessageDraft" for r in shown)
    return _ms(totals) | {"replies_without_draft": no_draft, "breakdown": breakdown}


def _ask(rig: Any, chat: int) -> tuple[int, int, float]:
    number = rig.asked.get(chat, 0) + 1
    rig.asked[chat] = number
    since = time.time()
    update_id = rig.tg.user_message(chat, f"вопрос {chat}:{number}")
    return number, update_id, since


async def first_text_ms(rig: Any, lone: int) -> dict[str, Any]:
    """`lone` messages one at a time (each to another chat, its send budget free), then
    every chat at once; the model answers at once (no delay between chunks)."""
    plan, rig.venice.stream_plan = rig.venice.stream_plan, StreamPlan(keepalive=False)
    try:
        await rig.quiet()
        lone_runs = []
        for i in range(lone):
            chat = rig.chats[i % len(rig.chats)]
            if i and i % len(rig.chats) == 0:
                await rig.quiet()
            lone_runs.append(await _measure(rig, {chat: _ask(rig, chat)}))
        await rig.quiet()
        burst = await _measure(rig, {chat: _ask(rig, chat) for chat in rig.chats})
    finally:
        rig.venice.stream_plan = plan
    return {"lone": _merge(lone_runs), "burst": burst, "chats_in_burst": len(rig.chats)}


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure from single-reply measurements: their totals and parts pooled."""
    totals = [r["p50_ms"] / 1000 for r in runs]
    merged: dict[str, Any] = dict(_ms(totals))
    merged["replies_without_draft"] = sum(r["replies_without_draft"] for r in runs)
    merged["breakdown"] = {
        name: _ms([r["breakdown"][name]["p50_ms"] / 1000 for r in runs]) for name in PARTS
    }
    return merged
