"""The short form of `python -m bench.chaos`: kills of consumers and Redis lose nothing."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson
import pytest

from tests.support.consumer_helpers import ROOT


@pytest.mark.timeout(220)
async def test_chaos_short_run_keeps_every_guarantee() -> None:
    command = [sys.executable, "-m", "bench.chaos", "--tasks", "1500", "--kill-every", "1"]
    command += ["--redis-kills", "1", "--seed", "7", "--timeout", "150"]
    result = await asyncio.to_thread(
        subprocess.run, command, check=False, cwd=ROOT, capture_output=True, timeout=200
    )
    report = orjson.loads(result.stdout)
    print(report)
    assert result.returncode == 0, (report, result.stderr.decode(errors="replace")[-500:])
    assert report["lost"] == 0 and report["announced_twice"] == 0
    assert report["failed_refunded_exactly_once"] == report["failed_paid_tasks"] == 15
    assert report["sigkills"] >= 1 and report["sigkills"] + report["sigterms"] >= 3
    assert report["redis_kills"] == 1
    assert report["recovery_s"]["count"] > 0 and report["recovery_s"]["p99"] <= 8
    assert report["left_in_scheduling"] == {"running": 0, "parked": 0, "leases": 0}
