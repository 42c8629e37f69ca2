"""End to end: the real `python -m producer` and `python -m consumers` on the fake Telegram."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from producer import texts
from producer.keyboards import PhotoCallback
from shared.config import Settings
from shared.queue import TaskType
from tests.support.bot_harness import (
    TOKEN,
    balances,
    log_events,
    process_env,
    texts_to,
    wait_exit,
    wait_text,
)
from tests.support.bot_world import World, eventually, idle, start_bot
from tests.support.consumer_helpers import ledger
from tests.support.fakes.http import Reply
from tests.support.fakes.telegram import FakeTelegram
from tests.support.fakes.venice import IMAGE_PATH, FakeVenice
from tests.support.private_redis import free_port

USER = 4242
# Generous: each test starts two or three Python processes.
pytestmark = pytest.mark.timeout(90)


async def choose_character(tg: FakeTelegram) -> None:
    tg.user_message(USER, "/start")
    greeting = await wait_text(tg, USER, "Привет", timeout=20)
    tg.callback(USER, greeting.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"])
    await wait_text(tg, USER, "Твой собеседник", timeout=20)


async def test_user_journey(world: World, tg: FakeTelegram) -> None:
    world.procs.consumer(process_env(world.settings))
    await start_bot(world, tg)
    await choose_character(tg)

    tg.user_message(USER, "Привет")
    reply = await wait_text(tg, USER, "Ты написал: «Привет»", timeout=20)
    assert reply.params["reply_markup"]["inline_keyboard"][0][0]["text"] == texts.PHOTO_BUTTON

    tg.callback(USER, PhotoCallback().pack())
    photo = (await tg.wait_for("sendPhoto", timeout=20))[0]
    assert photo.files["photo"][1].startswith(b"\x89PNG\r\n\x1a\n")

    tg.user_message(USER, "/generate в летнем платье")
    await tg.wait_for("sendPhoto", count=2, timeout=20)

    tg.user_message(USER, "/generate ещё одно")
    await wait_text(tg, USER, "Не хватает алмазов: нужно 1 💎, у тебя 0 💎")
    await asyncio.sleep(0.5)
    assert await idle(world.queue, *TaskType)
    assert len(tg.sent("sendPhoto")) == 2

    tg.user_message(USER, "/balance")
    await wait_text(tg, USER, "Твой баланс: 4 ⚡ энергии и 0 💎")
    assert await balances(world.db, USER) == (4, 0)

    log = world.procs.log_text("producer")
    assert TOKEN not in log
    queued = [e for e in log_events(log) if e.get("event") == "task_queued"]
    assert {e["user_id"] for e in queued} == {USER}
    assert all("update_id" in e for e in queued)


async def test_failed_image_is_refunded_and_announced_once(world: World, tg: FakeTelegram) -> None:
    async with FakeVenice(api_key="x") as venice:
        venice.script(*[Reply(400, {"error": "Invalid request"})] * 5, path=IMAGE_PATH)
        env = {"IMAGE_PROVIDER": "venice", "VENICE_API_KEY": "x", "VENICE_BASE_URL": venice.url}
        world.procs.consumer(process_env(world.settings, **env))
        await start_bot(world, tg)
        await choose_character(tg)

        tg.user_message(USER, "/generate в шляпе")
        await wait_text(tg, USER, texts.IMAGE_FAILED, timeout=20)
        await asyncio.sleep(0.5)

    assert texts_to(tg, USER).count(texts.IMAGE_FAILED) == 1
    assert await balances(world.db, USER) == (5, 2)
    kinds = [kind for kind, _, _ in await ledger(world.db, USER)]
    assert kinds == ["charge", "refund"]


async def test_restart_mid_task_delivers_once(world: World, tg: FakeTelegram) -> None:
    bot = await start_bot(world, tg)
    await choose_character(tg)
    tg.user_message(USER, "Привет")
    tg.callback(USER, PhotoCallback().pack())

    async def both_queued() -> bool:
        reply = await world.queue.get_queue_depth(TaskType.GENERATE_REPLY)
        prompt = await world.queue.get_queue_depth(TaskType.GENERATE_IMAGE_PROMPT)
        return reply.waiting == 1 and prompt.waiting == 1

    await eventually(both_queued)
    # Stop the bot while both tasks are in flight; the consumer finishes them meanwhile.
    assert await world.procs.stop(bot) == 0
    world.procs.consumer(process_env(world.settings))
    await eventually(
        lambda: idle(world.queue, TaskType.GENERATE_REPLY, TaskType.GENERATE_IMAGE_PROMPT)
    )
    assert not tg.sent("sendPhoto")

    # The restarted bot delivers the reply and continues the photo chain with its image step.
    await start_bot(world, tg)
    await wait_text(tg, USER, "Ты написал: «Привет»", timeout=20)
    await tg.wait_for("sendPhoto", timeout=20)
    await asyncio.sleep(1.0)
    assert sum("Ты написал" in text for text in texts_to(tg, USER)) == 1
    assert len(tg.sent("sendPhoto")) == 1
    assert await balances(world.db, USER) == (4, 1)


async def test_console_chat_uses_the_same_pipeline(world: World, tmp_path: Path) -> None:
    world.procs.consumer(process_env(world.settings))
    photos = tmp_path / "photos"
    console = world.procs.start(
        "console",
        "producer",
        ["--console", "--photo-dir", str(photos), "--user-id", str(USER)],
        process_env(world.settings),
        stdin=subprocess.PIPE,
        split_stderr=True,
    )
    assert console.stdin is not None
    console.stdin.write("/start\n1\nПривет\n/photo\n/quit\n".encode())
    console.stdin.close()
    assert await wait_exit(console, 60) == 0

    output = world.procs.log_text("console")
    assert "бот> Алиса" not in output  # characters are listed by number
    assert "1. Алиса" in output
    assert "Ты написал: «Привет»" in output
    saved = list(photos.glob("*.png"))
    assert len(saved) == 1
    assert saved[0].read_bytes().startswith(b"\x89PNG")
    assert str(saved[0]) in output
    assert await balances(world.db, USER) == (4, 1)


async def test_webhook_checks_the_secret(world: World, tg: FakeTelegram) -> None:
    port = free_port()
    secret = "s3cret-token"  # noqa: S105 - a test value
    env = process_env(
        world.settings,
        WEBHOOK_URL="https://bot.example/tg/hook",
        WEBHOOK_SECRET=secret,
        WEBHOOK_HOST="127.0.0.1",
        WEBHOOK_PORT=str(port),
    )
    world.procs.producer(env, "--webhook")
    hook = (await tg.wait_for("setWebhook", timeout=30))[0]
    assert hook.params["url"] == "https://bot.example/tg/hook"
    assert hook.params["secret_token"] == secret

    user = {"id": USER, "is_bot": False, "first_name": "Анна"}
    message = {
        "message_id": 1,
        "date": int(time.time()),
        "chat": {"id": USER, "type": "private"},
        "from": user,
        "text": "/start",
        "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
    }
    update = {"update_id": 1, "message": message}
    url = f"http://127.0.0.1:{port}/tg/hook"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=update) as refused:
            assert refused.status == 401
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret}
        async with http.post(url, json=update, headers=headers) as accepted:
            assert accepted.status == 200
    await wait_text(tg, USER, "Привет", timeout=20)


async def test_missing_token_is_named(settings: Settings) -> None:
    env = process_env(settings)
    command = [sys.executable, "-m", "producer"]
    done = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert b"BOT_TOKEN" in done.stderr
