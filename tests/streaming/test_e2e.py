"""Streamed replies end to end: the real `python -m producer` and `python -m consumers` on the
fake Telegram and the fake streaming Venice."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable

import pytest

from producer import texts
from producer.keyboards import StopCallback
from shared.queue import TaskType
from tests.support.bot_harness import balances, choose_first_character, texts_to, wait_text
from tests.support.bot_world import World, eventually, idle, start_bot
from tests.support.consumer_helpers import venice_env
from tests.support.fakes.telegram import FakeTelegram, Request
from tests.support.fakes.venice import FakeVenice, StreamPlan

USER = 5151
OTHER = 5152
GROUP = -1_000_000_5151
WORDS = " ".join(f"слово{i}" for i in range(40))
# Quick enough for tests, slow enough that a reply streams for a few seconds.
SLOW = StreamPlan(delay=0.08)
FAST_PACE = {"CHAT_SEND_INTERVAL_SECONDS": "0.2", "GROUP_SEND_INTERVAL_SECONDS": "0.2"}

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def venice() -> AsyncIterator[FakeVenice]:
    async with FakeVenice(reply=WORDS) as fake:
        fake.stream_plan = SLOW
        yield fake


def start_consumer(world: World, venice: FakeVenice) -> None:
    env = venice_env(world.settings, world.settings.database_url, venice)
    world.procs.consumer(env, "--types", "generate_reply")


async def chatting(
    world: World, tg: FakeTelegram, venice: FakeVenice, **env: str
) -> subprocess.Popen[bytes]:
    """A consumer and the bot running, and USER talking to a character; returns the bot."""
    start_consumer(world, venice)
    bot = await start_bot(world, tg, **(env or FAST_PACE))
    await choose_first_character(tg, USER)
    return bot


def texts_of(requests: list[Request]) -> list[str]:
    return [str(r.params.get("text", "")) for r in requests if r.ok]


def in_chat(chat_id: int, needle: str = "слово", after: float = 0.0) -> Callable[[Request], bool]:
    """Accepted calls to the chat whose text has `needle`, made after `after` (wall time)."""
    return lambda r: (
        r.ok
        and r.chat_id == chat_id
        and r.timestamp > after
        and needle in str(r.params.get("text"))
    )


async def test_a_reply_streams_as_a_draft_then_arrives_once(
    world: World, tg: FakeTelegram, venice: FakeVenice
) -> None:
    await chatting(world, tg, venice)
    tg.user_message(USER, "Расскажи")
    final = await wait_text(tg, USER, WORDS, timeout=30)

    drafts = [r for r in tg.streaming.draft_calls(USER) if r.timestamp < final.timestamp]
    shown = texts_of(drafts)
    assert len(shown) >= 3
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(shown))
    assert all(r.params["can_stop"] is True for r in drafts)
    assert final.params["reply_markup"]["inline_keyboard"][0][0]["text"] == texts.PHOTO_BUTTON
    await asyncio.sleep(0.5)
    assert texts_to(tg, USER).count(WORDS) == 1
    assert tg.streaming.draft(USER) is None
    assert tg.streaming.limited == []


async def test_stops_by_the_draft_button_and_by_command_keep_the_partial_text(
    world: World, tg: FakeTelegram, venice: FakeVenice
) -> None:
    await chatting(world, tg, venice)
    for number, stop in enumerate(("button", "/stop"), start=1):
        tg.user_message(USER, f"Вопрос {number}")
        await tg.wait_for("sendMessageDraft", in_chat(USER, after=time.time()))
        if stop == "button":
            tg.streaming.stop_generation(USER)
        else:
            tg.user_message(USER, "/stop")
        marked = in_chat(USER, texts.STOPPED_MARK)
        final = (await tg.wait_for("sendMessage", marked, count=number, timeout=20))[-1]
        partial = str(final.params["text"]).removesuffix(f"\n\n{texts.STOPPED_MARK}")
        assert WORDS.startswith(partial) and len(partial) < len(WORDS)
        await venice.stream_closed_at()  # the model call was really stopped
        await eventually(lambda: idle(world.queue, TaskType.GENERATE_REPLY))
    assert texts.STOPPING in texts_to(tg, USER)  # /stop says it is stopping
    assert await balances(world.db, USER) == (3, 2)  # partial replies are kept and paid


async def test_a_reply_stopped_before_it_starts_is_refunded_once_and_never_run(
    world: World, tg: FakeTelegram, venice: FakeVenice
) -> None:
    await start_bot(world, tg, **FAST_PACE)
    await choose_first_character(tg, USER)
    tg.user_message(USER, "Привет")

    async def queued() -> bool:
        return (await world.queue.get_queue_depth(TaskType.GENERATE_REPLY)).waiting == 1

    await eventually(queued)
    tg.user_message(USER, "/stop")
    await wait_text(tg, USER, texts.REPLY_STOPPED_REFUNDED, timeout=20)
    start_consumer(world, venice)
    await eventually(lambda: idle(world.queue, TaskType.GENERATE_REPLY))
    tg.user_message(USER, "/stop")
    await wait_text(tg, USER, texts.NOTHING_TO_STOP)
    assert venice.chat_requests == []
    assert texts_to(tg, USER).count(texts.REPLY_STOPPED_REFUNDED) == 1
    assert await balances(world.db, USER) == (5, 2)


async def test_a_group_reply_is_edited_in_place_and_its_stop_button_works(
    world: World, tg: FakeTelegram, venice: FakeVenice
) -> None:
    await chatting(world, tg, venice)
    tg.user_message(USER, "Всем привет", chat_id=GROUP)
    placeholder = (await tg.wait_for("sendMessage", in_chat(GROUP), timeout=20))[0]
    await tg.wait_for("editMessageText", in_chat(GROUP), timeout=20)
    button = placeholder.params["reply_markup"]["inline_keyboard"][0][0]
    assert StopCallback.unpack(button["callback_data"]).task_id
    message_id = placeholder.result["message_id"]
    press = tg.callback(USER, button["callback_data"], chat_id=GROUP, message_id=message_id)

    await tg.wait_for("editMessageText", in_chat(GROUP, texts.STOPPED_MARK), timeout=20)
    assert tg.answered_callbacks[press]["text"] == texts.STOPPING
    assert len(tg.sent("sendMessage", GROUP)) == 1
    assert {r.params["message_id"] for r in tg.sent("editMessageText", GROUP)} == {message_id}
    assert not tg.sent("sendMessageDraft", GROUP)


async def test_a_chat_limited_to_one_call_a_second_gets_no_429(
    world: World, tg: FakeTelegram, venice: FakeVenice
) -> None:
    tg.streaming.limit_per_chat(1.0)
    # The default pace (1.1 s per chat), as in production.
    await chatting(world, tg, venice, CHAT_SEND_INTERVAL_SECONDS="1.1")
    tg.user_message(USER, "Расскажи")
    await wait_text(tg, USER, WORDS, timeout=40)
    await asyncio.sleep(0.5)
    assert tg.streaming.limited == []
    assert len(tg.streaming.draft_calls(USER)) >= 2
    assert texts_to(tg, USER).count(WORDS) == 1


async def test_a_bot_killed_mid_stream_continues_the_same_draft_and_message(
    world: World, tg: FakeTelegram, venice: FakeVenice
) -> None:
    venice.stream_plan = StreamPlan(delay=0.15)
    bot = await chatting(world, tg, venice)
    await choose_first_character(tg, OTHER)
    tg.user_message(USER, "Привет")
    tg.user_message(OTHER, "Привет всем", chat_id=GROUP)
    await tg.wait_for("sendMessageDraft", in_chat(USER), timeout=20)
    placeholder = (await tg.wait_for("sendMessage", in_chat(GROUP), timeout=20))[0]
    # An edit shows the message's id is stored (a kill between sending the message and
    # storing its id, one Redis write, would leave it behind: see docs/architecture.md).
    await tg.wait_for("editMessageText", in_chat(GROUP), timeout=20)
    assert await world.procs.stop(bot, signal.SIGKILL) == -signal.SIGKILL
    before = len(tg.requests)

    await start_bot(world, tg, **FAST_PACE)
    await wait_text(tg, USER, WORDS, timeout=40)
    await tg.wait_for("editMessageText", in_chat(GROUP, WORDS), timeout=40)
    await asyncio.sleep(0.5)
    after = tg.requests[before:]
    # The new process went on showing the same draft, and sent the final text once.
    assert any(r.method == "sendMessageDraft" and r.ok for r in after)
    assert len({r.params["draft_id"] for r in tg.streaming.draft_calls(USER)}) == 1
    message_id = placeholder.result["message_id"]
    assert {r.params["message_id"] for r in tg.sent("editMessageText", GROUP)} == {message_id}
    assert len(tg.sent("sendMessage", GROUP)) == 1
    assert texts_to(tg, USER).count(WORDS) == 1
