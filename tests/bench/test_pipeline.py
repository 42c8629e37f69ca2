"""A small run of the benchmark, so it cannot rot: both systems, every figure present."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(180)
def test_small_benchmark_runs_and_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "bench", "--tasks", "200", "--round-trips", "20"]
    command += ["--waiters", "100", "--rounds", "1", "--own-redis", "--json", str(out)]
    command += ["--memory-tasks", "2000", "--scale-counts", "1,2"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=170, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    report = orjson.loads(out.read_bytes())
    assert (report["rounds"], report["n"]) == (1, 200)
    pipeline, seed = report["pipeline"], report["seed_design"]
    for system in (pipeline, seed):
        assert system["throughput_1proc_tps"] > 0 and system["throughput_2proc_tps"] > 0
        assert system["enqueue_tps"] > 0 and system["consumer_rss_mb"] > 0
        assert system["waiters_1000"]["ok"] is True
        assert 0 < system["latency_ms"]["p50"] <= system["latency_ms"]["p99"]
    assert pipeline["throughput_1proc_single_call_tps"] > 0
    assert pipeline["waiters_1000"]["redis_connections"] <= 3
    # Polling every 0.2 s cannot beat pub/sub: the seed design waits at least one interval.
    assert seed["latency_ms"]["p50"] >= 150 > pipeline["latency_ms"]["p50"]
    floor = report["floor"]
    assert floor["throughput_1proc_tps"] > 0 and floor["latency_ms"]["p50"] > 0
    assert 0 < pipeline["consumer_idle_rss_mb"] <= pipeline["consumer_rss_mb"]
    assert (
        0 < pipeline["redis_bytes_per_waiting_task"] < pipeline["redis_bytes_per_finished_record"]
    )
    assert "vs floor" in done.stdout.decode()
    points = {(p["topology"], p["consumers"]): p for p in report["scale"]}
    assert set(points) == {("single", 1), ("single", 2), ("cluster-3", 1), ("cluster-3", 2)}
    for point in points.values():
        assert point["tasks_per_s"] > 0
        parts = point["cpu_us_per_task_parts"]
        assert min(parts.values()) > 0
        assert abs(point["cpu_us_per_task"] - sum(parts.values())) < 1


@pytest.mark.timeout(120)
def test_cpu_benchmark_reports_cpu_per_task_of_each_process() -> None:
    command = [sys.executable, "-m", "bench.cpu", "--own-redis", "--tasks", "300"]
    command += ["--rounds", "1"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=110, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    report = orjson.loads(done.stdout)
    assert (report["n"], report["rounds"], report["mode"]) == (300, 1, "batch")
    for system in ("pipeline", "floor"):
        figures = report[system]
        for key in ("producer_us", "consumer_us", "redis_us", "tps"):
            median, spread = figures[key]
            assert median > 0 and spread == f"{median}-{median}"
        parts = figures["producer_us"][0] + figures["consumer_us"][0] + figures["redis_us"][0]
        assert abs(figures["total_us"][0] - parts) < 1
    assert set(report["pipeline_vs_floor"]) == {
        "producer_us",
        "consumer_us",
        "redis_us",
        "total_us",
        "tps",
    }
