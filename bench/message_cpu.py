"""CPU per chat message in the streaming benchmark: the bot process, the consumer process,
Redis (INFO cpu) and the PostgreSQL backends serving the bot's database (pg_stat_activity,
then /proc), sampled around the flood phase, where every chat keeps asking."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from bench.fleet import process_cpu
from db.engine import create_engine
from shared.queue.connection import create_redis

Snapshot = dict[str, float]


async def _postgres_pids(database_url: str) -> list[int]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            return [int(row[0]) for row in rows]
    finally:
        await engine.dispose()


def _cpu(pids: list[int]) -> dict[str, float]:
    """CPU seconds so far per backend ("pg:<pid>"); one that closed meanwhile is left out
    (its time is lost: an undercount)."""
    found: dict[str, float] = {}
    for pid in pids:
        try:
            found[f"pg:{pid}"] = process_cpu(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


async def snapshot(rig: Any) -> Snapshot:
    """CPU seconds so far of each part (PostgreSQL only when the bot's database is one)."""
    redis = create_redis(rig.settings, "bench-message-cpu")
    try:
        info = await redis.info("cpu")
    finally:
        await redis.aclose()
    shot = {
        "bot": process_cpu(rig.bot.pid),
        "consumer": process_cpu(rig.consumer.pid),
        "redis": float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
    }
    if rig.settings.database_url.startswith("postgresql"):
        shot |= _cpu(await _postgres_pids(rig.settings.database_url))
    return shot


async def per_message(rig: Any, before: Snapshot, messages: int) -> dict[str, float]:
    """Microseconds of CPU per message of each part since `before`, and their sum."""
    after = await snapshot(rig)
    spent = {k: after[k] - before.get(k, 0.0) for k in after if not k.startswith("pg:")}
    backends = [after[k] - before.get(k, 0.0) for k in after if k.startswith("pg:")]
    if backends:  # a backend opened during the window counts from its start
        spent["postgres"] = sum(backends)
    parts = {k: round(v * 1e6 / max(1, messages), 1) for k, v in spent.items()}
    return parts | {"total": round(sum(parts.values()), 1)}
