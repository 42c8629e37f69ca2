"""A stop reaches a real consumer process: its provider connection closes within 300 ms."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.config import Settings
from shared.queue import QueueService
from shared.queue.live import LiveReader
from shared.tasks import TaskStatus, TaskType
from tests.support.consumer_helpers import log_events, start_consumer, stop_process, venice_env
from tests.support.fakes.venice import FakeVenice, StreamPlan

REPLY = TaskType.GENERATE_REPLY
WORDS = " ".join(f"слово{i}" for i in range(60))

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def shown_words(reader: LiveReader, task_id: str, words: int) -> str:
    shown = ""
    async for chunk in reader.follow(REPLY, task_id):
        shown += chunk.text
        if len(shown.split()) >= words:
            break
    return shown


async def test_a_stop_reaches_a_consumer_in_another_process_within_300_ms(
    settings: Settings,
    queue: QueueService,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    reader = LiveReader(settings, client_name=f"{settings.redis_queue_prefix}live")
    log = tmp_path / "consumer.log"
    async with FakeVenice(reply=WORDS) as venice:
        venice.stream_plan = StreamPlan(delay=0.05)
        env = venice_env(settings, "", venice)
        procs.append(start_consumer(env, "streamer", log, "--types", "generate_reply"))
        took: list[float] = []
        try:
            for i in range(3):
                payload = {"system_prompt": "s", "dialog_id": 1, "user_message": f"m{i}"}
                task_id = await queue.enqueue_task(REPLY, 1, payload)
                shown = await shown_words(reader, task_id, 2)
                stopped_at = time.monotonic()
                assert await queue.cancel(REPLY, task_id) is TaskStatus.PROCESSING
                task = await queue.wait_for_task_result(task_id, 10, REPLY)
                took.append(await venice.stream_closed_at() - stopped_at)
                assert task.status is TaskStatus.CANCELLED
                assert task.result is not None and task.result["stopped"] is True
                partial = task.result["reply"]
                assert partial.startswith(shown.strip()) and len(partial) < len(WORDS)
        finally:
            await reader.aclose()
            assert await stop_process(procs[0]) == 0
    assert max(took) < 0.3, took
    stops = [e for e in log_events(log) if e["event"] == "task_stopped"]
    assert len(stops) == 3
    assert all(e["consumer"] == "streamer" and e["task_type"] == REPLY for e in stops)
