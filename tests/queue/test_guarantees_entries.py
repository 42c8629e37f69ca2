"""Hostile and odd entries: whatever an entry holds, it fails alone and good tasks keep flowing."""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.runner import ConsumerRunner, RunnerOptions
from consumers.task_run import TaskRun
from scripts.reclaim_stuck import reclaim_pass
from shared.config import Settings
from shared.queue import Malformed, QueueService, TaskEntry
from shared.queue.dead_letters import replay_dead
from shared.queue.keys import GROUP
from shared.queue.records import DEAD_PREFIX_BYTES, parse_entry
from shared.tasks import ImagePromptResult, QueueTask, TaskResult, TaskStatus, TaskType
from tests.conftest import REDIS_URL
from tests.support.ops_helpers import reclaim_options

PROMPT = TaskType.GENERATE_IMAGE_PROMPT
PAYLOAD = {"girl_name": "Мира", "girl_description": "бариста"}


class Echo:
    async def __call__(self, task: QueueTask, run: TaskRun) -> TaskResult:
        return ImagePromptResult(prompt=str(task.data["girl_name"]))


def good_entry(task_id: str, **override: Any) -> dict[str, Any]:
    entry = {
        "task_id": task_id,
        "type": PROMPT.value,
        "user_id": 1,
        "data": dict(PAYLOAD),
        "created_at": 1_700_000_000.0,
        "charge_id": None,
    }
    entry.update(override)
    return entry


def runner(queue: QueueService, name: str = "c1") -> ConsumerRunner:
    opts = RunnerOptions(limits={PROMPT: 10}, burst=True, claim_idle_ms=100)
    return ConsumerRunner(queue.consumer(name), {PROMPT: Echo()}, opts)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what orjson writes; more below
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
# Numbers orjson cannot write but an attacker can: raw JSON text spliced into an entry.
raw_numbers = st.sampled_from([b"1e400", b"-1e400", b"NaN", b"1" * 400, b"-0", b"1e-400"])


@st.composite
def hostile_fields(draw: st.DrawFn) -> dict[bytes, bytes]:
    kind = draw(st.integers(0, 4))
    if kind == 0:  # a good entry with one field replaced by anything
        entry = good_entry(f"h-{uuid.uuid4().hex[:8]}")
        entry[draw(st.sampled_from(sorted(entry)))] = draw(json_values)
        return {b"task": orjson.dumps(entry)}
    if kind == 1:  # a raw number no JSON encoder would write
        number = draw(raw_numbers)
        field = draw(st.sampled_from([b"created_at", b"user_id"]))
        text = orjson.dumps(good_entry(f"h-{uuid.uuid4().hex[:8]}")).decode()
        head, _, tail = text.partition(f'"{field.decode()}":')
        rest = tail.split(",", 1)[1]
        return {b"task": f'{head}"{field.decode()}":'.encode() + number + b"," + rest.encode()}
    if kind == 2:  # arbitrary field names and bytes, not UTF-8 either
        return draw(st.dictionaries(st.binary(min_size=1, max_size=8), st.binary(), min_size=1))
    if kind == 3:  # a newer producer: unknown fields everywhere (these must run)
        entry = good_entry(f"n-{uuid.uuid4().hex[:8]}", priority="high")
        entry["data"] = {**PAYLOAD, "mood": draw(json_values)}
        return {b"task": orjson.dumps(entry)}
    return {b"task": draw(st.binary(max_size=64))}


@given(st.lists(hostile_fields(), min_size=1, max_size=6))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_parse_never_raises(entries: list[dict[bytes, bytes]]) -> None:
    for fields in entries:
        parsed = parse_entry(PROMPT, b"1-0", fields, 65536)
        assert isinstance(parsed, TaskEntry | Malformed)
        if isinstance(parsed, Malformed):
            assert parsed.reason


@given(st.lists(hostile_fields(), min_size=1, max_size=5))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_hostile_entries_never_hold_up_good_tasks(entries: list[dict[bytes, bytes]]) -> None:
    asyncio.run(_flow(entries))


