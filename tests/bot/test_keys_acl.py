"""A consumer's Redis user cannot touch the bot's own state.

A conversation runs through the real bot while every key written under the test's prefix is
recorded; then a real ACL user made from `scripts.redis_acl`'s rule is asked (ACL DRYRUN)
about each: the bot's own keys (send budgets, chat turns, rate counters, photo locks, reply
records, the live reader's wake stream) are refused, and every key and channel a consumer
needs is allowed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from producer.keyboards import PhotoCallback
from producer.stream_records import draft_id_for
from scripts.redis_acl import consumer_rules
from shared.config import Settings
from shared.queue import TaskEntry
from shared.queue.keys import BotKeys, Keys, Priority
from shared.queue.live import LiveWriter
from shared.tasks import ImagePromptResult, ImageResult, ReplyResult, TaskType
from tests.support.bot_harness import (
    InProcessBot,
    ManualConsumer,
    bot_settings,
    choose_first_character,
    in_process_bot,
    migrated_sqlite,
)
from tests.support.bot_world import eventually
from tests.support.fakes.telegram import FakeTelegram, Request

USER = 7301
GROUP = -1_000_000_7301
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()
INVALIDATIONS = "__redis__:invalidate"

pytestmark = pytest.mark.timeout(60)


# Recording every key written: Redis's broadcast invalidations (CLIENT TRACKING BCAST) name
# each key any client changes under a prefix, deletes and expiries included, with no MONITOR
# and no change to the server's configuration.


async def _collect(
    pubsub: aioredis.client.PubSub, keys: set[str], marker: str, seen: asyncio.Event
) -> None:
    while True:
        message = await pubsub.get_message(timeout=1.0)
        if message and message["type"] == "message" and message["data"]:
            keys.update(key.decode() for key in message["data"])
            if marker in keys:
                seen.set()


async def _client_id(admin: aioredis.Redis, name: str) -> int:
    return next(int(c["id"]) for c in await admin.client_list() if c.get("name") == name)


@contextlib.asynccontextmanager
async def written_keys(url: str, prefix: str) -> AsyncIterator[set[str]]:
    """The keys under `prefix` that anyone writes while the block runs."""
    name = f"key-recorder-{uuid.uuid4().hex}"
    # RESP2: invalidations then arrive as pub/sub messages (redis-py keeps RESP3 ones).
    listener = aioredis.Redis.from_url(url, client_name=name, protocol=2)
    tracker = aioredis.Redis.from_url(url, single_connection_client=True)
    admin = aioredis.Redis.from_url(url)
    pubsub = listener.pubsub()
    keys: set[str] = set()
    # A write of our own, seen last, says every earlier invalidation has arrived.
    marker, seen = f"{prefix}recorder-end:{uuid.uuid4().hex}", asyncio.Event()
    try:
        await pubsub.subscribe(INVALIDATIONS)
        listener_id = await _client_id(admin, name)
        await tracker.execute_command(  # type: ignore[no-untyped-call]
            "CLIENT", "TRACKING", "on", "REDIRECT", listener_id, "BCAST", "PREFIX", prefix
        )
        collector = asyncio.create_task(_collect(pubsub, keys, marker, seen))
        yield keys
        await admin.set(marker, 1, px=1000)
        await asyncio.wait_for(seen.wait(), 5)
        keys.discard(marker)
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        for client in (listener, tracker, admin):
            await client.aclose()


# The consumer's ACL user on the shared Redis: disabled (nobody can log in as it), uniquely
# named, deleted afterwards; ACL DRYRUN asks it about a command without running it.


@pytest.fixture
async def consumer_user(settings: Settings) -> AsyncIterator[str]:
    admin = aioredis.Redis.from_url(settings.redis_url)
    user = f"test-consumer-{uuid.uuid4().hex}"
    rules = consumer_rules(settings.redis_queue_prefix, settings.redis_result_prefix)
    await admin.execute_command("ACL", "SETUSER", user, "reset", "off", *rules)  # type: ignore[no-untyped-call]
    try:
        yield user
    finally:
        await admin.execute_command("ACL", "DELUSER", user)  # type: ignore[no-untyped-call]
        await admin.aclose()


async def refusal(admin: aioredis.Redis, user: str, *command: str) -> str | None:
    """Why `user` may not run `command` (None: it may)."""
    answer = await admin.execute_command("ACL", "DRYRUN", user, *command)  # type: ignore[no-untyped-call]
    text = answer.decode() if isinstance(answer, bytes) else str(answer)
    return None if text == "OK" else text


def consumer_keys(keys: Keys, name: str) -> list[str]:
    """Every kind of key a consumer needs, for each type; `name` stands for the part that
    varies (a task id, a consumer, a user, a provider)."""
    built: list[Callable[[TaskType], str]] = [
        lambda t: keys.stream(t, Priority.NORMAL),
        lambda t: keys.stream(t, Priority.HIGH),
        keys.dead,
        keys.alive,
        keys.completions,
        keys.users_running,
        keys.users_parked,
        lambda t: keys.record(t, name),
        lambda t: keys.read_memo(t, name),
        lambda t: keys.user_running(t, name),
        lambda t: keys.user_parked(t, name),
        lambda t: keys.live(t, name),
        lambda _: keys.leases(name),
        lambda _: keys.bucket(name),
        lambda _: keys.paused(name),
        lambda _: keys.freed(name),
    ]
    return sorted({build(t) for build in built for t in TaskType})


def consumer_key_shapes(keys: Keys) -> list[re.Pattern[str]]:
    hole = "\0"
    return [
        re.compile(re.escape(key).replace(re.escape(hole), "[^{}]+"))
        for key in consumer_keys(keys, hole)
    ]


def consumer_channels(keys: Keys) -> list[str]:
    return [name for t in TaskType for name in (keys.channel(t), keys.cancels(t))]


# A conversation that makes the bot write every kind of its own state.


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def app(
    settings: Settings, tmp_path: Path, tg: FakeTelegram, redis_client: aioredis.Redis
) -> AsyncIterator[InProcessBot]:
    config = bot_settings(settings, migrated_sqlite(tmp_path), tg.base_url)
    async with in_process_bot(config, tg) as running:
        yield running


def has_text(chat_id: int, needle: str) -> Callable[[Request], bool]:
    return lambda r: r.ok and r.chat_id == chat_id and needle in str(r.params.get("text"))


async def start_reply(app: InProcessBot, chat_id: int, text: str) -> tuple[TaskEntry, LiveWriter]:
    """A reply the bot shows while it is written: a draft in private, an edited message in a
    group (each with its records), followed by the bot's live reader."""
    app.tg.user_message(USER, text, chat_id=chat_id)
    task = await ManualConsumer(app.queue).take(TaskType.GENERATE_REPLY)
    live = LiveWriter.for_task(
        app.queue.redis, app.settings, TaskType.GENERATE_REPLY, task.task.task_id, 1
    )
    await live.add(f"Ответ: {text}")
    if chat_id > 0:
        await app.tg.wait_for("sendMessageDraft", has_text(chat_id, f"Ответ: {text}"))
    else:
        await eventually(lambda: shown(app.tg, chat_id, f"Ответ: {text}"))
    return task, live


