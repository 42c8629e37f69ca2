"""`python -m consumers --name NAME [--types ...]`: one named consumer process."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import socket
import sys
from collections.abc import Sequence

import structlog
from redis.exceptions import RedisError

from consumers.gates import ProviderGate, attach_gates, build_gates
from consumers.metrics import Metrics, serve_metrics, watch_streams
from consumers.preflight import check_providers
from consumers.providers.base import RetryPolicy
from consumers.providers.factory import (
    build_image_client,
    build_llm_client,
    build_stt_client,
    build_tts_client,
    retry_policy,
)
from consumers.registry import Providers, build_handlers, provider_kinds
from consumers.runner import ConsumerRunner
from shared.config import Settings, load_settings
from shared.errors import ConfigError, UnknownTaskTypeError
from shared.logging import configure_logging
from shared.queue import QueueService
from shared.queue.audio import AudioStore
from shared.tasks import TASK_SPECS, ProviderKind, TaskType, parse_task_type

log = structlog.get_logger("consumers")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m consumers",
        description="Run one named consumer of the task streams. Several consumers, on one or "
        "many machines, share the work through the Redis consumer groups.",
    )
    parser.add_argument(
        "--name",
        default=f"{socket.gethostname()}-{os.getpid()}",
        help="consumer name, unique per running process (default: hostname-pid)",
    )
    parser.add_argument(
        "--types",
        default=",".join(t.value for t in TaskType),
        help=f"comma-separated task types to serve, of {', '.join(TaskType)} (default: all)",
    )
    parser.add_argument(
        "--concurrency",
        action="append",
        default=[],
        metavar="TYPE=N",
        help="parallel tasks of one type, e.g. generate_reply=4 (repeatable; default: the "
        "type's MAX_CONCURRENT_* setting)",
    )
    parser.add_argument(
        "--image-concurrency",
        type=int,
        help="parallel image generations (default MAX_CONCURRENT_IMAGE_GENERATIONS)",
    )
    parser.add_argument(
        "--reply-concurrency",
        type=int,
        help="parallel replies (default MAX_CONCURRENT_REPLY_GENERATIONS)",
    )
    parser.add_argument(
        "--prompt-concurrency",
        type=int,
        help="parallel image prompts (default MAX_CONCURRENT_PROMPT_GENERATIONS)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        help="seconds to finish in-flight tasks on SIGTERM (default SHUTDOWN_GRACE_SECONDS)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics on this port (default METRICS_PORT, off)",
    )
    parser.add_argument(
        "--burst", action="store_true", help="exit once nothing is waiting or running"
    )
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default LOG_LEVEL)")
    return parser.parse_args(argv)


def served_types(raw: str) -> list[TaskType]:
    return [parse_task_type(part.strip()) for part in raw.split(",") if part.strip()]


def concurrency(args: argparse.Namespace, settings: Settings) -> dict[TaskType, int]:
    """Each type's limit: --concurrency TYPE=N, the older per-type flags, else its setting."""
    limits = {t: spec.concurrency(settings) for t, spec in TASK_SPECS.items()}
    older = {
        TaskType.GENERATE_IMAGE: args.image_concurrency,
        TaskType.GENERATE_REPLY: args.reply_concurrency,
        TaskType.GENERATE_IMAGE_PROMPT: args.prompt_concurrency,
    }
    limits.update({t: n for t, n in older.items() if n is not None})
    for pair in args.concurrency:
        name, _, value = pair.partition("=")
        if not value.isascii() or not value.isdigit():
            raise ConfigError(f"--concurrency {pair!r}: expected TYPE=N")
        limits[parse_task_type(name.strip())] = int(value)
    if any(limit < 1 for limit in limits.values()):
        raise ConfigError("concurrency limits must be at least 1")
    return limits


def _policy(settings: Settings, gate: ProviderGate | None) -> RetryPolicy:
    policy = retry_policy(settings)
    if gate is None:
        return policy
    # A 429 or 503 with Retry-After seen by this consumer pauses every consumer.
    return dataclasses.replace(policy, throttled=gate.throttled)


def build_clients(
    settings: Settings,
    types: list[TaskType],
    gates: dict[TaskType, ProviderGate] | None = None,
    name: str = "consumer",
) -> Providers:
    """Build only the providers the served types need; a misconfigured one stops the start."""
    gates = gates or {}
    kinds = provider_kinds(types)

    def policy(kind: ProviderKind) -> RetryPolicy:
        # Types calling one provider share its gate: the first one's is the kind's.
        gate = next(
            (gates[t] for t in types if t in gates and TASK_SPECS[t].provider is kind), None
        )
        return _policy(settings, gate)

    return Providers(
        llm=build_llm_client(settings, retry=policy(ProviderKind.LLM))
        if ProviderKind.LLM in kinds
        else None,
        images=build_image_client(settings, retry=policy(ProviderKind.IMAGE))
        if ProviderKind.IMAGE in kinds
        else None,
        stt=build_stt_client(settings, retry=policy(ProviderKind.STT))
        if ProviderKind.STT in kinds
        else None,
        tts=build_tts_client(settings, retry=policy(ProviderKind.TTS))
        if ProviderKind.TTS in kinds
        else None,
        audio=AudioStore.connect(settings, name) if ProviderKind.STT in kinds else None,
    )


async def connect_queue(queue: QueueService) -> None:
    """Wait for Redis at start instead of crashing, logging each failed try."""
    delay = 0.5
    while True:
        try:
            await queue.connect()
            return
        except (RedisError, OSError) as exc:
            log.warning("redis_unavailable", error=str(exc), retry_in=delay)
        await queue.close()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


async def run(args: argparse.Namespace, settings: Settings) -> None:
    types = served_types(args.types)
    limits = concurrency(args, settings)
    port = args.metrics_port if args.metrics_port is not None else settings.metrics_port
    metrics = serve_metrics(port, settings.metrics_host) if port else Metrics.disabled()
    gates = build_gates(settings, types, metrics)
    clients = build_clients(settings, types, gates, f"consumer:{args.name}")
    queue = QueueService(settings, client_name=f"consumer:{args.name}")
    try:
        handlers = build_handlers(types, clients)
        await check_providers(settings, types)
        await connect_queue(queue)
        attach_gates(gates, queue, args.name)
        options = ConsumerRunner.options_from(settings, {t: limits[t] for t in types})
        options.burst = args.burst
        if args.grace is not None:
            options.grace_seconds = args.grace
        runner = ConsumerRunner(queue.consumer(args.name), handlers, options, metrics, gates)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.stop)
        providers: dict[str, list[TaskType]] = {}
        for task_type, gate in gates.items():
            providers.setdefault(gate.provider, []).append(task_type)
        watcher = asyncio.create_task(watch_streams(metrics, queue, types, providers=providers))
        await runner.run()
        watcher.cancel()
    finally:
        for client in (clients.llm, clients.images, clients.stt, clients.tts, clients.audio):
            if client is not None:
                await client.aclose()
        await queue.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(args.log_level or settings.log_level, settings.log_json)
        asyncio.run(run(args, settings))
    except (ConfigError, UnknownTaskTypeError) as exc:
        print(f"consumer cannot start: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
