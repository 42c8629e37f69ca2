"""deploy/: the alert rules are valid and fire as meant, and every metric the rules and the
Grafana dashboard name is one our consumers export."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
import yaml
from prometheus_client import CollectorRegistry

from consumers.metrics import Metrics, watch_streams
from shared.queue import QueueService
from shared.tasks import TaskType
from tests.support.consumer_helpers import ROOT
from tests.support.dashboard_helpers import REPLY, seed

DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "pipeline.json"
# Series Prometheus makes itself rather than scraping them from us.
BUILTIN = frozenset({"up"})
# Words of PromQL that look like metric names: aggregations, functions, keywords.
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"}
    | {"unless", "offset", "inf", "nan"}
)
_MODIFIER = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
EXPECTED_ALERTS = {
    "NoLiveConsumer",
    "ConsumerDown",
    "OldestWaitingTooOld",
    "DeadLettersGrowing",
    "ProviderPaused",
}


def exported_names() -> set[str]:
    """Every series name the consumers' registry can expose (counters gain `_total`)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "gauge": ("",),
    }
    registry = CollectorRegistry()
    Metrics(registry)
    return {
        family.name + suffix for family in registry.collect() for suffix in suffixes[family.type]
    }


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions and label names removed)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', "", expr)  # label values
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = _MODIFIER.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        word = match.group()
        if rest.startswith("(") or word.lower() in _KEYWORDS:
            continue  # a function or aggregation call, or a keyword
        names.add(word)
    return names


def rule_exprs() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_exprs() -> list[str]:
    board: dict[str, Any] = orjson.loads(DASHBOARD.read_bytes())
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def promtool() -> str | None:
    # scripts/setup.sh puts Debian's promtool into .venv/bin when apt can fetch it.
    return shutil.which("promtool") or next(
        (str(p) for p in [ROOT / ".venv" / "bin" / "promtool"] if p.exists()), None
    )


def test_metric_names_are_found_in_promql() -> None:
    expr = 'max by (task_type) (rate(a_total{x="b(c)"}[5m])) > 0 or absent(up{job="j"})'
    assert metric_names(expr) == {"a_total", "up"}
    quantile = "histogram_quantile(0.95, sum by (le) (rate(d_bucket[5m])))"
    assert metric_names(quantile) == {"d_bucket"}


def test_alerts_cover_what_operators_need() -> None:
    assert set(rule_exprs()) == EXPECTED_ALERTS


def test_every_task_type_is_watched_by_the_alerts() -> None:
    """A type without a consumer has no series at all: each needs its own `absent`, and a
    waiting-time threshold (a new type once had neither)."""
    exprs = rule_exprs()
    absent = set(
        re.findall(
            r'absent\(stream_consumers_alive\{task_type="([a-z_]+)"\}\)', exprs["NoLiveConsumer"]
        )
    )
    waiting = {
        t
        for group in re.findall(r'task_type=~?"([a-z_|]+)"', exprs["OldestWaitingTooOld"])
        for t in group.split("|")
    }
    every = {str(task_type) for task_type in TaskType}
    assert absent == every
    assert waiting == every


def test_every_metric_in_rules_and_dashboard_is_exported() -> None:
    exported = exported_names() | BUILTIN
    for name, expr in rule_exprs().items():
        assert metric_names(expr) <= exported, (name, metric_names(expr) - exported)
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    for expr in exprs:
        assert metric_names(expr), expr
        assert metric_names(expr) <= exported, (expr, metric_names(expr) - exported)


def test_grafana_dashboard_uses_the_provisioned_datasource() -> None:
    board: dict[str, Any] = orjson.loads(DASHBOARD.read_bytes())
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uid = provisioned["datasources"][0]["uid"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    assert {panel["datasource"]["uid"] for panel in board["panels"]} == {uid}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = promtool()
    if tool is None:
        pytest.skip("promtool is not installed (scripts/setup.sh fetches it through apt)")
    return subprocess.run(
        [tool, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_accepts_config_and_rules() -> None:
    done = _promtool("check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 5 rules found" in done.stdout


def test_alerts_fire_as_their_unit_tests_expect() -> None:
    done = _promtool("test", "rules", str(Path("deploy/prometheus/alerts_test.yml")))
    assert done.returncode == 0, done.stdout + done.stderr


async def test_stream_gauges_report_liveness_and_oldest_waiting(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    await seed(queue, redis_client)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    watcher = asyncio.create_task(watch_streams(metrics, queue, [REPLY], every=0.05))
    try:
        for _ in range(100):
            if registry.get_sample_value("stream_consumers_alive", {"task_type": REPLY.value}):
                break
            await asyncio.sleep(0.05)
    finally:
        watcher.cancel()
    labels = {"task_type": REPLY.value}
    # worker-alive beat just now, worker-gone ten minutes ago.
    assert registry.get_sample_value("stream_consumers_alive", labels) == 1
    assert registry.get_sample_value("stream_waiting", labels) == 2
    oldest = registry.get_sample_value("stream_oldest_waiting_seconds", labels)
    assert oldest is not None
    assert 0 <= oldest < 60
    metrics.set_provider_paused("venice", True)
    assert registry.get_sample_value("provider_paused", {"provider": "venice"}) == 1
