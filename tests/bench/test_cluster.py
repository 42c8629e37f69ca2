"""A small run of the cluster benchmark, so it cannot rot: every figure present and sane."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_quick_cluster_benchmark_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "bench.cluster", "--quick", "--json", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=230, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    report = orjson.loads(out.read_bytes())
    assert orjson.loads(done.stdout) == report
    assert report["throughput"]["single_tps"] > 0 and report["throughput"]["cluster_tps"] > 0
    for wait in ("wait_replicas_0", "wait_replicas_1"):
        latency = report["enqueue_latency_ms"][wait]
        assert 0 < latency["p50"] <= latency["p99"]
    [drill] = report["failover"]["cluster"]
    assert (drill["wait_replicas"], drill["replica_lag_seconds"]) == (1, 0.3)
    assert drill["acked"] > 0 and drill["lost"] == 0 and drill["failover_seconds"] is not None