async def shown(tg: FakeTelegram, chat_id: int, text: str) -> bool:
    return any(text in str(message.get("text")) for message in tg.chat_history(chat_id))


async def finish_reply(app: InProcessBot, task: TaskEntry, live: LiveWriter, chat_id: int) -> None:
    text = f"{live_text(task)}!"
    await live.close("done")
    await ManualConsumer(app.queue).complete(task, ReplyResult(reply=text, dialog_id=1))
    await eventually(lambda: shown(app.tg, chat_id, text))


def live_text(task: TaskEntry) -> str:
    return f"Ответ: {task.task.data['user_message']}"


async def photo(app: InProcessBot) -> None:
    consumer = ManualConsumer(app.queue)
    app.tg.callback(USER, PhotoCallback().pack())
    prompt = await consumer.take(TaskType.GENERATE_IMAGE_PROMPT)
    await consumer.complete(prompt, ImagePromptResult(prompt="1girl, cafe"))
    image = await consumer.take(TaskType.GENERATE_IMAGE)
    await consumer.complete(image, ImageResult(image_base64=PNG, image_size=40))
    await app.tg.wait_for("sendPhoto")


async def conversation(app: InProcessBot) -> list[str]:
    """Returns the keys of the bot's own kinds of state the conversation must have written."""
    await choose_first_character(app.tg, USER)
    private, private_live = await start_reply(app, USER, "Привет")
    # Followed while the reader blocks on the first: the reader's wake stream is written.
    group, group_live = await start_reply(app, GROUP, "Всем привет")
    await finish_reply(app, private, private_live, USER)
    await finish_reply(app, group, group_live, GROUP)
    await photo(app)
    await asyncio.sleep(0.2)  # the last sends' budget answers
    bot = BotKeys.from_settings(app.settings)
    private_id, group_id = private.task.task_id, group.task.task_id
    return [
        bot.rate(USER),
        bot.photo_lock(USER),
        bot.budget(USER),
        bot.budget(GROUP),
        bot.turns(USER),
        bot.turn_leases(USER),
        bot.turns(GROUP),
        bot.view(USER, private_id),
        bot.view(GROUP, group_id),
        bot.replies(USER),
        bot.draft(USER, draft_id_for(private_id)),
    ]


