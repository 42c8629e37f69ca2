"""The edges of a user's stop now that a handler runs in a cancel scope, not a task of its own.

A stop expires the scope of the running handler; it must cancel nothing once the handler has
its result, and a shutdown that comes while a stopped handler cleans up must still hand the
task back (it runs again elsewhere) instead of ending it as stopped.
"""

from __future__ import annotations

import asyncio

import pytest

from consumers.registry import TaskHandler
from consumers.runner import ConsumerRunner, RunnerOptions
from consumers.task_run import TaskRun
from shared.queue import QueueService, TaskEntry
from shared.tasks import ImagePromptResult, QueueTask, TaskResult, TaskStatus, TaskType

PROMPT = TaskType.GENERATE_IMAGE_PROMPT
PAYLOAD = {"girl_name": "Мира", "girl_description": "d", "recent_dialogue": []}

pytestmark = pytest.mark.timeout(30)


class StoppedAtTheLastMoment:
    """Gets its stop after its result is made, with no await between the two."""

    runner: ConsumerRunner

    async def __call__(self, task: QueueTask, run: TaskRun) -> TaskResult:
        await asyncio.sleep(0.01)
        self.runner.request_stop(PROMPT, task.task_id)
        return ImagePromptResult(prompt="done")


class SlowToCleanUp:
    """On a stop, takes its time to clean up; `cleaning` is set once the stop arrived."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cleaning = asyncio.Event()

    async def __call__(self, task: QueueTask, run: TaskRun) -> TaskResult:
        self.started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cleaning.set()
            await asyncio.sleep(30)  # the shutdown's cancellation lands here
            raise
        return ImagePromptResult(prompt="never")


def make_runner(queue: QueueService, handler: TaskHandler, *, burst: bool) -> ConsumerRunner:
    options = RunnerOptions(limits={PROMPT: 2}, burst=burst, grace_seconds=0.2)
    return ConsumerRunner(queue.consumer("c1"), {PROMPT: handler}, options)


async def test_a_stop_after_the_result_is_made_keeps_the_result(queue: QueueService) -> None:
    task_id = await queue.enqueue_task(PROMPT, 1, PAYLOAD)
    handler = StoppedAtTheLastMoment()
    handler.runner = make_runner(queue, handler, burst=True)
    await handler.runner.run()
    task = await queue.get_task(task_id, PROMPT)
    assert task is not None and task.status is TaskStatus.COMPLETED
    assert task.result == {"prompt": "done"}


async def test_a_shutdown_during_a_stopped_handler_s_cleanup_hands_the_task_back(
    queue: QueueService,
) -> None:
    task_id = await queue.enqueue_task(PROMPT, 1, PAYLOAD)
    handler = SlowToCleanUp()
    runner = make_runner(queue, handler, burst=False)
    job = asyncio.create_task(runner.run())
    await asyncio.wait_for(handler.started.wait(), 10)
    runner.request_stop(PROMPT, task_id)
    await asyncio.wait_for(handler.cleaning.wait(), 5)
    runner.stop()  # grace 0.2 s: the cleanup is cancelled by the shutdown
    await asyncio.wait_for(job, 10)
    task = await queue.get_task(task_id, PROMPT)
    # Not ended as stopped: handed back, it waits for a consumer to run it again.
    assert task is not None and task.status is TaskStatus.PENDING
    again = await queue.consumer("c2").read(PROMPT, 1, 100)
    assert [e.task.task_id for e in again if isinstance(e, TaskEntry)] == [task_id]
