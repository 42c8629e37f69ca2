"""The streaming benchmark's rig: the fakes, the bot and consumer processes, the users and
what each reply did (`bench/streaming.py` runs the phases on it)."""

import asyncio
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from producer import texts
from shared.config import Settings
from tests.support.bot_harness import (
    Processes,
    process_env,
)
from tests.support.fakes.telegram import FakeTelegram, Request
from tests.support.fakes.venice import FakeVenice

FIRST_USER = 910_000
_ASK = re.compile(r"вопрос (\d+):(\d+)")


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/max in milliseconds (empty: zeros)."""
    if not values:
        return {"n": 0, "p50_ms": 0.0, "p95_ms": 0.0, "max_ms": 0.0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


@dataclass
class Script:
    """What the fake model answers: a unique text per question, and which stream served it."""

    words: int
    streams: dict[tuple[int, int], int] = field(default_factory=dict)
    venice: FakeVenice | None = None

    def text(self, chat: int, number: int) -> str:
        body = " ".join(f"слово{i}" for i in range(self.words))
        return f"Ответ {chat}:{number}. {body}"

    def reply(self, messages: list[dict[str, Any]]) -> str:
        asked = _ASK.search(str(messages[-1].get("content", "")))
        if asked is None or self.venice is None:
            return "Привет!"
        key = (int(asked[1]), int(asked[2]))
        # The fake records this stream right after calling us, in the same step.
        self.streams[key] = len(self.venice.streams)
        return self.text(*key)


@dataclass
class Rig:
    settings: Settings
    tg: FakeTelegram
    venice: FakeVenice
    script: Script
    procs: Processes
    chats: list[int]
    bot: Any = None
    consumer: Any = None
    asked: dict[int, int] = field(default_factory=dict)
    by_chat: dict[tuple[str, int], list[Request]] = field(default_factory=dict)
    indexed: int = 0
    # time.time() - time.monotonic(): the fake Venice keeps monotonic times, the fake Bot API
    # wall-clock ones; both run in this process.
    offset: float = field(default_factory=lambda: time.time() - time.monotonic())

    def ask(self, chat: int) -> tuple[int, float]:
        number = self.asked.get(chat, 0) + 1
        self.asked[chat] = number
        sent_at = time.time()
        self.tg.user_message(chat, f"вопрос {chat}:{number}")
        return number, sent_at

    def final(self, chat: int, number: int) -> list[Request]:
        text = self.script.text(chat, number)
        return [r for r in self.tg.sent("sendMessage", chat) if r.ok and r.params["text"] == text]

    async def seen(
        self, method: str, chat: int, match: Callable[[Request], bool], timeout: float
    ) -> Request:
        """The first accepted `method` call to `chat` that matches. Polls the fake's record
        from where the last look ended: the fake's own wait_for rescans every call for every
        waiter, which with 50 waiters would load the fakes' process (and skew the times it
        takes)."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            calls = self.by_chat.get((method, chat), [])
            for request in calls[checked:]:
                if match(request):
                    return request
            checked = len(calls)
            if time.monotonic() > deadline:
                last = str(calls[-1].params.get("text"))[:120] if calls else None
                raise TimeoutError(
                    f"no matching {method} to chat {chat} in {timeout}s; the last: {last!r}; "
                    + self.unseen(method, chat)
                )
            await asyncio.sleep(0.01)

    def unseen(self, method: str, chat: int) -> str:
        """What the fake got that a look could not see: calls to the chat it refused, and
        calls not indexed yet (the index waits on a call still being served)."""
        refused = [
            f"{r.status} {r.description}"
            for r in self.tg.requests
            if r.method == method and r.chat_id == chat and r.status not in (None, 200)
        ]
        waiting = self.tg.requests[self.indexed :]
        oldest = "none"
        if waiting:
            age = time.time() - waiting[0].timestamp
            oldest = f"{waiting[0].method} to {waiting[0].chat_id}, {age:.1f} s old"
        return f"refused: {refused[:5]}; calls not indexed: {len(waiting)}, the oldest: {oldest}"

    def index(self) -> None:
        """File the fake's new accepted calls by method and chat (called between polls)."""
        for request in self.tg.requests[self.indexed :]:
            if request.status is None and request.chat_id is not None:
                return  # still being served: look again next time (a long poll has no chat)
            if request.ok and isinstance(request.chat_id, int):
                self.by_chat.setdefault((request.method, request.chat_id), []).append(request)
            self.indexed += 1

    async def delivered(self, chat: int, number: int, timeout: float) -> Request:
        text = self.script.text(chat, number)
        return await self.seen(
            "sendMessage", chat, lambda r: r.params.get("text") == text, timeout
        )

    async def stopped(self, chat: int, since: float) -> None:
        def marked(r: Request) -> bool:
            return r.timestamp > since and texts.STOPPED_MARK in str(r.params.get("text"))

        await self.seen("sendMessage", chat, marked, 60)

    async def first_visible(
        self, chat: int, number: int, since: float, timeout: float = 60.0
    ) -> Request:
        """The reply's first text the user could see: its first draft, or its final message
        when no draft came before it (a starved bot skips previews, never the reply)."""
        final = self.script.text(chat, number)
        deadline = time.monotonic() + timeout
        while time.monotonic() <= deadline:
            drafts = self.by_chat.get(("sendMessageDraft", chat), [])
            finals = self.by_chat.get(("sendMessage", chat), [])
            hits = [r for r in drafts if r.timestamp > since and r.params.get("text")]
            hits += [r for r in finals if r.params.get("text") == final]
            if hits:
                return min(hits, key=lambda r: r.timestamp)
            await asyncio.sleep(0.01)
        raise TimeoutError(f"nothing of reply {chat}:{number} shown in {timeout}s")

    def stream_of(self, chat: int, number: int) -> Any:
        return self.venice.streams[self.script.streams[(chat, number)]]

    async def start_bot(self) -> None:
        since = time.time()
        self.bot = self.procs.producer(process_env(self.settings, USER_MESSAGES_PER_MINUTE=10**6))
        await self.tg.wait_for("getUpdates", lambda r: r.timestamp >= since, timeout=60)

    async def quiet(self) -> None:
        """Let every chat's send budget come free (a reply's first draft then goes at once)."""
        await asyncio.sleep(self.settings.chat_send_interval_seconds + 0.2)