async def test_every_key_the_bot_writes_is_refused_to_a_consumer_and_the_queue_is_not(
    app: InProcessBot, settings: Settings, prefix: str, consumer_user: str
) -> None:
    async with written_keys(settings.redis_url, prefix) as written:
        expected = await conversation(app)

    bot_keys = {key for key in written if key.startswith(settings.redis_bot_prefix)}
    assert set(expected) <= bot_keys
    wake = BotKeys.from_settings(settings).live_wake(TaskType.GENERATE_REPLY, "")
    assert any(key.startswith(wake) for key in bot_keys)
    shapes = consumer_key_shapes(Keys.from_settings(settings))
    queue_keys = written - bot_keys
    assert queue_keys, "the conversation wrote no queue key: nothing was recorded"
    unknown = [key for key in queue_keys if not any(s.fullmatch(key) for s in shapes)]
    assert unknown == [], "written outside the bot's prefix, yet no consumer needs them"

    admin = aioredis.Redis.from_url(settings.redis_url)
    try:
        for key in sorted(bot_keys):
            for command in (("GET", key), ("SET", key, "x"), ("DEL", key)):
                why = await refusal(admin, consumer_user, *command)
                assert why is not None and f"'{key}' key" in why, (command, why)
        for key in sorted(queue_keys):
            assert await refusal(admin, consumer_user, "GET", key) is None, key
            assert await refusal(admin, consumer_user, "SET", key, "x") is None, key
    finally:
        await admin.aclose()


async def test_every_key_and_channel_a_consumer_needs_is_allowed(
    settings: Settings, consumer_user: str
) -> None:
    keys = Keys.from_settings(settings)
    admin = aioredis.Redis.from_url(settings.redis_url)
    try:
        for key in consumer_keys(keys, "x"):
            assert await refusal(admin, consumer_user, "HSET", key, "f", "v") is None, key
            assert await refusal(admin, consumer_user, "XADD", key, "*", "f", "v") is None, key
        for channel in consumer_channels(keys):
            for command in ("PUBLISH", "SPUBLISH"):
                assert await refusal(admin, consumer_user, command, channel, "m") is None
            for command in ("SUBSCRIBE", "SSUBSCRIBE"):
                assert await refusal(admin, consumer_user, command, channel) is None
        # ...and nothing of the bot's: not even a channel under its prefix.
        bot = BotKeys.from_settings(settings)
        assert await refusal(admin, consumer_user, "PUBLISH", f"{bot.prefix}x", "m")
    finally:
        await admin.aclose()
