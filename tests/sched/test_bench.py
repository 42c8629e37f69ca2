"""A small run of the scheduling benchmark, so it cannot rot and measures what it says."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from tests.support.consumer_helpers import ROOT


@pytest.mark.timeout(180)
def test_scheduling_benchmark_runs_every_configuration_for_real() -> None:
    command = [sys.executable, "-m", "bench.scheduling", "--tasks", "300"]
    command += ["--rounds", "1", "--round-trips", "20", "--own-redis"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=170, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    results = orjson.loads(done.stdout)["results"]
    assert set(results) == {"baseline", "leases", "fairness", "both"}
    for row in results.values():
        assert row["throughput_tps"] > 0 and row["redis_commands_per_task"] > 0
        assert row["consumer_cpu_us_per_task"] > 0
        assert 0 < row["latency_p50_ms"] <= row["latency_p95_ms"]
    assert results["baseline"]["overhead_us_per_task"] == 0
    # Each configuration was in effect: leases were held, users were counted, and only there.
    peaks = {
        name: (r["peak_leases"] > 0, r["peak_users_running"] > 0) for name, r in results.items()
    }
    assert peaks == {
        "baseline": (False, False),
        "leases": (True, False),
        "fairness": (False, True),
        "both": (True, True),
    }
