"""Enqueueing a job: idempotent by task id, so Redis errors are retried for a bounded time."""

from __future__ import annotations

import asyncio
import time
from enum import StrEnum

import structlog
from redis.exceptions import RedisError

from producer.jobs import Job
from shared.errors import InvalidPayloadError
from shared.queue import QueueService
from shared.redact import redact
from shared.tasks import Payload, TaskType, to_json

log = structlog.get_logger(__name__)

_FIRST_BACKOFF = 0.1
_MAX_BACKOFF = 1.0
# An attempt gets at least this long, even when the retry budget is almost spent.
_MIN_ATTEMPT_SECONDS = 0.5


class Submitted(StrEnum):
    QUEUED = "queued"
    # Redis stayed away: the task may exist (an attempt ran, its reply was lost) or not.
    UNKNOWN = "unknown"
    # Refused before reaching Redis (an invalid payload): nothing was queued.
    REFUSED = "refused"


async def enqueue_retrying(
    queue: QueueService,
    job: Job,
    user_id: int,
    task_type: TaskType,
    payload: Payload,
    *,
    retry_seconds: float,
) -> Submitted:
    """Enqueue `job`'s task, retrying Redis errors and hung attempts for `retry_seconds`.

    Enqueue is idempotent by task id, so repeating an attempt whose reply was lost adds
    nothing. UNKNOWN does not mean "not queued": the caller must not refund on it.
    """
    data = to_json(payload)
    deadline = time.monotonic() + retry_seconds
    backoff = _FIRST_BACKOFF
    attempt = 0
    while True:
        attempt += 1
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), _MIN_ATTEMPT_SECONDS)):
                await queue.enqueue_task(
                    task_type, user_id, data, task_id=job.task_id, charge_id=job.charge_id
                )
        except InvalidPayloadError as exc:
            log.error("enqueue_refused", task_id=job.task_id, error=str(exc))
            return Submitted.REFUSED
        except (RedisError, OSError) as exc:  # OSError covers a hung attempt's TimeoutError
            remaining = deadline - time.monotonic()
            error = redact(str(exc)) or type(exc).__name__
            if remaining <= 0:
                log.warning("enqueue_gave_up", task_id=job.task_id, attempt=attempt, error=error)
                return Submitted.UNKNOWN
            log.warning("enqueue_retry", task_id=job.task_id, attempt=attempt, error=error)
            await asyncio.sleep(min(backoff, remaining))
            backoff = min(backoff * 2, _MAX_BACKOFF)
        else:
            log.info("task_queued", task_id=job.task_id, task_type=task_type, attempt=attempt)
            return Submitted.QUEUED
