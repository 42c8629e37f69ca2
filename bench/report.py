"""Figures of `bench.pipeline`: medians with min-max over rounds, and the printed table."""

from __future__ import annotations

import statistics
from typing import Any

SYSTEMS = ("pipeline", "seed_design", "floor")


def _flatten(result: dict[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in result.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = float(value)
    return flat


def summarize(rounds: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Median per figure (structure kept), plus min-max per flattened figure."""
    flats = [_flatten(r) for r in rounds]
    ranges = {k: [min(f[k] for f in flats), max(f[k] for f in flats)] for k in flats[0]}

    def median_of(template: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in template.items():
            if isinstance(value, dict):
                out[key] = median_of(value, f"{prefix}{key}.")
            elif isinstance(value, bool):
                out[key] = all(f[f"{prefix}{key}"] for f in flats)
            else:
                out[key] = round(statistics.median(f[f"{prefix}{key}"] for f in flats), 3)
        return out

    return median_of(rounds[0]), ranges


ROWS = [
    ("throughput_1proc_tps", "throughput, 1 consumer (tasks/s, batch enqueue)"),
    ("throughput_1proc_single_call_tps", "throughput, 1 consumer (tasks/s, one call per task)"),
    ("throughput_2proc_tps", "throughput, 2 consumers (tasks/s, batch enqueue)"),
    ("enqueue_tps", "enqueue alone (tasks/s)"),
    ("latency_ms.p50", "round trip p50 (ms)"),
    ("latency_ms.p95", "round trip p95 (ms)"),
    ("latency_ms.p99", "round trip p99 (ms)"),
    ("waiters_1000.ok", "concurrent waiters all correct"),
    ("waiters_1000.redis_connections", "Redis connections for waiting"),
    ("consumer_rss_mb", "consumer peak RSS (MB)"),
    ("consumer_idle_rss_mb", "consumer idle RSS (MB)"),
    ("redis_bytes_per_waiting_task", "Redis bytes per waiting task (entry + record)"),
    ("redis_bytes_per_finished_record", "Redis bytes per finished record"),
    ("redis_memory_leftover_bytes", "Redis memory left (bytes, besides records)"),
    ("leftover_keys", "keys left besides records (empty streams/lists)"),
    ("records_all_have_ttl", "every result record has a TTL"),
]


def table(report: dict[str, Any], ranges: dict[str, dict[str, list[float]]]) -> str:
    lines = [f"{'figure':52} {'pipeline':>22} {'seed design':>22} {'floor':>22}"]
    for key, label in ROWS:
        cells = []
        for system in SYSTEMS:
            flat = _flatten(report[system])
            if key not in flat:
                cells.append(f"{'-':>22}")
                continue
            low, high = ranges[system].get(key, [flat[key], flat[key]])
            span = "" if low == high else f" ({low:g}-{high:g})"
            cells.append(f"{flat[key]:g}{span}".rjust(22))
        lines.append(f"{label:52} {' '.join(cells)}")
    return "\n".join(lines)
