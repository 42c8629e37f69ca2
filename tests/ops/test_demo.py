"""The one-command demo, headless: console chat on offline providers, then a clean shutdown.

Runs `python -m scripts.demo` (not scripts/demo.sh, which may call apt) against the machine's
Redis under the test's own key prefix and a SQLite file in tmp_path. The working directory is
tmp_path, so a developer's .env cannot change what the demo does.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
import redis.asyncio as aioredis

from consumers.providers.offline import PNG_SIGNATURE
from shared.config import setting_names
from shared.queue.inspect import queue_depth
from shared.queue.keys import Keys
from shared.tasks import TaskType
from tests.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parents[2]
# Everything a newcomer sees, from start to a photo, must fit in this.
CHAT_SECONDS = 60.0
EXIT_SECONDS = 30.0

pytestmark = pytest.mark.timeout(120)


class Demo:
    """The demo as a subprocess; a thread collects its stdout lines for `expect`."""

    def __init__(self, workdir: Path, prefix: str) -> None:
        self.photos = workdir / "photos"
        self.stderr_path = workdir / "demo.stderr"
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.deadline = time.monotonic() + CHAT_SECONDS
        command = [sys.executable, "-m", "scripts.demo", "--console"]
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [*command, "--photo-dir", str(self.photos)],
                cwd=workdir,
                env=demo_env(workdir, prefix),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                # A group of its own, so cleanup after a failure can reach the producer too.
                start_new_session=True,
            )
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stdout: IO[bytes] | None) -> None:
        assert stdout is not None
        for raw in stdout:
            self._lines.put(raw.decode("utf-8", errors="replace").rstrip("\n"))
        self._lines.put(None)

    def transcript(self) -> str:
        stderr = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(self.output) + f"\n--- stderr ---\n{stderr}"

    def expect(self, fragment: str) -> str:
        """The first new stdout line containing `fragment`, before the chat deadline."""
        while True:
            left = self.deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise AssertionError(f"no {fragment!r} in time:\n{self.transcript()}") from None
            if line is None:
                raise AssertionError(f"demo ended before {fragment!r}:\n{self.transcript()}")
            self.output.append(line)
            if fragment in line:
                return line

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{line}\n".encode())
        self.proc.stdin.flush()

    def consumer_pids(self) -> list[int]:
        return [int(pid) for pid in re.findall(r"\(pid (\d+)\)", "\n".join(self.output))]

    def wait(self) -> int:
        return self.proc.wait(timeout=EXIT_SECONDS)

    def close(self) -> None:
        """Kill what a failed test left running (the demo's group: it and the producer)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        # The reader stops at end of file, once nothing holds the demo's stdout open.
        self._reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def demo_env(workdir: Path, prefix: str) -> dict[str, str]:
    # No setting leaks in from the environment running the tests: the demo must choose the
    # offline providers itself, and BOT_TOKEN must be unset.
    env = {k: v for k, v in os.environ.items() if k.lower() not in setting_names()}
    env.update(
        PYTHONPATH=str(ROOT),
        REDIS_URL=REDIS_URL,
        REDIS_QUEUE_PREFIX=f"{prefix}queue:",
        REDIS_RESULT_PREFIX=f"{prefix}result:",
        REDIS_BOT_PREFIX=f"{prefix}bot:",
        DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'demo.db'}",
    )
    return env


def consumer_running(pid: int) -> bool:
    """A live consumer process; a zombie or a reused pid of something else does not count."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"consumers" in cmdline


@pytest.fixture
def demo(tmp_path: Path, prefix: str) -> Iterator[Demo]:
    started = Demo(tmp_path, prefix)
    yield started
    started.close()
    # Only after a failed test is anything left; kill what this test started, by pid.
    for pid in started.consumer_pids():
        if consumer_running(pid):
            os.kill(pid, signal.SIGKILL)


def start_chat(demo: Demo) -> list[int]:
    demo.expect("Consumers ready.")
    pids = demo.consumer_pids()
    demo.expect("/quit.")  # the console's own introduction: the producer reads stdin now
    demo.send("/start")
    demo.expect("Напиши номер персонажа.")
    return pids


def chat(demo: Demo) -> tuple[str, Path, int, list[int]]:
    """Talk like a newcomer; each step waits for the previous answer."""
    pids = start_chat(demo)
    demo.send("1")
    demo.expect("Твой собеседник")
    demo.send("Привет!")
    reply = demo.expect("«Привет!»")
    demo.send("/photo")
    photo = Path(demo.expect("📷 фото:").split("📷 фото:", 1)[1].strip())
    demo.send("/quit")
    code = demo.wait()
    demo.expect("Demo stopped.")
    return reply, photo, code, pids


def interrupt(demo: Demo) -> tuple[int, list[int]]:
    pids = start_chat(demo)
    # Only the demo gets the signal (as from `kill -INT`); it must stop the producer itself.
    demo.proc.send_signal(signal.SIGINT)
    code = demo.wait()
    demo.expect("Demo stopped.")
    return code, pids


async def assert_queues_empty(redis: aioredis.Redis, prefix: str) -> None:
    keys = Keys(f"{prefix}queue:", f"{prefix}result:")
    # The streams exist under our prefix (so the demo used it) and hold nothing unfinished.
    assert await redis.exists(keys.stream(TaskType.GENERATE_REPLY))
    for task_type in TaskType:
        depth = await queue_depth(redis, keys, task_type)
        assert (depth.unfinished, depth.dead) == (0, 0), depth


async def test_demo_console_replies_draws_a_photo_and_exits_cleanly(
    demo: Demo, prefix: str, redis_client: aioredis.Redis
) -> None:
    reply, photo, code, pids = await asyncio.to_thread(chat, demo)

    assert reply.startswith("бот> "), demo.transcript()
    assert photo.parent == demo.photos.resolve()
    assert photo.read_bytes().startswith(PNG_SIGNATURE)
    assert code == 0, demo.transcript()
    assert len(pids) == 2, demo.transcript()
    assert not [pid for pid in pids if consumer_running(pid)]
    # The chat stayed readable: every process logged to its own file instead.
    logs = {path.name for path in (demo.photos / "logs").iterdir()}
    assert len([name for name in logs if name.startswith("demo-")]) == 2, logs
    assert "producer.log" in logs
    await assert_queues_empty(redis_client, prefix)


async def test_demo_stops_everything_on_sigint(
    demo: Demo, prefix: str, redis_client: aioredis.Redis
) -> None:
    code, pids = await asyncio.to_thread(interrupt, demo)

    assert code == 0, demo.transcript()
    assert len(pids) == 2, demo.transcript()
    assert not [pid for pid in pids if consumer_running(pid)]
    await assert_queues_empty(redis_client, prefix)
