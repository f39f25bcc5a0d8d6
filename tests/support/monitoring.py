"""manifests/monitoring read as a test needs it: the PromQL of the alerts and the dashboard, the metric names in it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parents[2]
MONITORING = ROOT / "manifests" / "monitoring"
RULES = MONITORING / "prometheusrule.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
SERVICE_MONITOR = MONITORING / "servicemonitor.yaml"

# What a crude PromQL reading takes for one of our metric names; the suffixes Prometheus adds
# to a histogram family's series.
_NAME = re.compile(r"\bqorch_[a-z0-9_]+")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})? \S+", re.MULTILINE)


def rule_expressions() -> dict[str, str]:
    """Every alerting or recording rule's expression, by the rule's name."""
    rule = yaml.safe_load(RULES.read_text())
    return {r.get("alert") or r["record"]: str(r["expr"]) for group in rule["spec"]["groups"] for r in group["rules"]}


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard."""
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_expressions() -> dict[str, str]:
    """Every query of every panel (rows included), by `panel title / refId`."""
    found = {}
    for panel in dashboard()["panels"]:
        for inner in [panel, *panel.get("panels", ())]:
            for target in inner.get("targets", ()):
                found[f"{inner['title']} / {target['refId']}"] = str(target["expr"])
    return found


def metric_names(expr: str) -> set[str]:
    """The qorch_* identifiers an expression uses (label values never start with qorch_ here)."""
    return set(_NAME.findall(expr))


def exported_names(page: str) -> set[str]:
    """The series names a /metrics page exports: every sample's, and those of every declared family.

    A family declared with no sample yet (a labelled metric whose labels never occurred) is
    exported all the same: its series appear with its first observation. A histogram's
    series are its name plus _bucket, _sum and _count; its bare name is no series at all.
    """
    names = set(_SAMPLE.findall(page))
    for family, kind in _TYPE_LINE.findall(page):
        if kind in {"histogram", "summary"}:
            names.update(family + suffix for suffix in _HISTOGRAM_SUFFIXES)
        else:
            names.add(family)
    return names


def unknown(used: dict[str, str], page: str) -> dict[str, set[str]]:
    """The names each expression uses that the page does not export, for the expressions that use any."""
    exported = exported_names(page)
    missing = {where: {name for name in metric_names(expr) if name not in exported} for where, expr in used.items()}
    return {where: names for where, names in missing.items() if names}
