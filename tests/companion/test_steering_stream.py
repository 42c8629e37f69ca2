"""A regenerated reply is streamed into the message it replaces: the real bot (polling, live
output) on the fake Telegram, a consumer process on the fake streaming Venice."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer import texts
from producer.keyboards import RegenerateCallback, StopCallback
from shared.config import Settings
from tests.support.bot_harness import (
    bot_settings,
    choose_first_character,
    in_process_bot,
    migrated_sqlite,
    texts_to,
    wait_text,
)
from tests.support.consumer_helpers import start_consumer, stop_process, venice_env
from tests.support.fakes.telegram import FakeTelegram, Request
from tests.support.fakes.venice import FakeVenice, StreamPlan

pytestmark = pytest.mark.timeout(120)

USER = 6161
FIRST = " ".join(f"первый{i}" for i in range(12))
SECOND = " ".join(f"второй{i}" for i in range(12))


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_a_regenerated_reply_streams_into_the_message_it_replaces(
    settings: Settings, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    answers = iter((FIRST, SECOND))
    async with FakeVenice(reply=lambda _: next(answers)) as venice, FakeTelegram() as tg:
        venice.stream_plan = StreamPlan(delay=0.1)
        config = bot_settings(settings, migrated_sqlite(tmp_path), tg.base_url)
        env = venice_env(config, config.database_url, venice)
        procs.append(start_consumer(env, "c1", tmp_path / "c1.log", "--types", "generate_reply"))
        async with in_process_bot(config, tg):
            await choose_first_character(tg, USER)
            tg.user_message(USER, "Расскажи")
            first = await wait_text(tg, USER, FIRST, timeout=30)
            assert tg.streaming.draft_calls(USER)  # the first reply streamed as a draft
            rows = first.params["reply_markup"]["inline_keyboard"]
            regenerate = rows[1][0]["callback_data"]
            assert RegenerateCallback.unpack(regenerate).task_id

            message_id = first.result["message_id"]
            drafts_before = len(tg.streaming.draft_calls(USER))
            tg.callback(USER, regenerate, message_id=message_id)
            final = await tg.wait_for(
                "editMessageText",
                lambda r: r.ok and r.params.get("text") == SECOND and _buttons(r) is not None,
                timeout=30,
            )
            await asyncio.sleep(0.5)
        assert await stop_process(procs[0]) == 0

    edits = [r for r in tg.sent("editMessageText", USER) if r.ok]
    # Shown while written in the pressed message itself, with a stop button, then final.
    assert {r.params["message_id"] for r in edits} == {message_id}
    streaming = [r for r in edits if r is not final[0]]
    assert streaming
    assert all(SECOND.startswith(str(r.params["text"])) for r in streaming)
    stop = streaming[0].params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    assert StopCallback.unpack(stop).task_id != RegenerateCallback.unpack(regenerate).task_id
    assert final[0] is edits[-1]
    assert len(tg.streaming.draft_calls(USER)) == drafts_before  # no new draft
    assert texts_to(tg, USER).count(FIRST) == 1
    assert not any(SECOND in text for text in texts_to(tg, USER))  # no new message


def _buttons(request: Request) -> list[str] | None:
    """The texts of the reply's own buttons (📷, 🔄…), None for the ⏹ of a preview."""
    rows = request.params.get("reply_markup", {}).get("inline_keyboard", [])
    found = [str(b["text"]) for row in rows for b in row]
    return found if texts.PHOTO_BUTTON in found else None
