"""The shipped Prometheus rules and Grafana dashboard name only metrics a worker serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import generate_latest

from core.yamlsource import load_yaml
from rules.service.metrics import EngineMetrics

MONITORING = Path(__file__).resolve().parent.parent / "examples" / "monitoring"
NAME = re.compile(r"\baisle_engine_[a-z_]+")


def served() -> set[str]:
    """Every series name a worker's /metrics has, with a store seen and rules announced."""
    m = EngineMetrics()
    for metric in (m.events_in, m.derived_out, m.deadletters, m.preempted, m.rule_errors,
                   m.lag_events, m.lag_seconds, m.snapshot_age, m.checkpoints):  # fmt: skip
        metric.labels("s1")
    m.late.labels("s1", "cam")
    m.rules.info({"version": "v1"})
    text = generate_latest(m.registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}


def test_the_alerting_rules_are_well_formed_and_name_served_metrics() -> None:
    doc = load_yaml(MONITORING / "aisle-engine.rules.yaml").data
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert len(rules) >= 8 and len({r["alert"] for r in rules}) == len(rules)
    have = served()
    for r in rules:
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r
        assert r["labels"]["severity"] in ("page", "ticket") and r["annotations"]["summary"]
        assert r["expr"].count("(") == r["expr"].count(")"), r["alert"]
        for name in NAME.findall(r["expr"]):
            assert name in have, f"{r['alert']}: {name} is no metric a worker serves"


def test_the_dashboard_is_grafana_json_whose_panels_name_served_metrics() -> None:
    dash = json.loads((MONITORING / "aisle-engine.grafana.json").read_text())
    have = served()
    assert dash["uid"] == "aisle-engine" and len(dash["panels"]) >= 10
    for panel in dash["panels"]:
        (target,) = panel["targets"]
        names = NAME.findall(target["expr"])
        assert names and all(n in have for n in names), (panel["title"], names)


def test_a_stores_counters_are_served_from_zero_once_a_worker_takes_it() -> None:
    """An alert on `increase(aisle_engine_preempted_events_total[1h])` had no series to
    read until the first one counted."""
    metrics = EngineMetrics()
    metrics.open("corner-01")
    served = generate_latest(metrics.registry).decode()
    for name in ("events_in", "derived_out", "deadletter_events", "preempted_events"):
        assert f'aisle_engine_{name}_total{{store="corner-01"}} 0.0' in served, name
