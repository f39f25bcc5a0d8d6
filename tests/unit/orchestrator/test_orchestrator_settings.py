"""UnifiedQuantumOrchestrator refuses bad settings and calls with one line, before any request."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qorch.client import Client
from qorch.orchestrator import DEFAULT_POLICY, OrchestratorError, UnifiedQuantumOrchestrator
from support.fakeapi import FakeApi

ROOT = Path(__file__).parents[3]


@pytest.mark.parametrize("value", [0, -1, 1.5, "10", True, None])
def test_max_agents_must_be_a_positive_integer(value: object) -> None:
    """A clear error names the setting and what it got."""
    with pytest.raises(OrchestratorError, match=r"max_agents must be a positive integer, got") as caught:
        UnifiedQuantumOrchestrator(max_agents=value)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_bad_namespace_and_conflicting_settings() -> None:
    """Namespace must be a DNS label; embedded=True with a kubeconfig is a contradiction."""
    with pytest.raises(OrchestratorError, match="namespace 'Team_A' must be a DNS label"):
        UnifiedQuantumOrchestrator(namespace="Team_A")
    with pytest.raises(OrchestratorError, match="embedded=True brings up its own cluster"):
        UnifiedQuantumOrchestrator(embedded=True, kubeconfig="kubeconfig.yaml")
    with pytest.raises(OrchestratorError, match="lease_seconds must be an integer from 3 to 3600"):
        UnifiedQuantumOrchestrator(lease_seconds=1)
    with pytest.raises(OrchestratorError, match="handler must be a function"):
        UnifiedQuantumOrchestrator(handler=42)  # type: ignore[arg-type]


def test_calls_before_start_say_to_start() -> None:
    """register_agent and submit_task on an orchestrator not started: one line saying what to do."""
    orchestrator = UnifiedQuantumOrchestrator(max_agents=2)
    with pytest.raises(OrchestratorError, match=r"not started; await orchestrator.start\(\) first"):
        asyncio.run(orchestrator.register_agent("a-1", {"general"}))
    with pytest.raises(OrchestratorError, match="not started"):
        asyncio.run(orchestrator.submit_task("goal"))
    status = orchestrator.get_system_status()
    assert status["running"] is False
    assert status["quantum"]["global_coherence"] is None  # nothing published is nothing invented


def test_a_missing_kubeconfig_fails_start_and_stop_is_safe_after_it(tmp_path: Path) -> None:
    """start() with a kubeconfig that does not exist: one line; stop() after it, twice, is harmless."""
    orchestrator = UnifiedQuantumOrchestrator(kubeconfig=str(tmp_path / "nope.yaml"))

    async def scenario() -> None:
        with pytest.raises(OrchestratorError, match=r"kubeconfig .*nope.yaml does not exist"):
            await orchestrator.start()
        await orchestrator.stop()
        await orchestrator.stop()

    asyncio.run(scenario())
    assert orchestrator.client is None
    assert orchestrator.fleet is None


def test_the_embedded_default_policy_is_the_shipped_one() -> None:
    """The embedded cluster's SchedulingPolicy equals manifests/scheduling-policy/default.yaml."""
    shipped = yaml.safe_load((ROOT / "manifests" / "scheduling-policy" / "default.yaml").read_text())
    assert shipped["spec"] == DEFAULT_POLICY


def test_import_qorch_stays_light() -> None:
    """`import qorch` loads neither the orchestrator nor a Kubernetes client; the name resolves on use."""
    code = (
        "import sys, qorch; light = not any(m.startswith(('qorch.orchestrator', 'kubernetes_asyncio', 'kopf')) "
        "for m in sys.modules); from qorch import UnifiedQuantumOrchestrator; "
        "print(light, UnifiedQuantumOrchestrator.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "qorch.orchestrator.core"]


def _started(max_agents: int) -> tuple[UnifiedQuantumOrchestrator, FakeApi]:
    """An orchestrator whose client talks to the in-memory apiserver (serve=False: no fleet needed)."""
    api = FakeApi()
    orchestrator = UnifiedQuantumOrchestrator(max_agents=max_agents)
    orchestrator.client = Client(api, "default")  # type: ignore[arg-type]
    orchestrator._started = True
    return orchestrator, api


def test_register_agent_refuses_bad_names_specs_and_more_than_max_agents() -> None:
    """Each refusal names the agent, the field and the fix; nothing is created for it."""
    orchestrator, api = _started(max_agents=2)

    async def scenario() -> None:
        assert await orchestrator.register_agent("a-1", {"general"}, serve=False) == "a-1"
        with pytest.raises(OrchestratorError, match=r"register_agent 'Bad_Name': the name must be a DNS label"):
            await orchestrator.register_agent("Bad_Name", {"general"}, serve=False)
        with pytest.raises(OrchestratorError, match=r"register_agent 'a-2': spec.capacity: Input should be greater"):
            await orchestrator.register_agent("a-2", {"general"}, serve=False, capacity=0)
        with pytest.raises(OrchestratorError, match=r"register_agent 'a-1': registered already"):
            await orchestrator.register_agent("a-1", {"general"}, serve=False)
        assert await orchestrator.register_agent("a-2", "general", serve=False, capacity=4) == "a-2"
        with pytest.raises(OrchestratorError, match=r"register_agent 'a-3': max_agents=2 reached; create the"):
            await orchestrator.register_agent("a-3", {"general"}, serve=False)

    asyncio.run(scenario())
    created = {key[2]: body["spec"] for key, body in api.objects.items() if key[0] == "agents"}
    assert created == {"a-1": {"capabilities": ["general"]}, "a-2": {"capabilities": ["general"], "capacity": 4}}
