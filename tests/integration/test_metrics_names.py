"""Every metric name the alerts and the dashboard use is one a running operator exports.

A real `qorch operator run` against the real control plane schedules a few Tasks, which a
simulated agent pool runs to the end, so that the operator's series are populated; then
its /metrics page is scraped. The PromQL of manifests/monitoring is read crudely: each
`qorch_*` identifier must be a series of the page (a histogram's by _bucket, _sum or
_count), and each label a `by (...)` groups on must be a label of the series it groups.
Prometheus's own parser and rule-file checks (hack/promql, built from the Go module proxy)
then read the same PromQL properly.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from qorch.devcluster import ControlPlane
from qorch.testing import Kubectl
from support.api import Api
from support.manifests import agents, policy, stream, task
from support.monitoring import ROOT, RULES, dashboard_expressions, metric_names, rule_expressions, unknown
from support.operators import OperatorFleet, OperatorProcess
from support.pools import PoolFleet, wait_for

pytestmark = [pytest.mark.integration]

PROMQL_BUILD = ROOT / "hack" / "promql" / "build.sh"
# Grafana's built-in variables the dashboard uses, as Grafana would substitute them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}

FEASIBLE = 6
_SAMPLE = re.compile(r"^(qorch_[a-z0-9_]+)(?:\{([^}]*)\})? \S+$", re.MULTILINE)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="')
_BY = re.compile(r"\bby\s*\(([^)]*)\)")


def every_expression() -> dict[str, str]:
    """The alerts' and the dashboard's expressions, by where they are."""
    return {
        **{f"prometheusrule {k}": v for k, v in rule_expressions().items()},
        **{f"dashboard {k}": v for k, v in dashboard_expressions().items()},
    }


def labels_by_series(page: str) -> dict[str, set[str]]:
    """The label names each qorch_* series carries on the page."""
    found: dict[str, set[str]] = {}
    for name, labels in _SAMPLE.findall(page):
        found.setdefault(name, set()).update(_LABEL.findall(labels or ""))
    return found


@pytest.fixture
def scraped(
    qorch_control_plane: ControlPlane, qorch_crds: list[str], kubectl: Kubectl, tmp_path: Path
) -> Iterator[tuple[OperatorProcess, str]]:
    """An operator that scheduled and saw run a few Tasks (one it cannot place), and its /metrics page then."""
    del qorch_crds
    admin = kubectl.in_namespace(None)
    if admin.run("get", "namespace", "qorch-system", check=False).returncode != 0:
        admin("create", "namespace", "qorch-system")
    namespace = kubectl.namespace
    assert namespace is not None
    operators = OperatorFleet(qorch_control_plane.admin_kubeconfig, tmp_path, namespace)
    pools = PoolFleet(qorch_control_plane.admin_kubeconfig, tmp_path, namespace)
    api = Api(qorch_control_plane.admin_kubeconfig)
    try:
        kubectl.apply(policy())
        kubectl.apply(stream(agents("m", 2, 2)))
        pools.start("m", selector="pool=m", work="0.05,0.2")
        # A Lease of its own: other tests' operators in this session hold qorch-operator.
        operator = operators.start("metrics", lease_name=f"qorch-metrics-{namespace}"[:63])
        work = [task(f"t{i}") for i in range(FEASIBLE)] + [task("nobody", requires=("quantum-physics",))]
        kubectl("create", "-f", "-", stdin=stream(work))
        wait_for(
            lambda: api.count(namespace, "Succeeded") == FEASIBLE and api.phases(namespace)["nobody"],
            120,
            what=f"{FEASIBLE} tasks to succeed and the infeasible one to get a phase\n{operator.tail()}",
        )
        wait_for(lambda: operator.metric("qorch_leader") == 1, 30, what="qorch_leader 1 on the page")
        yield operator, operator.metrics_text()
    finally:
        pools.stop_all()
        operators.stop_all()


def test_the_alerts_and_the_dashboard_use_only_exported_names(scraped: tuple[OperatorProcess, str]) -> None:
    """No qorch_* name of manifests/monitoring is missing from a running operator's /metrics."""
    _, page = scraped
    used = every_expression()
    assert sum(len(metric_names(expr)) for expr in used.values()) > 20
    missing = unknown(used, page)
    assert not missing, "names the operator does not export:\n" + "\n".join(
        f"  {where}: {sorted(names)}" for where, names in sorted(missing.items())
    )


def test_the_workload_populated_what_the_alerts_watch(scraped: tuple[OperatorProcess, str]) -> None:
    """The series the alerts and main panels read have samples, with the labels they are read by."""
    operator, page = scraped
    assert operator.metric("qorch_leader") == 1
    assert operator.metric("qorch_assignments_total") >= FEASIBLE
    assert operator.metric("qorch_task_create_to_assigned_seconds_count") >= FEASIBLE
    assert operator.metric("qorch_scheduling_cycle_seconds_count") > 0
    assert operator.metric("qorch_status_writes_total") > 0
    assert 'qorch_tasks{phase="Succeeded"} 6.0' in page
    for name in ("entropy", "coherence", "fidelity"):
        assert f'qorch_scheduler_observable{{name="{name}"}}' in page
    for state in ("active", "parked"):
        assert f'qorch_scheduling_queue{{state="{state}"}}' in page


def test_every_grouping_label_is_on_its_series(scraped: tuple[OperatorProcess, str]) -> None:
    """`sum by (phase) (qorch_tasks)` and the like group on labels the series really have (le for buckets)."""
    _, page = scraped
    labels = labels_by_series(page)
    wrong, compared = {}, 0
    for where, expr in every_expression().items():
        grouped = {label.strip() for clause in _BY.findall(expr) for label in clause.split(",") if label.strip()}
        carried = set().union(*(labels.get(name, set()) for name in metric_names(expr)))
        if not all(name in labels for name in metric_names(expr)):
            continue  # a family with no sample yet (e.g. no agent Lease was read back): nothing to compare
        compared += bool(grouped)
        if grouped - carried:
            wrong[where] = sorted(grouped - carried)
    assert not wrong, f"grouping on labels the series lack: {wrong}"
    assert compared >= 15, f"only {compared} groupings could be checked: the workload populated too little"


@pytest.fixture(scope="module")
def promql_check() -> Path:
    """hack/promql's checker: Prometheus's parser and rule-file validation (built once, then cached)."""
    done = subprocess.run([PROMQL_BUILD], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"{PROMQL_BUILD} failed (`make promql` builds it with Go):\n{done.stderr}", pytrace=False)
    return Path(done.stdout.strip())


def test_prometheus_accepts_the_rules_and_every_query(promql_check: Path) -> None:
    """Prometheus's own checks pass: the rule file's (fields, durations, PromQL, templates) and every query's.

    Dashboard queries are parsed once Grafana's variables are substituted.
    """
    rules = yaml.safe_dump({"groups": yaml.safe_load(RULES.read_text())["spec"]["groups"]})
    queries = {}
    for where, expr in dashboard_expressions().items():
        query = expr
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        assert "$" not in query, f"{where} uses a variable this test does not know: {query}"
        queries[where] = query
    done = subprocess.run(
        [promql_check], input=json.dumps({"rules": rules, "exprs": queries}), capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == {}
    broken = {"rules": rules.replace("for: 2m", "for: 2 minutes", 1), "exprs": {"q": "sum(rate(qorch_tasks[5m])"}}
    done = subprocess.run([promql_check], input=json.dumps(broken), capture_output=True, text=True, check=True)
    assert set(json.loads(done.stdout)) == {"rules", "q"}, "the checker let broken input through"
