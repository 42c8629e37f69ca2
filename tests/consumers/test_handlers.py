"""Consumer runtime in-process: each handler end to end, limits, retries, poison, delivery cap.

Every test runs on one server and on a 3-master Redis Cluster (see conftest)."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any

import pytest

from consumers.providers.offline import OfflineImageClient, OfflineLLMClient
from consumers.providers.offline_audio import OfflineSpeaker, OfflineTranscriber
from consumers.providers.venice import VeniceClient
from consumers.registry import Providers, TaskHandler, build_handlers
from consumers.runner import ConsumerRunner, RunnerOptions
from consumers.task_run import TaskRun, wait_for_admission
from db import repositories as repo
from db.models import Currency, Dialog
from shared.config import Settings
from shared.config_values import Secret
from shared.errors import ProviderUnavailableError
from shared.queue import QueueService, TaskEntry
from shared.queue.audio import AudioStore
from shared.queue.connection import RedisClient
from shared.tasks import ImagePromptResult, QueueTask, TaskStatus, TaskType, dumps
from tests.support.consumer_helpers import SlowVenice, World, count_replies, ledger, make_world
from tests.support.fixtures_db import Sessions

ALL = list(TaskType)

pytestmark = pytest.mark.topologies("single", "cluster")


def options(limit: int = 10, **kw: Any) -> RunnerOptions:
    return RunnerOptions(limits=dict.fromkeys(TaskType, limit), burst=True, **kw)


def offline_handlers(queue: QueueService) -> dict[TaskType, TaskHandler]:
    providers = Providers(
        llm=OfflineLLMClient(),
        images=OfflineImageClient(),
        stt=OfflineTranscriber(),
        tts=OfflineSpeaker(),
        audio=AudioStore(queue.redis, queue.settings),
    )
    return build_handlers(ALL, providers)


def reply_payload(world: World, text: str = "Привет!") -> dict[str, Any]:
    return {
        "system_prompt": "Ты Мира.",
        "history": [],
        "dialog_id": world.dialog_id,
        "user_message": text,
    }


async def charge(db: Sessions, world: World, charge_id: str, currency: str = "diamonds") -> None:
    async with db.begin() as session:
        await repo.charge(
            session, world.user_id, Currency(currency), 1, charge_id=charge_id, reason="t"
        )


async def test_each_task_type_end_to_end(queue: QueueService, db: Sessions) -> None:
    world = await make_world(db)
    reply_id = await queue.enqueue_task(
        TaskType.GENERATE_REPLY, world.user_id, reply_payload(world)
    )
    prompt_id = await queue.enqueue_task(
        TaskType.GENERATE_IMAGE_PROMPT,
        world.user_id,
        {
            "girl_name": "Мира",
            "girl_description": "auburn hair",
            "recent_dialogue": [{"role": "user", "content": "Покажи себя"}],
        },
    )
    image_id = await queue.enqueue_task(
        TaskType.GENERATE_IMAGE,
        world.user_id,
        {"prompt": "girl in a cafe", "dialog_id": world.dialog_id, "girl_id": world.character_id},
    )
    runner = ConsumerRunner(queue.consumer("c1"), offline_handlers(queue), options())
    await runner.run()
    reply = await queue.wait_for_task_result(reply_id, timeout=5)
    assert reply.status is TaskStatus.COMPLETED and reply.result
    assert reply.result["dialog_id"] == world.dialog_id and reply.result["reply"]
    # Consumers need only Redis: the bot saves the reply when it applies the outcome.
    assert await count_replies(db, world.dialog_id) == (0, 0)
    prompt = await queue.wait_for_task_result(prompt_id, timeout=5)
    assert prompt.result and prompt.result["prompt"]
    image = await queue.wait_for_task_result(image_id, timeout=5)
    assert image.result is not None
    png = base64.b64decode(image.result["image_base64"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and image.result["image_size"] == len(png)
    assert image.result["girl_id"] == world.character_id
    assert image.result["dialog_id"] == world.dialog_id  # the bot counts the photo with it
    async with db() as session:
        dialog = await session.get(Dialog, world.dialog_id)
    assert dialog is not None and dialog.photo_count == 0


async def test_concurrency_limit_bounds_parallel_provider_calls(
    queue: QueueService, db: Sessions, settings: Settings
) -> None:
    world = await make_world(db)
    async with SlowVenice(delay=0.3) as venice:
        llm = VeniceClient(Secret(venice.api_key), base_url=venice.url)
        handlers = build_handlers([TaskType.GENERATE_REPLY], Providers(llm=llm))
        await queue.enqueue_many(
            TaskType.GENERATE_REPLY, [(1, reply_payload(world, f"m{i}")) for i in range(12)]
        )
        opts = RunnerOptions(limits={TaskType.GENERATE_REPLY: 3}, burst=True)
        await ConsumerRunner(queue.consumer("c1"), handlers, opts).run()
        await llm.aclose()
    assert venice.peak == 3
    assert len(venice.chat_requests) == 12


class Flaky:
    """A provider call that fails the first `failures` times as an outage, then answers.

    Its calls pass the gate every provider request passes (ProviderHttp.send): the handler
    may start before its start step answered, its provider call may not.
    """

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self, task: QueueTask, run: TaskRun) -> ImagePromptResult:
        await wait_for_admission()
        self.calls += 1
        if self.calls <= self.failures:
            raise ProviderUnavailableError("upstream 503", "fake", 503)
        return ImagePromptResult(prompt="ok")


PROMPT = {"girl_name": "a", "girl_description": "b"}


async def test_retryable_failure_is_retried_then_completes(queue: QueueService) -> None:
    task_id = await queue.enqueue_task(TaskType.GENERATE_IMAGE_PROMPT, 1, PROMPT)
    handler = Flaky(failures=2)
    opts = options(retry_base_seconds=0.01)
    await ConsumerRunner(
        queue.consumer("c1"), {TaskType.GENERATE_IMAGE_PROMPT: handler}, opts
    ).run()
    task = await queue.wait_for_task_result(task_id, timeout=5)
    assert task.status is TaskStatus.COMPLETED and task.attempts == 3
    assert handler.calls == 3


async def test_permanent_failure_dead_letters_and_leaves_money_to_the_bot(
    queue: QueueService, db: Sessions, redis_client: RedisClient
) -> None:
    world = await make_world(db, diamonds=5)
    charge_id = f"photo-charge-{uuid.uuid4().hex}"  # charges are unique per database
    await charge(db, world, charge_id)
    task_id = await queue.enqueue_task(
        TaskType.GENERATE_IMAGE_PROMPT, world.user_id, PROMPT, charge_id=charge_id
    )
    handler = Flaky(failures=99)
    opts = options(max_deliveries=3, retry_base_seconds=0.01)
    runner = ConsumerRunner(queue.consumer("c1"), {TaskType.GENERATE_IMAGE_PROMPT: handler}, opts)
    await runner.run()
    task = await queue.wait_for_task_result(task_id, timeout=5)
    assert task.status is TaskStatus.FAILED and "upstream 503" in (task.error or "")
    assert task.charge_id == charge_id  # the bot refunds it when it applies the failure
    assert handler.calls == 3
    # A consumer never touches money: the charge stands until the bot applies the failure.
    assert await ledger(db, world.user_id) == [("charge", -1, charge_id)]
    dead: Any = await redis_client.xrange(queue.keys.dead(TaskType.GENERATE_IMAGE_PROMPT))
    assert len(dead) == 1 and b"upstream 503" in dead[0][1][b"reason"]


async def test_poison_entries_are_dead_lettered_while_good_ones_flow(
    queue: QueueService, db: Sessions, redis_client: RedisClient
) -> None:
    world = await make_world(db)
    stream = queue.keys.stream(TaskType.GENERATE_REPLY)
    good = []
    for i in range(10):
        await redis_client.xadd(stream, {"task": b"{broken json"})
        await redis_client.xadd(stream, {"task": dumps({"task_id": f"bad{i}", "type": "nope"})})
        good.append(
            await queue.enqueue_task(TaskType.GENERATE_REPLY, 1, reply_payload(world, f"m{i}"))
        )
    await ConsumerRunner(queue.consumer("c1"), offline_handlers(queue), options()).run()
    for task_id in good:
        task = await queue.wait_for_task_result(task_id, timeout=5)
        assert task.status is TaskStatus.COMPLETED
    assert await redis_client.xlen(queue.keys.dead(TaskType.GENERATE_REPLY)) == 20
    depth = await queue.get_queue_depth(TaskType.GENERATE_REPLY)
    assert (depth.waiting, depth.in_flight, depth.stream_length) == (0, 0, 0)


async def test_delivery_cap_dead_letters_a_task_that_keeps_crashing_consumers(
    queue: QueueService, db: Sessions
) -> None:
    world = await make_world(db, diamonds=3)
    charge_id = f"c-cap-{uuid.uuid4().hex}"
    await charge(db, world, charge_id)
    task_id = await queue.enqueue_task(
        TaskType.GENERATE_IMAGE_PROMPT, world.user_id, PROMPT, charge_id=charge_id
    )
    # Two consumers take the entry and die without finishing (as a poison task would cause).
    for name in ("crash-1", "crash-2"):
        consumer = queue.consumer(name)
        entries = await consumer.claim(TaskType.GENERATE_IMAGE_PROMPT, 1, 50)
        entries = entries or await consumer.read(TaskType.GENERATE_IMAGE_PROMPT, 1, 100)
        await consumer.start([e for e in entries if isinstance(e, TaskEntry)], time.time())
        await asyncio.sleep(0.1)
    handler = Flaky(failures=0)
    opts = options(max_deliveries=2, claim_idle_ms=50)
    runner = ConsumerRunner(queue.consumer("c3"), {TaskType.GENERATE_IMAGE_PROMPT: handler}, opts)
    await runner.run()
    task = await queue.wait_for_task_result(task_id, timeout=5)
    assert task.status is TaskStatus.FAILED and "delivered 3 times, limit 2" in (task.error or "")
    assert handler.calls == 0
    assert [k for k, _, _ in await ledger(db, world.user_id)] == ["charge"]
