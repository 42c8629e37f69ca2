"""queuectl as an operator runs it: stats, task, clear, dead list/replay/purge."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from consumers.providers.offline import OfflineImageClient, OfflineLLMClient
from consumers.registry import Providers, build_handlers
from consumers.runner import ConsumerRunner, RunnerOptions
from db import repositories as repo
from db.engine import create_engine, create_sessionmaker
from db.models import Currency
from shared.config import Settings
from shared.queue import Ending, QueueService, TaskStatus
from shared.queue.connection import RedisClient
from shared.tasks import TaskType
from tests.support.consumer_helpers import World, consumer_env, ledger, make_world
from tests.support.fixtures_db import Backend, Sessions
from tests.support.ops_helpers import reply_payload, run_cli, strand, unused_port

REPLY = TaskType.GENERATE_REPLY
CTL = "scripts.queuectl"


@pytest.fixture
async def db(sqlite_backend: Backend) -> AsyncIterator[Sessions]:
    engine = create_engine(sqlite_backend.url)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def env(settings: Settings, sqlite_backend: Backend) -> dict[str, str]:
    return consumer_env(settings, sqlite_backend.url, LOG_JSON="true")


async def run_consumer(queue: QueueService, db: Sessions, types: list[TaskType]) -> None:
    handlers = build_handlers(
        types, Providers(llm=OfflineLLMClient(), images=OfflineImageClient())
    )
    opts = RunnerOptions(limits=dict.fromkeys(types, 10), burst=True)
    await ConsumerRunner(queue.consumer("live"), handlers, opts).run()


async def enqueue_replies(
    queue: QueueService, world: World, n: int, paid: bool = False
) -> list[str]:
    ids = []
    for i in range(n):
        charge_id = f"charge-{world.user_id}-{i}" if paid else None
        ids.append(
            await queue.enqueue_task(
                REPLY, world.user_id, reply_payload(world, f"m{i}"), charge_id=charge_id
            )
        )
    return ids


@pytest.mark.topologies("single", "cluster")
async def test_stats_reports_what_was_set_up(
    queue: QueueService, db: Sessions, env: dict[str, str]
) -> None:
    world = await make_world(db)
    await enqueue_replies(queue, world, 8)
    deliveries = await strand(queue, REPLY, 3, "c1")
    dead = Ending(deliveries[0], TaskStatus.FAILED, 1, time.time(), error="boom")
    await queue.consumer("c1").finish([dead])
    result = await run_cli(env, CTL, "stats", "--json")
    assert result.returncode == 0, result.stderr
    by_type = {t["task_type"]: t for t in result.json()["types"]}
    reply = by_type["generate_reply"]
    assert (reply["stream_length"], reply["waiting"], reply["in_flight"], reply["dead"]) == (
        7,
        5,
        2,
        1,
    )
    assert [(c["name"], c["pending"]) for c in reply["consumers"]] == [("c1", 2)]
    assert reply["oldest_waiting_seconds"] >= 0 and reply["oldest_in_flight_seconds"] >= 0
    assert by_type["generate_image"]["stream_length"] == 0
    text = await run_cli(env, CTL, "stats")
    rows = [line.split() for line in text.stdout.splitlines()]
    type_row = next(r for r in rows if r[:1] == ["generate_reply"] and r[1] != "c1")
    assert type_row[1:4] == ["7", "5", "2"] and type_row[-1] == "1"
    # c1 never sent a heartbeat, so it counts as dead; then its 2 pending entries.
    assert ["generate_reply", "c1", "DEAD", "never", "2"] in [r[:5] for r in rows]


@pytest.mark.topologies("single", "cluster")
async def test_dead_replay_runs_again_and_purge_empties(
    queue: QueueService, db: Sessions, env: dict[str, str], redis_client: RedisClient
) -> None:
    world = await make_world(db)
    ids = await enqueue_replies(queue, world, 3)
    await redis_client.xadd(queue.keys.stream(REPLY), {"task": b"{broken"})
    assert len(await queue.drain(REPLY, "operator test")) == 3
    listed = await run_cli(env, CTL, "dead", "list", "generate_reply", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = listed.json()
    assert sorted(e["task_id"] for e in entries if e["replayable"]) == sorted(ids)
    [bad] = [e["original"] for e in entries if not e["replayable"]]
    assert bad["task"] == "{broken" and bad["size"] == str(len("task{broken"))
    replay = await run_cli(env, CTL, "dead", "replay", "generate_reply")
    assert replay.returncode == 0, replay.stderr
    assert "replayed 3 generate_reply tasks; skipped 1" in replay.stdout
    for task_id in ids:
        task = await queue.get_task(task_id, REPLY)
        assert task is not None and (task.status, task.attempts) == (TaskStatus.PENDING, 0)
    await run_consumer(queue, db, [REPLY])
    for task_id in ids:
        task = await queue.get_task(task_id, REPLY)
        assert task is not None and task.status is TaskStatus.COMPLETED
    text = await run_cli(env, CTL, "dead", "list", "generate_reply")
    assert "dead entries: 1" in text.stdout and "(malformed)" in text.stdout
    refused = await run_cli(env, CTL, "dead", "purge", "generate_reply")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    purged = await run_cli(env, CTL, "dead", "purge", "generate_reply", "--yes")
    assert purged.returncode == 0 and "purged 1 dead generate_reply entries" in purged.stdout
    assert await redis_client.xlen(queue.keys.dead(REPLY)) == 0


async def test_task_shows_the_record_without_the_image(
    queue: QueueService, db: Sessions, env: dict[str, str]
) -> None:
    world = await make_world(db)
    task_id = await queue.enqueue_task(
        TaskType.GENERATE_IMAGE, world.user_id, {"prompt": "cafe", "dialog_id": world.dialog_id}
    )
    await run_consumer(queue, db, [TaskType.GENERATE_IMAGE])
    task = await queue.get_task(task_id)
    assert task is not None and task.result is not None
    image = task.result["image_base64"]
    shown = await run_cli(env, CTL, "task", task_id)
    assert shown.returncode == 0, shown.stderr
    assert f"task_id      {task_id}" in shown.stdout and "completed" in shown.stdout
    assert f"<base64, {task.result['image_size']} bytes>" in shown.stdout
    assert image[:64] not in shown.stdout and len(shown.stdout) < 2000
    as_json = (await run_cli(env, CTL, "task", task_id, "--json")).json()
    assert as_json["status"] == "completed" and as_json["attempts"] == 1
    assert as_json["result"]["image_base64"].startswith("<base64, ")
    missing = await run_cli(env, CTL, "task", "no-such-task")
    assert missing.returncode == 1 and "no task no-such-task" in missing.stderr


async def test_clear_fails_every_unfinished_task_and_refunds_it(
    queue: QueueService, db: Sessions, env: dict[str, str]
) -> None:
    world = await make_world(db, energy=10)
    for i in range(3):
        async with db.begin() as session:
            await repo.charge(
                session,
                world.user_id,
                Currency.ENERGY,
                1,
                charge_id=f"charge-{world.user_id}-{i}",
                reason="reply",
            )
    ids = await enqueue_replies(queue, world, 3, paid=True)
    await strand(queue, REPLY, 1, "c1")  # one in flight, two waiting
    refused = await run_cli(env, CTL, "clear", "generate_reply")
    assert refused.returncode == 2 and (await queue.get_queue_depth(REPLY)).unfinished == 3
    result = await run_cli(env, CTL, "clear", "generate_reply", "--yes")
    assert result.returncode == 0, result.stderr
    assert "cleared 3 generate_reply tasks" in result.stdout
    for task_id in ids:
        task = await queue.get_task(task_id, REPLY)
        assert task is not None and task.status is TaskStatus.FAILED
        assert task.error == "cleared by operator"
    # The operator's tool only changes Redis; the bot refunds each announced failure.
    kinds = [kind for kind, _, _ in await ledger(db, world.user_id)]
    assert kinds.count("charge") == 3 and kinds.count("refund") == 0


@pytest.mark.parametrize("module", [CTL, "scripts.reclaim_stuck"])
async def test_unreachable_redis_is_a_clear_error(env: dict[str, str], module: str) -> None:
    env = dict(env, REDIS_URL=f"redis://:secret@127.0.0.1:{unused_port()}/0")
    args: Any = ["stats"] if module == CTL else []
    result = await run_cli(env, module, *args)
    assert result.returncode == 1
    assert "cannot reach Redis at redis://***@127.0.0.1:" in result.stderr
    assert "secret" not in result.stderr and "Traceback" not in result.stderr
