"""Only the person who asked for a reply can stop it: in a group, another member's ⏹ press or
/stop leaves the reply running (the asker would pay for a cut reply); an admin may stop any
reply, and that is logged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from producer import texts
from producer.keyboards import StopCallback
from producer.stream_records import StreamRecords
from shared.config import Settings
from shared.queue import TaskEntry
from shared.queue.keys import BotKeys, Keys
from shared.queue.live import LiveWriter
from shared.tasks import ReplyResult, TaskType
from tests.support.bot_harness import (
    InProcessBot,
    ManualConsumer,
    balances,
    bot_settings,
    choose_first_character,
    in_process_bot,
    migrated_sqlite,
    texts_to,
)
from tests.support.bot_world import eventually
from tests.support.fakes.telegram import FakeTelegram, Request

ASKER = 7201
OTHER = 7202
ADMIN = 7203
GROUP = -1_000_000_7201

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def app(
    settings: Settings, tmp_path: Path, tg: FakeTelegram, redis_client: aioredis.Redis
) -> AsyncIterator[InProcessBot]:
    config = bot_settings(settings, migrated_sqlite(tmp_path), tg.base_url, admin_ids=[ADMIN])
    async with in_process_bot(config, tg) as running:
        yield running


async def group_reply(app: InProcessBot, user_id: int, text: str, shown: str) -> TaskEntry:
    """`user_id` asks in the group; the reply is taken and shows `shown` under a ⏹ button."""
    app.tg.user_message(user_id, text, chat_id=GROUP)
    task = await ManualConsumer(app.queue).take(TaskType.GENERATE_REPLY)
    live = LiveWriter.for_task(
        app.queue.redis, app.settings, TaskType.GENERATE_REPLY, task.task.task_id, 1
    )
    await live.add(shown)
    await app.tg.wait_for("sendMessage", lambda r: r.ok and r.params["text"] == shown)
    return task


def stop_button_of(app: InProcessBot, task: TaskEntry) -> tuple[str, int]:
    """The ⏹ button's data and the message it is under."""
    data = StopCallback(task_id=task.task.task_id).pack()
    for message in app.tg.chat_history(GROUP):
        rows = message.get("reply_markup", {}).get("inline_keyboard", [])
        if any(button["callback_data"] == data for row in rows for button in row):
            return data, int(message["message_id"])
    raise LookupError("no stop button for the task")


async def press_stop(app: InProcessBot, user_id: int, task: TaskEntry) -> str:
    """`user_id` presses the task's ⏹; the text the bot answered the press with."""
    data, message_id = stop_button_of(app, task)
    callback_id = app.tg.callback(user_id, data, chat_id=GROUP, message_id=message_id)
    await app.tg.wait_for(
        "answerCallbackQuery", lambda r: r.ok and r.params["callback_query_id"] == callback_id
    )
    return str(app.tg.answered_callbacks[callback_id].get("text"))


async def cancel_asked(app: InProcessBot, task: TaskEntry) -> bool:
    record = Keys.from_settings(app.settings).record(TaskType.GENERATE_REPLY, task.task.task_id)
    return bool(await app.queue.redis.hexists(record, "cancel"))


def to_group(text: str) -> Any:
    return lambda r: r.ok and r.chat_id == GROUP and r.params["text"] == text


async def finish(app: InProcessBot, task: TaskEntry, text: str) -> Request:
    """The consumer completes the reply; the final edit of its message."""
    dialog_id = task.task.data["dialog_id"]
    await ManualConsumer(app.queue).complete(task, ReplyResult(reply=text, dialog_id=dialog_id))
    return (await app.tg.wait_for("editMessageText", to_group(text)))[0]


async def test_another_member_cannot_stop_a_reply_with_its_button(
    app: InProcessBot, tg: FakeTelegram
) -> None:
    await choose_first_character(tg, ASKER)
    task = await group_reply(app, ASKER, "Спой", "Ля-ля")

    assert await press_stop(app, OTHER, task) == texts.STOP_NOT_YOURS

    assert not await cancel_asked(app, task)
    final = await finish(app, task, "Ля-ля-ля, вот и песня!")
    assert texts.STOPPED_MARK not in final.params["text"]
    assert tg.chat_history(GROUP)[-1]["text"] == "Ля-ля-ля, вот и песня!"
    assert await balances(app.db, ASKER) == (4, 2)  # paid for a whole reply, and got it


async def test_the_asker_stops_their_own_reply_with_its_button(
    app: InProcessBot, tg: FakeTelegram
) -> None:
    await choose_first_character(tg, ASKER)
    task = await group_reply(app, ASKER, "Спой", "Ля-ля")

    assert await press_stop(app, ASKER, task) == texts.STOPPING

    assert await cancel_asked(app, task)
    stopped = ReplyResult(reply="Ля-ля", dialog_id=1, stopped=True)
    await ManualConsumer(app.queue).stop(task, stopped)
    await tg.wait_for("editMessageText", to_group(f"Ля-ля\n\n{texts.STOPPED_MARK}"))


async def test_stop_in_a_group_stops_only_the_senders_own_replies(
    app: InProcessBot, tg: FakeTelegram
) -> None:
    await choose_first_character(tg, ASKER)
    await choose_first_character(tg, OTHER)
    asked = await group_reply(app, ASKER, "Расскажи сказку", "Жили-были")

    tg.user_message(OTHER, "/stop", chat_id=GROUP)
    await tg.wait_for("sendMessage", to_group(texts.STOP_NOT_YOURS))
    assert not await cancel_asked(app, asked)

    # Both replies being written: OTHER's waits to be shown until ASKER's is done.
    tg.user_message(OTHER, "А мне стих", chat_id=GROUP)
    own = await ManualConsumer(app.queue).take(TaskType.GENERATE_REPLY)
    records = StreamRecords(app.queue.redis, BotKeys.from_settings(app.settings))
    await eventually(lambda: being_written(records, own))
    tg.user_message(OTHER, "/stop", chat_id=GROUP)
    await tg.wait_for("sendMessage", to_group(texts.STOPPING))
    assert await cancel_asked(app, own)
    assert not await cancel_asked(app, asked)

    final = await finish(app, asked, "Жили-были дед и баба.")
    assert texts.STOPPED_MARK not in final.params["text"]
    assert await balances(app.db, ASKER) == (4, 2)
    assert texts_to(tg, GROUP).count(texts.STOPPING) == 1
    await ManualConsumer(app.queue).stop(own, None)
    await tg.wait_for("sendMessage", to_group(texts.REPLY_STOPPED_REFUNDED))


async def being_written(records: StreamRecords, task: TaskEntry) -> bool:
    return task.task.task_id in await records.replies(GROUP)


async def test_an_admin_may_stop_anyones_reply_and_it_is_logged(
    app: InProcessBot, tg: FakeTelegram
) -> None:
    await choose_first_character(tg, ASKER)
    task = await group_reply(app, ASKER, "Спой", "Ля-ля")

    with capture_logs() as logs:
        assert await press_stop(app, ADMIN, task) == texts.STOPPING

    assert await cancel_asked(app, task)
    overrides = [e for e in logs if e["event"] == "stop_admin_override"]
    assert len(overrides) == 1
    assert overrides[0]["log_level"] == "warning"
    assert overrides[0]["admin_id"] == ADMIN
    assert overrides[0]["owner_id"] == ASKER
    assert overrides[0]["task_id"] == task.task.task_id
