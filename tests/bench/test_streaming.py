"""A short run of the streaming benchmark, so it cannot rot: every figure present and sane."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_short_streaming_benchmark_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "bench.streaming", "--chats", "4"]
    command += ["--flood-seconds", "4", "--kill-replies", "2", "--words", "20", "--lone", "3"]
    command += ["--own-redis", "--json", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=230, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    report = orjson.loads(out.read_bytes())
    shown = report["first_text_ms"]
    assert (shown["lone"]["n"], shown["burst"]["n"], shown["chats_in_burst"]) == (3, 4, 4)
    for run in (shown["lone"], shown["burst"]):
        assert 0 < run["p50_ms"] <= run["p95_ms"] < 5000
        assert set(run["breakdown"]) == {
            "charging",
            "enqueue_and_pick_up",
            "to_model",
            "model_first_chunk",
            "live_stream_and_send",
        }
        assert sum(part["p50_ms"] for part in run["breakdown"].values()) > 0
    first, stop = report["first_text_overhead"], report["stop_to_provider_closed"]
    assert first["n"] == 4
    assert 0 < first["p50_ms"] <= first["p95_ms"] < 1000
    # A reply done before any draft showed, or before the stop came, cannot be stopped.
    assert stop["n"] >= 1
    assert stop["n"] + stop["done_before_a_draft"] + stop["done_before_the_stop"] == 4
    assert 0 < stop["p50_ms"] <= stop["p95_ms"] < 1000
    flood, kill = report["flood"], report["sigkill"]
    assert flood["replies"] >= 4
    assert flood["finals_not_exactly_once"] == 0
    cpu = flood["cpu_us_per_reply"]
    assert set(cpu) == {"bot", "consumer", "redis", "postgres", "total"}
    assert min(cpu.values()) > 0
    assert report["too_many_requests_total"] == 0
    assert kill["delivered_once"] == kill["replies"] == 2
    assert kill["sent_twice"] == 0
    assert kill["one_draft_id_per_chat"] is True
