"""The bot's start as a newcomer sees it: what it is doing, and one line when it cannot go on."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys

import orjson

from producer.startup import Progress
from shared.config import Settings
from tests.support.bot_harness import process_env
from tests.support.consumer_helpers import ROOT
from tests.support.ops_helpers import unused_port

TOKEN = "123456:" + "A" * 35


async def run_producer(env: dict[str, str], *args: str) -> tuple[int, list[str]]:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "producer", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    return done.returncode, (done.stdout + done.stderr).splitlines()


def plain_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith("{")]


def events(lines: list[str]) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in lines if line.startswith("{")]


async def test_unreachable_telegram_is_one_line_and_exit_1(settings: Settings) -> None:
    api = f"http://127.0.0.1:{unused_port()}"
    env = process_env(settings, BOT_TOKEN=TOKEN, TELEGRAM_API_URL=api)

    code, lines = await run_producer(env)

    assert code == 1, lines
    assert plain_lines(lines) == [
        next(line for line in lines if line.startswith("bot cannot start: Telegram"))
    ], lines
    assert f"unreachable at {api}" in plain_lines(lines)[0]
    steps = [str(e["step"]) for e in events(lines) if e["event"] == "producer_starting"]
    assert steps[0].startswith("loading aiogram")
    assert steps[-1].startswith("checking BOT_TOKEN with Telegram")
    output = "\n".join(lines)
    assert "Traceback" not in output
    assert "Unclosed" not in output
    assert TOKEN.split(":")[1] not in output


async def test_unreachable_redis_is_one_line_in_the_console(settings: Settings) -> None:
    env = process_env(settings, REDIS_URL=f"redis://127.0.0.1:{unused_port()}/0")

    code, lines = await run_producer(env, "--console")

    assert code == 1, lines
    starting = [line for line in lines if line.startswith("Starting: ")]
    assert [line.split(":", 1)[1].split()[0] for line in starting] == ["loading", "connecting"]
    (problem,) = [line for line in plain_lines(lines) if not line.startswith("Starting: ")]
    assert problem.startswith("bot cannot start: cannot reach Redis at redis://127.0.0.1:")


def test_console_progress_is_plain_text() -> None:
    out = io.StringIO()
    Progress(console=True, out=out)("connecting to Redis")
    assert out.getvalue() == "Starting: connecting to Redis…\n"
