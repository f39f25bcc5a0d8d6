"""manifests/monitoring holds together: it parses, the ServiceMonitor finds the metrics Service, every name is defined.

The check against a running operator's /metrics is tests/integration/test_metrics_names.py;
here the names are checked against the operator's metric definitions in this process.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest

import qorch.controller.metrics  # noqa: F401 - registers the operator's metrics
from support.monitoring import (
    DASHBOARD,
    MONITORING,
    ROOT,
    RULES,
    SERVICE_MONITOR,
    dashboard,
    dashboard_expressions,
    metric_names,
    rule_expressions,
    unknown,
)

SERVICE = ROOT / "manifests" / "base" / "service.yaml"
JOB = re.compile(r'\bjob="([^"]+)"')


def load(path: Any) -> Any:
    """One YAML document."""
    return yaml.safe_load(path.read_text())


def every_expression() -> dict[str, str]:
    """The alerts' and the dashboard's expressions, by where they are."""
    return {
        **{f"{RULES.name}: {k}": v for k, v in rule_expressions().items()},
        **{f"{DASHBOARD.name}: {k}": v for k, v in dashboard_expressions().items()},
    }


def test_the_kustomization_names_every_file() -> None:
    """Resources and the dashboard's configMapGenerator files exist, and every file of the folder is used."""
    kustomization = load(MONITORING / "kustomization.yaml")
    named = set(kustomization["resources"])
    named |= {f for generator in kustomization["configMapGenerator"] for f in generator["files"]}
    present = {p.name for p in MONITORING.iterdir()} - {"kustomization.yaml"}
    assert named == present
    [generator] = kustomization["configMapGenerator"]
    assert generator["options"]["labels"]["grafana_dashboard"] == "1"


def test_the_service_monitor_selects_the_metrics_service() -> None:
    """Its selector matches the Service's labels, in the Service's namespace, on the Service's port `metrics`."""
    monitor, service = load(SERVICE_MONITOR), load(SERVICE)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in ports
    assert endpoint["path"] == "/metrics"
    assert monitor["spec"]["jobLabel"] in labels


def test_every_query_selects_the_service_monitors_job() -> None:
    """The job label is the ServiceMonitor's jobLabel value on the Service; every query filters on it."""
    monitor, service = load(SERVICE_MONITOR), load(SERVICE)
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    wrong = {where: expr for where, expr in every_expression().items() if set(JOB.findall(expr)) != {job}}
    assert not wrong, f'not every selector says job="{job}": {wrong}'


def test_the_rule_is_well_formed() -> None:
    """A PrometheusRule whose alerts each have an expression, a duration, a severity and a summary."""
    rule = load(RULES)
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert len({a["alert"] for a in alerts}) == len(alerts)
    for alert in alerts:
        assert alert["expr"].strip(), alert["alert"]
        assert alert["for"], alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, alert["alert"]
        assert alert["annotations"]["summary"], alert["alert"]
    assert {"QorchNoLeader", "QorchQueueWaitHigh"} <= {a["alert"] for a in alerts}


def test_the_dashboard_is_well_formed() -> None:
    """Grafana JSON with a uid, a Prometheus datasource variable, unique panel ids, a query in every panel."""
    board = dashboard()
    assert board["uid"] == "qorch-operator"
    [variable] = board["templating"]["list"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    titles = " ".join(p["title"] for p in panels).lower()
    for subject in ("queue", "phase", "assignments", "latency", "entropy"):
        assert subject in titles


@pytest.mark.parametrize("where", sorted(every_expression()))
def test_every_name_is_a_metric_the_operator_defines(where: str) -> None:
    """Each qorch_* name is a series of a metric in operator/qorch/controller/metrics.py (histograms by suffix)."""
    expr = every_expression()[where]
    assert metric_names(expr) or "up{" in expr, f"{where} uses no qorch metric"
    page = generate_latest(REGISTRY).decode()
    assert not unknown({where: expr}, page)


def test_the_name_check_refuses_what_is_not_exported() -> None:
    """The check itself: an invented name, a histogram's bare name or a wrong suffix are all reported."""
    page = generate_latest(REGISTRY).decode()
    used = {
        "invented": 'increase(qorch_dead_letters_total{job="qorch-operator"}[1h])',
        "bare histogram": "qorch_scheduling_cycle_seconds",
        "counter without _total": "rate(qorch_assignments[5m])",
        "fine": "rate(qorch_scheduling_cycle_seconds_bucket[5m]) + qorch_assignments_total + qorch_tasks",
    }
    assert unknown(used, page) == {
        "invented": {"qorch_dead_letters_total"},
        "bare histogram": {"qorch_scheduling_cycle_seconds"},
        "counter without _total": {"qorch_assignments"},
    }