async def _flow(entries: list[dict[bytes, bytes]]) -> None:
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    cfg = Settings(
        redis_url=REDIS_URL,
        redis_queue_prefix=f"{prefix}queue:",
        redis_result_prefix=f"{prefix}result:",
    )
    queue = QueueService(cfg, "hypothesis")
    await queue.connect()
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        stream = queue.keys.stream(PROMPT)
        good = [await queue.enqueue_task(PROMPT, 1, PAYLOAD)]
        for fields in entries:
            hostile: Any = fields
            await client.xadd(stream, hostile)
        good.append(await queue.enqueue_task(PROMPT, 1, PAYLOAD))
        # Half goes through a consumer that dies holding it: reclaim must cope too.
        await queue.consumer("ghost").read(PROMPT, len(entries) // 2 + 1, 100)
        await asyncio.sleep(0.15)
        await reclaim_pass(queue, reclaim_options(min_idle_ms=100))
        await runner(queue).run()
        for task_id in good:
            task = await queue.get_task(task_id, PROMPT)
            assert task is not None and task.status is TaskStatus.COMPLETED
        assert await client.xlen(stream) == 0
        assert (await client.xpending(stream, GROUP))["pending"] == 0
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await queue.close()


async def test_an_out_of_range_created_at_fails_its_task_at_once(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    """The entry names a task whose record exists: that task fails at once, announced."""
    stream = queue.keys.stream(PROMPT)
    await queue.enqueue_task(PROMPT, 1, PAYLOAD, task_id="victim", charge_id="c-1")
    rows: Any = await redis_client.xrange(stream)
    [entry] = rows
    await redis_client.xdel(stream, entry[0])
    text = entry[1][b"task"].decode()
    created = text.split('"created_at":')[1].split(",")[0]
    await redis_client.xadd(stream, {"task": text.replace(created, "1e300")})
    after = await queue.enqueue_task(PROMPT, 1, PAYLOAD)
    waiter = asyncio.create_task(queue.wait_for_task_result("victim", 5, PROMPT))
    await asyncio.sleep(0.1)
    await runner(queue).run()
    failed = await waiter
    assert failed.status is TaskStatus.FAILED and failed.charge_id == "c-1"
    assert "malformed entry" in (failed.error or "")
    done = await queue.get_task(after, PROMPT)
    assert done is not None and done.status is TaskStatus.COMPLETED
    dead_rows: Any = await redis_client.xrange(queue.keys.dead(PROMPT))
    [(_, dead)] = dead_rows
    assert dead[b"reason"].startswith(b"malformed entry") and dead[b"entry_id"]


async def test_a_newer_producer_s_fields_are_accepted(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    """A rolling deploy: the bot adds optional fields; old consumers still run its tasks."""
    entry = good_entry("newer", priority="high", trace={"span": 1})
    entry["data"] = {**PAYLOAD, "style": "anime", "seed": 42}
    await redis_client.xadd(queue.keys.stream(PROMPT), {"task": orjson.dumps(entry)})
    await runner(queue).run()
    task = await queue.get_task("newer", PROMPT)
    assert task is not None and task.status is TaskStatus.COMPLETED
    assert task.result == {"prompt": "Мира"}


async def test_a_poison_entry_keeps_only_a_bounded_prefix_in_the_dead_letters(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    poison = b"x" * (10 * 1024 * 1024)
    await redis_client.xadd(queue.keys.stream(PROMPT), {"task": poison})
    await runner(queue).run()
    dead_rows: Any = await redis_client.xrange(queue.keys.dead(PROMPT))
    [(_, fields)] = dead_rows
    assert len(fields[b"orig_task"]) == DEAD_PREFIX_BYTES
    assert fields[b"orig_size"] == str(len(poison) + len(b"task")).encode()
    assert len(fields[b"orig_sha256"]) == 64
    usage = await redis_client.memory_usage(queue.keys.dead(PROMPT))
    assert usage is not None and usage < 64 * 1024


async def test_nan_and_infinite_numbers_in_a_record_do_not_stop_reclaim(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    task_id = await queue.enqueue_task(PROMPT, 1, PAYLOAD)
    await queue.consumer("ghost").read(PROMPT, 1, 100)
    await redis_client.hset(queue.keys.record(PROMPT, task_id), "attempts", "NaN")
    await asyncio.sleep(0.15)
    report = await reclaim_pass(queue, reclaim_options(min_idle_ms=100))
    assert [w.result for w in report.works] == ["requeued"]
    await runner(queue).run()
    task = await queue.get_task(task_id, PROMPT)
    assert task is not None and task.status is TaskStatus.COMPLETED
    assert not math.isnan(task.attempts)


@pytest.mark.parametrize("settled", [True, False])
async def test_replay_refuses_a_task_the_bot_already_settled(
    queue: QueueService, redis_client: aioredis.Redis, settled: bool
) -> None:
    task_id = await queue.enqueue_task(PROMPT, 1, PAYLOAD, charge_id="c-9")
    [entry] = await queue.consumer("c1").read(PROMPT, 1, 100)
    assert await queue.consumer("c1").fail([entry], "provider refused") == [True]
    if settled:  # the bot refunded the task and told the user
        await redis_client.hset(queue.keys.record(PROMPT, task_id), "settled", "1")
    [result] = await replay_dead(queue.redis, queue.scripts, queue.keys, PROMPT, task_ttl=60)
    if settled:
        assert result.new_entry_id is None and "refunded" in (result.skipped or "")
        assert await redis_client.xlen(queue.keys.stream(PROMPT)) == 0
    else:
        assert result.new_entry_id is not None


async def test_replay_refuses_a_paid_task_whose_record_expired(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    task_id = await queue.enqueue_task(PROMPT, 1, PAYLOAD, charge_id="c-10")
    [entry] = await queue.consumer("c1").read(PROMPT, 1, 100)
    await queue.consumer("c1").fail([entry], "provider refused")
    await redis_client.delete(queue.keys.record(PROMPT, task_id))
    [result] = await replay_dead(queue.redis, queue.scripts, queue.keys, PROMPT, task_ttl=60)
    assert result.new_entry_id is None and "expired" in (result.skipped or "")
