"""A chat's updates are handled one at a time in update_id order, replies go out in order,
and a button's effect is stored before the next update; in one process and across several."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from producer import texts
from producer.chat_turns import ChatTurns
from shared.config import Settings
from shared.queue import QueueService, TaskType
from shared.queue.keys import BotKeys
from shared.queue.scripts import Scripts
from shared.tasks import ReplyResult
from tests.support.bot_feed import (
    fed_bot,
    history_of,
    open_deliveries,
    press,
    user_messages,
)
from tests.support.bot_harness import (
    ROOT,
    ManualConsumer,
    balances,
    bot_settings,
    texts_to,
    wait_text,
)
from tests.support.fakes.telegram import FakeTelegram
from tests.support.fixtures_db import Sessions, new_user_id

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def config(settings: Settings, tg: FakeTelegram, redis_client: aioredis.Redis) -> Settings:
    return bot_settings(settings, "sqlite+aiosqlite://", tg.base_url, start_energy=20)


async def test_a_burst_is_answered_in_order_and_each_request_sees_the_earlier_messages(
    config: Settings, db: Sessions, tg: FakeTelegram, queue: QueueService
) -> None:
    user = new_user_id()
    words = [f"сообщение {n}" for n in range(5)]
    async with fed_bot(config, db, tg) as bot:
        await bot.choose_character(user)
        # A phone back online: five messages in one batch, handled concurrently by aiogram.
        updates = [tg.user_message(user, word) for word in words]
        await asyncio.gather(*(bot.feed(update_id) for update_id in updates))

        consumer = ManualConsumer(queue)
        tasks = [await consumer.take(TaskType.GENERATE_REPLY) for _ in words]
        assert [t.task.data["user_message"] for t in tasks] == words
        assert [history_of(t.task) for t in tasks] == [words[:n] for n in range(5)]
        # The LLM answers the last message first: the replies still go out in order.
        for number, task in reversed(list(enumerate(tasks))):
            reply = ReplyResult(reply=f"ответ {number}", dialog_id=task.task.data["dialog_id"])
            await consumer.complete(task, reply)
        await wait_text(tg, user, "ответ 0")
        await tg.wait_for("sendMessage", lambda r: "ответ" in str(r.params["text"]), count=5)

    replies = [text for text in texts_to(tg, user) if text.startswith("ответ")]
    assert replies == [f"ответ {n}" for n in range(5)]
    assert await balances(db, user) == (15, 2)
    assert await open_deliveries(db, user) == []


async def test_two_processes_handle_one_chat_in_update_id_order(
    config: Settings, db: Sessions, tg: FakeTelegram, queue: QueueService
) -> None:
    user = new_user_id()
    words = [f"реплика {n}" for n in range(8)]
    async with (
        fed_bot(config, db, tg, "bot-a") as first,
        fed_bot(config, db, tg, "bot-b") as second,
    ):
        await first.choose_character(user)
        updates = [tg.user_message(user, word) for word in words]

        async def deliver(number: int, update_id: int) -> None:
            # Webhook replicas get the updates one after another, a few ms apart.
            await asyncio.sleep(0.003 * number)
            await (first if number % 2 == 0 else second).feed(update_id)

        await asyncio.gather(*(deliver(n, u) for n, u in enumerate(updates)))

        consumer = ManualConsumer(queue)
        tasks = [await consumer.take(TaskType.GENERATE_REPLY) for _ in words]
        assert [t.task.data["user_message"] for t in tasks] == words
        assert [history_of(t.task) for t in tasks] == [words[:n] for n in range(8)]
        for task in tasks:
            data = task.task.data
            reply = ReplyResult(reply="ок " + data["user_message"], dialog_id=data["dialog_id"])
            await consumer.complete(task, reply)
        await tg.wait_for("sendMessage", lambda r: str(r.params["text"]).startswith("ок"), count=8)

    assert await user_messages(db, words) == words
    assert await open_deliveries(db, user) == []


async def test_the_same_update_twice_in_two_processes_is_handled_once(
    config: Settings, db: Sessions, tg: FakeTelegram, queue: QueueService
) -> None:
    user = new_user_id()
    async with (
        fed_bot(config, db, tg, "bot-a") as first,
        fed_bot(config, db, tg, "bot-b") as second,
    ):
        await first.choose_character(user)
        update_id = tg.user_message(user, "Дубль")
        await asyncio.gather(first.feed(update_id), second.feed(update_id), first.feed(update_id))
        consumer = ManualConsumer(queue)
        task = await consumer.take(TaskType.GENERATE_REPLY)
        reply = ReplyResult(reply="Один ответ", dialog_id=task.task.data["dialog_id"])
        await consumer.complete(task, reply)
        await wait_text(tg, user, "Один ответ")
        await asyncio.sleep(0.3)
        assert (await queue.get_queue_depth(TaskType.GENERATE_REPLY)).unfinished == 0

    assert texts_to(tg, user).count("Один ответ") == 1
    assert await user_messages(db, ["Дубль"]) == ["Дубль"]
    assert await balances(db, user) == (19, 2)
    assert await open_deliveries(db, user) == []


async def test_a_message_right_after_the_character_button_finds_the_character(
    config: Settings, db: Sessions, tg: FakeTelegram, queue: QueueService
) -> None:
    user = new_user_id()
    async with fed_bot(config, db, tg) as bot:
        await bot.feed(tg.user_message(user, "/start"))
        greeting = await wait_text(tg, user, "Привет")
        button = greeting.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        # A slow answer: a handler that answered before storing the choice would let the
        # message below run first and find no character.
        tg.slow_down("answerCallbackQuery", 0.3)
        chosen = press(tg, user, button)
        message = tg.user_message(user, "Привет!")
        await asyncio.gather(bot.feed(chosen), bot.feed(message))
        await finish_reply(ManualConsumer(queue), tg, user, "Привет!")

    assert texts.NO_DIALOG not in texts_to(tg, user)
    assert len(tg.answered_callbacks) == 1
    assert await open_deliveries(db, user) == []


async def finish_reply(
    consumer: ManualConsumer, tg: FakeTelegram, user: int, message: str
) -> None:
    """Answer the one reply task queued, which must be for `message`; wait until it is sent."""
    task = await consumer.take(TaskType.GENERATE_REPLY)
    assert task.task.data["user_message"] == message
    reply = ReplyResult(reply="Ответ: " + message, dialog_id=task.task.data["dialog_id"])
    await consumer.complete(task, reply)
    await wait_text(tg, user, "Ответ: " + message)


# The turns themselves, two "processes" being two ChatTurns on one Redis.


async def test_a_live_holder_keeps_the_chat_past_its_lease_and_lines_are_by_update_id(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    keys = BotKeys.from_settings(settings)
    first = ChatTurns(Scripts(redis_client), keys, lease_seconds=0.3)
    second = ChatTurns(Scripts(redis_client), keys, lease_seconds=0.3)
    handled: list[int] = []

    async def handle(turns: ChatTurns, update_id: int, seconds: float) -> None:
        async with turns.turn(7, update_id):
            handled.append(update_id)
            await asyncio.sleep(seconds)

    holder = asyncio.create_task(handle(first, 10, 1.2))  # four leases long, renewed
    await asyncio.sleep(0.05)
    waiters = [
        asyncio.create_task(handle(first, 14, 0)),
        asyncio.create_task(handle(first, 12, 0)),
        asyncio.create_task(handle(second, 11, 0)),
    ]
    await asyncio.sleep(0.9)
    assert handled == [10]
    await asyncio.gather(holder, *waiters)
    assert handled == [10, 11, 12, 14]
    assert await first.wait_idle(0) and await second.wait_idle(0)
    assert not [key async for key in redis_client.scan_iter(match=f"{keys.prefix}chat:*")]


_HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    import redis.asyncio as aioredis
    from producer.chat_turns import ChatTurns
    from shared.queue.keys import BotKeys
    from shared.queue.scripts import Scripts

    async def main() -> None:
        url, prefix, chat, update_id = sys.argv[1:]
        scripts = Scripts(aioredis.Redis.from_url(url))
        turns = ChatTurns(scripts, BotKeys(prefix), lease_seconds=1.0)
        async with turns.turn(int(chat), int(update_id)):
            print("held", flush=True)
            await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_a_process_that_dies_mid_turn_holds_its_chat_for_one_lease_at_most(
    config: Settings, db: Sessions, tg: FakeTelegram, queue: QueueService
) -> None:
    user = new_user_id()
    async with fed_bot(config, db, tg) as bot:
        await bot.choose_character(user)
        update_id = tg.user_message(user, "После сбоя")
        args = [config.redis_url, config.redis_bot_prefix, str(user), str(update_id - 1)]
        holder = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _HOLDER,
            *args,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert holder.stdout is not None
            assert await asyncio.wait_for(holder.stdout.readline(), 20) == b"held\n"
        finally:
            holder.kill()  # SIGKILL: no chance to give the turn back
            await holder.wait()
        killed = time.monotonic()
        handling = asyncio.create_task(bot.feed(update_id))
        await asyncio.sleep(0.3)
        assert not handling.done()  # the dead process's turn still has its lease
        await asyncio.wait_for(handling, 5)
        waited = time.monotonic() - killed
        await finish_reply(ManualConsumer(queue), tg, user, "После сбоя")

    # One 1 s lease, then the handling itself (slower on a loaded 2-core machine).
    assert 0.3 < waited < 2.5
    assert await open_deliveries(db, user) == []
