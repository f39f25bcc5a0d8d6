"""OpenTelemetry tracing against a real run (issue 12): cycles, and each task's life as one trace.

The operator (`controller.runner.operate`) and an agent runtime (`agent.runtime.run_agent`)
run in this process against the real control plane, so the SDK's in-memory exporter sees
every span both make: the same code paths as `qorch operator run` and `qorch agent run`,
with the exporter the test passes instead of OTLP.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from qorch import tracing
from qorch.agent import Handlers, RuntimeSettings, TaskContext
from qorch.agent.runtime import run_agent
from qorch.controller.kube import KubeApi, load_config
from qorch.controller.runner import OperatorSettings, operate
from qorch.devcluster import ControlPlane
from qorch.testing import Kubectl
from support.api import Api
from support.manifests import policy, task
from support.pools import wait_for

pytestmark = pytest.mark.e2e


def test_each_task_life_is_one_trace_found_by_its_uid(  # noqa: PLR0915 - one run, then what it traced
    qorch_control_plane: ControlPlane, qorch_crds: list[str], kubectl: Kubectl
) -> None:
    """queued → assigned → claimed (Running) → handler → finished, all in the trace whose id is the uid.

    One task fails its first attempt, so its trace also holds the Retrying step and two handler runs.
    """
    del qorch_crds
    ns = kubectl.namespace
    assert ns is not None
    admin = kubectl.in_namespace(None)
    if admin.run("get", "namespace", "qorch-system", check=False).returncode != 0:
        admin("create", "namespace", "qorch-system")
    kubectl.apply(policy(defaultRetry={"maxAttempts": 3, "backoffSeconds": 0, "maxBackoffSeconds": 0}))
    kubectl("create", "-f", "-", stdin=yaml.safe_dump_all([task("t0"), task("t1"), task("flaky")]))
    api = Api(qorch_control_plane.admin_kubeconfig)
    handlers = Handlers()
    failed: list[int] = []

    @handlers.on("code")
    async def work(context: TaskContext) -> str:
        if context.name == "flaky" and not failed:
            failed.append(context.attempt)
            raise RuntimeError("the first attempt fails")
        return "ok"

    async def main() -> None:
        stop = asyncio.Event()
        settings = OperatorSettings(
            kubeconfig=str(qorch_control_plane.admin_kubeconfig), namespaces=(ns,), metrics_port=0, health_port=0,
            identity="tracer-op", lease_name=f"trace-{ns}"[:63], own_process=False,
        )  # fmt: skip
        await load_config(str(qorch_control_plane.admin_kubeconfig))
        agent_api = KubeApi(client.ApiClient())
        runtime = RuntimeSettings(name="tracer", namespace=ns, capabilities=("code",), capacity=4, renew_seconds=1)
        running = [
            asyncio.create_task(operate(settings, stop)),
            asyncio.create_task(run_agent(agent_api, runtime, handlers, stop)),
        ]
        try:
            await asyncio.to_thread(wait_for, lambda: api.count(ns, "Succeeded") == 3, 60, what="the tasks to succeed")
        finally:
            stop.set()
            await asyncio.wait(running, timeout=30)
            await agent_api.close()

    exporter = InMemorySpanExporter()
    tracing.configure("qorch-test", exporter)
    try:
        asyncio.run(main())
    finally:
        tracing.shutdown()
    uids = {t["metadata"]["name"]: t["metadata"]["uid"] for t in api.tasks(ns)}
    spans = exporter.get_finished_spans()
    by_trace: dict[int, list[Any]] = defaultdict(list)
    for span in spans:
        by_trace[span.context.trace_id].append(span)
    assert any(s.name == "qorch.cycle" and "qorch.writes_decided" in s.attributes for s in spans)
    for name, uid in uids.items():
        mine = by_trace[tracing.trace_id(uid)]
        names = [s.name for s in sorted(mine, key=lambda s: s.start_time)]
        root = next(s for s in mine if s.name == "qorch.task")
        assert root.parent is None
        children = [s for s in mine if s is not root]
        assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in children), names
        assert all(root.start_time <= s.start_time and s.end_time <= root.end_time for s in children), names
        # Running is written only when the operator sees the claim before the finish: not asserted.
        life = ["qorch.task.Assigned", "qorch.task.claimed", "qorch.task.handler"]
        assert [n for n in names if n in life][:3] == life, names
        assert "qorch.task.Succeeded" in names, names
        assert max(s.end_time for s in children if s.name == "qorch.task.Succeeded") == max(
            s.end_time for s in children
        ), names
        assert root.attributes["qorch.task"] == f"{ns}/{name}"
        if name == "flaky":
            assert names.count("qorch.task.handler") == 2, names
            retried = [s for s in mine if s.name in ("qorch.task.Queued", "qorch.task.Retrying")]
            assert any(s.attributes["qorch.reason"] == "AttemptFailed" for s in retried), names
            handler_runs = [s for s in mine if s.name == "qorch.task.handler"]
            assert any(not s.status.is_ok for s in handler_runs), "the failed run's span records its error"
