"""Streamed replies end to end: first visible text, stop, flood and a killed bot.

`python -m bench.streaming [--chats 50] [--flood-seconds 60] [--own-redis]
[--json PATH]` runs a real consumer process whose LLM is the fake Venice server (streaming
one word every `--word-ms`) and the real bot process against the fake Bot API, which answers
429 to any chat called more than once a second. Every user chats in their private chat. The
bot's database is PostgreSQL, as in production: a private database created on `--postgres`
(the machine's own by default) and dropped at the end; `--sqlite` uses a SQLite file.

- **first_text_ms**: from the update reaching the bot to the first text shown, with an
  instant model: `--lone` messages one at a time, then every chat at once, each split into
  its parts (`bench/first_text.py`).
- **first text**: all chats send a message at once; per reply, from the fake Venice sending
  its first chunk to the fake Bot API receiving the reply's first draft (or its final
  message, if the bot showed no draft before it: `replies_without_draft` counts those).
- **stop**: every chat sends a message and presses the draft's stop button once text shows;
  from the fake Bot API handing the stop update to the bot (getUpdates) to the fake Venice
  seeing the model connection closed. A reply done before any draft showed cannot be
  stopped (`done_before_a_draft`), nor one the model finished as the stop came
  (`done_before_the_stop`).
- **flood**: every chat keeps asking (the next message once the last reply arrived) for
  `--flood-seconds`: 429s, and how many final messages arrived other than once (none is
  the goal; sending is at least once, so a crash could repeat one).
- **kill**: `--kill-replies` replies stream, the bot gets SIGKILL, a new one starts: every
  reply is delivered once and nothing is sent twice.

The fakes run in this process (one clock for both); the bot and the consumer are separate
processes. A failed run keeps the processes' logs, every Bot API call and every model
stream's first chunk, and says where. The report is JSON; `tests/bench/test_streaming.py`
runs a short form.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from bench.first_text import first_text_ms
from bench.message_cpu import per_message as cpu_per_message
from bench.message_cpu import snapshot as cpu_snapshot
from bench.streaming_rig import FIRST_USER, Rig, Script, percentiles
from db.engine import create_engine, create_sessionmaker
from scripts.seed_characters import seed_characters
from shared.config import Settings, load_settings
from shared.logging import configure_logging
from shared.queue.connection import create_redis
from tests.support.bot_harness import (
    TOKEN,
    Processes,
    choose_first_character,
    migrated_sqlite,
)
from tests.support.consumer_helpers import venice_env
from tests.support.fakes.telegram import FakeTelegram
from tests.support.fakes.venice import FakeVenice, StreamPlan
from tests.support.private_database import LOCAL_POSTGRES, private_database
from tests.support.private_redis import run_on_redis


async def first_text(rig: Rig) -> dict[str, Any]:
    await rig.quiet()
    asked = {chat: rig.ask(chat) for chat in rig.chats}
    shown = await asyncio.gather(*(rig.first_visible(c, *asked[c]) for c in rig.chats))
    overheads = []
    for chat, first in zip(rig.chats, shown, strict=True):
        first_chunk = rig.stream_of(chat, asked[chat][0]).first_chunk_at
        overheads.append(first.timestamp - (first_chunk + rig.offset))
    await asyncio.gather(*(rig.delivered(c, asked[c][0], 60) for c in rig.chats))
    no_draft = sum(r.method != "sendMessageDraft" for r in shown)
    return percentiles(overheads) | {"replies_without_draft": no_draft}


async def stops(rig: Rig) -> dict[str, Any]:
    await rig.quiet()
    asked = {chat: rig.ask(chat) for chat in rig.chats}

    async def one(chat: int) -> float | str:
        """Press stop on the reply's draft: the seconds until the model connection closed,
        or why there was nothing to stop."""
        number, since = asked[chat]
        if (await rig.first_visible(chat, number, since)).method != "sendMessageDraft":
            return "done_before_a_draft"
        update_id = rig.tg.streaming.stop_generation(chat)
        stream = rig.stream_of(chat, number)
        deadline = time.monotonic() + 10
        while stream.closed_by_client_at is None:
            if stream.ended_at is not None:
                return "done_before_the_stop"  # the model finished as the stop came
            if time.monotonic() > deadline:
                raise AssertionError(f"the stop in chat {chat} never closed the model stream")
            await asyncio.sleep(0.005)
        return float(stream.closed_by_client_at) + rig.offset - rig.tg.handed_out[update_id]

    took = dict(zip(rig.chats, await asyncio.gather(*(one(c) for c in rig.chats)), strict=True))
    stopped = {chat: s for chat, s in took.items() if isinstance(s, float)}
    # The stopped replies arrive (marked) before the next phase asks again.
    await asyncio.gather(*(rig.stopped(chat, asked[chat][1]) for chat in stopped))
    reasons = Counter(s for s in took.values() if isinstance(s, str))
    return percentiles(list(stopped.values())) | {
        "done_before_a_draft": reasons["done_before_a_draft"],
        "done_before_the_stop": reasons["done_before_the_stop"],
    }


async def flood(rig: Rig, seconds: float) -> dict[str, Any]:
    limited_before = len(rig.tg.streaming.limited)
    cpu_before = await cpu_snapshot(rig)
    deadline = time.monotonic() + seconds
    asked: list[tuple[int, int]] = []

    async def keep_asking(chat: int) -> None:
        while time.monotonic() < deadline:
            number, _ = rig.ask(chat)
            asked.append((chat, number))
            await rig.delivered(chat, number, 120)

    await asyncio.gather(*(keep_asking(chat) for chat in rig.chats))
    await asyncio.sleep(1.0)  # anything sent twice would arrive by now
    duplicated = sum(len(rig.final(chat, number)) != 1 for chat, number in asked)
    limited = rig.tg.streaming.limited[limited_before:]
    return {
        "seconds": seconds,
        "replies": len(asked),
        "too_many_requests": len(limited),
        "by_method": dict(Counter(method for _, method in limited)),
        "finals_not_exactly_once": duplicated,
        "cpu_us_per_reply": await cpu_per_message(rig, cpu_before, len(asked)),
    }


async def killed_bot(rig: Rig, replies: int) -> dict[str, Any]:
    await rig.quiet()
    chats = rig.chats[:replies]
    asked = {chat: rig.ask(chat) for chat in chats}
    await asyncio.gather(*(rig.first_visible(c, *asked[c]) for c in chats))
    rig.bot.send_signal(signal.SIGKILL)
    await asyncio.to_thread(rig.bot.wait, 30)
    killed_at = time.time()
    await rig.start_bot()
    delivered = await asyncio.gather(*(rig.delivered(c, asked[c][0], 120) for c in chats))
    await asyncio.sleep(1.0)
    finals = {chat: len(rig.final(chat, asked[chat][0])) for chat in chats}
    draft_ids = {
        chat: {
            r.params["draft_id"]
            for r in rig.tg.streaming.draft_calls(chat)
            if r.timestamp > asked[chat][1]
        }
        for chat in chats
    }
    continued = sum(
        any(r.timestamp > killed_at for r in rig.tg.streaming.draft_calls(chat)) for chat in chats
    )
    return {
        "replies": replies,
        "delivered_once": sum(n == 1 for n in finals.values()),
        "sent_twice": sum(n > 1 for n in finals.values()),
        "drafts_continued_after_restart": continued,
        # A restarted bot goes on with the same draft, never a second one.
        "one_draft_id_per_chat": all(len(ids) <= 1 for ids in draft_ids.values()),
        "restart_to_last_final_s": round(max(r.timestamp for r in delivered) - killed_at, 2),
    }


@contextlib.asynccontextmanager
async def rig_up(args: argparse.Namespace, redis_url: str, work: Path) -> AsyncIterator[Rig]:
    prefix = f"bench-stream:{uuid.uuid4().hex[:8]}:"
    script = Script(words=args.words)
    async with (
        database(args, work) as database_url,
        FakeTelegram(token=TOKEN) as tg,
        FakeVenice(reply=script.reply) as venice,
    ):
        script.venice = venice
        venice.stream_plan = StreamPlan(delay=args.word_ms / 1000, keepalive=False)
        settings = load_settings(
            _env_file=None,
            redis_url=redis_url,
            redis_queue_prefix=f"{prefix}queue:",
            redis_result_prefix=f"{prefix}result:",
            redis_bot_prefix=f"{prefix}bot:",
            database_url=database_url,
            bot_token=TOKEN,
            telegram_api_url=tg.base_url,
            start_energy=10**6,
        )
        engine = create_engine(settings.database_url)
        await seed_characters(create_sessionmaker(engine))
        await engine.dispose()
        procs = Processes(work)
        chats = [FIRST_USER + i for i in range(args.chats)]
        rig = Rig(settings, tg, venice, script, procs, chats)
        try:
            env = venice_env(settings, settings.database_url, venice)
            env["MAX_CONCURRENT_REPLY_GENERATIONS"] = str(args.chats * 2)
            rig.consumer = procs.consumer(env, "--types", "generate_reply")
            await rig.start_bot()
            await asyncio.gather(*(choose_first_character(tg, chat) for chat in chats))
            tg.streaming.limit_per_chat(1.0)
            indexer = asyncio.create_task(keep_indexing(rig))
            try:
                yield rig
            finally:
                indexer.cancel()
        finally:
            await procs.close()
            await forget(settings, prefix)


@contextlib.asynccontextmanager
async def database(args: argparse.Namespace, work: Path) -> AsyncIterator[str]:
    """The bot's database: a private PostgreSQL database (as in production), or SQLite."""
    if args.sqlite:
        yield await asyncio.to_thread(migrated_sqlite, work)
        return
    async with private_database(args.postgres) as url:
        yield url


