"""A consumer needs only Redis: it imports nothing of the database stack and needs no URL,
and no pydantic (its checks are plain code: pydantic costs a consumer 8 MB)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson

from shared.config import Settings
from shared.queue import QueueService
from shared.tasks import TaskStatus, TaskType
from tests.support.consumer_helpers import ROOT, consumer_env

# Runs a real consumer in burst mode, then reports which modules it had loaded.
PROBE = """
import sys, orjson
from consumers.__main__ import main
code = main(["--name", "probe", "--types", "generate_reply,generate_image", "--burst"])
db = sorted(m for m in sys.modules if m.split(".")[0] in {"sqlalchemy", "asyncpg", "aiosqlite",
    "alembic", "db"})
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"pydantic", "pydantic_core"})
sys.stdout.write(orjson.dumps({"code": code, "db": db, "heavy": heavy}).decode())
"""


async def test_a_consumer_runs_without_any_database_or_pydantic(
    queue: QueueService, settings: Settings
) -> None:
    task_id = await queue.enqueue_task(
        TaskType.GENERATE_REPLY,
        1,
        {"system_prompt": "s", "dialog_id": 1, "user_message": "Привет"},
    )
    env = consumer_env(settings, "postgresql+asyncpg://nobody:secret@127.0.0.1:1/none")
    env.pop("DATABASE_URL")
    command = [sys.executable, "-c", PROBE]
    result = await asyncio.to_thread(
        subprocess.run, command, check=False, cwd=ROOT, env=env, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    report = orjson.loads(result.stdout.splitlines()[-1])
    assert report == {"code": 0, "db": [], "heavy": []}
    task = await queue.get_task(task_id, TaskType.GENERATE_REPLY)
    assert task is not None and task.status is TaskStatus.COMPLETED