async def keep_indexing(rig: Rig) -> None:
    while True:
        rig.index()
        await asyncio.sleep(0.005)


async def forget(settings: Settings, prefix: str) -> None:
    """Delete the run's keys (on the machine's Redis they would outlive it)."""
    redis = create_redis(settings, "bench-streaming-cleanup")
    try:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


async def bench(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    work = args.logs or Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        report = await _measure(args, redis_url, work)
    except BaseException:
        # A failed run is the one whose logs are needed: they stay, and say where.
        sys.stderr.write(f"bench_streaming failed; the bot's and consumer's logs: {work}\n")
        raise
    if args.logs is None:
        shutil.rmtree(work, ignore_errors=True)
    return report


def record_calls(rig: Rig, work: Path) -> None:
    """The fakes' side of the run, beside the processes' logs: every Bot API call and every
    model stream, with times on the wall clock."""
    with (work / "telegram_calls.jsonl").open("wb") as out:
        for r in rig.tg.requests:
            text = str(r.params.get("text", ""))[:60]
            row = {"t": r.timestamp, "method": r.method, "chat": r.chat_id, "status": r.status}
            out.write(orjson.dumps(row | {"text": text}) + b"\n")
    with (work / "model_streams.jsonl").open("wb") as out:
        for key, index in rig.script.streams.items():
            first = rig.venice.streams[index].first_chunk_at
            at = None if first is None else first + rig.offset
            out.write(orjson.dumps({"chat": key[0], "number": key[1], "first_chunk": at}) + b"\n")


async def _measure(args: argparse.Namespace, redis_url: str, work: Path) -> dict[str, Any]:
    async with rig_up(args, redis_url, work) as rig:
        try:
            return await _phases(args, rig)
        finally:
            # Kept when the run failed, or when --logs asked for them.
            record_calls(rig, work)


async def _phases(args: argparse.Namespace, rig: Rig) -> dict[str, Any]:
    report: dict[str, Any] = {
        "chats": args.chats,
        "word_ms": args.word_ms,
        "words_per_reply": args.words,
        "chat_send_interval_s": rig.settings.chat_send_interval_seconds,
    }
    report["first_text_ms"] = await first_text_ms(rig, args.lone)
    report["first_text_overhead"] = await first_text(rig)
    report["stop_to_provider_closed"] = await stops(rig)
    report["flood"] = await flood(rig, args.flood_seconds)
    report["sigkill"] = await killed_bot(rig, min(args.kill_replies, args.chats))
    report["too_many_requests_total"] = len(rig.tg.streaming.limited)
    return report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.streaming", description=__doc__)
    parser.add_argument("--chats", type=int, default=50)
    parser.add_argument("--flood-seconds", type=float, default=60.0)
    parser.add_argument("--kill-replies", type=int, default=10)
    parser.add_argument("--lone", type=int, default=20, help="lone messages for first_text_ms")
    parser.add_argument("--words", type=int, default=40, help="words per reply")
    parser.add_argument("--word-ms", type=float, default=50.0, help="the model's pace")
    parser.add_argument("--own-redis", action="store_true", help="start a private redis-server")
    parser.add_argument(
        "--postgres",
        default=LOCAL_POSTGRES,
        help="PostgreSQL server on which a private database is created and dropped",
    )
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file instead")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--logs", type=Path, help="keep the bot's and consumer's logs here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("WARNING", json=True)
    report = run_on_redis(args.own_redis, lambda url: bench(args, url))
    rendered = orjson.dumps(report, option=orjson.OPT_INDENT_2)
    sys.stdout.write(rendered.decode() + "\n")
    if args.json:
        args.json.write_bytes(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
