"""Start-up of `qorch agent run` while the apiserver is away (found by bench/soak.py: it exited with a traceback)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from qorch.agent import runtime as runtime_module
from qorch.agent.runtime import AgentRuntime, Handlers, RuntimeSettings
from qorch.controller.kube import ApiError, KubeError, TransportError
from support.fakeapi import FakeApi

NS = "team"


def failing(method: str, plural: str, error: KubeError, times: int) -> Any:
    """A fault refusing the first `times` matching requests."""
    fired: list[bool] = []

    def fault(m: str, path: str) -> KubeError | None:
        if len(fired) < times and m == method and f"/{plural}/" in path + "/":
            fired.append(True)
            return error
        return None

    return fault


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The retries' backoff, without the waiting."""

    async def instant(attempt: int, **_: float) -> None:
        del attempt

    monkeypatch.setattr(runtime_module, "sleep_backoff", instant)


def agent(api: FakeApi) -> AgentRuntime:
    """A runtime for Agent `a`."""
    return AgentRuntime(api, RuntimeSettings(name="a", namespace=NS, capacity=2), Handlers())  # type: ignore[arg-type]


def test_attaching_waits_out_refused_connections_and_5xx() -> None:
    """The apiserver restarting: connections refused, then 503s, then the Agent is created."""
    api = FakeApi()
    api.before.append(failing("GET", "agents", TransportError("GET: ClientConnectorError"), 3))
    api.before.append(failing("GET", "agents", ApiError(503, "ServiceUnavailable", "not ready"), 2))
    runtime = agent(api)
    asyncio.run(runtime_module._starting(runtime.attach, asyncio.Event(), "attaching"))
    assert api.get("agents", NS, "a")["spec"]["capacity"] == 2
    assert [m for m, _ in api.calls].count("GET") == 6


def test_reading_the_lease_waits_out_a_dropped_connection() -> None:
    """A connection closed under the Lease read is asked again, not a crash."""
    api = FakeApi()
    api.before.append(failing("GET", "leases", TransportError("GET: ServerDisconnectedError"), 2))
    runtime = agent(api)
    stop = asyncio.Event()
    asyncio.run(runtime_module._starting(lambda: runtime.wait_for_lease(stop), stop, "reading the Lease"))
    assert [m for m, _ in api.calls].count("GET") == 3  # two dropped, then a 404: no Lease, go on


def test_a_refusal_at_start_up_is_still_fatal() -> None:
    """403 is an answer, not an absence: the process ends and says why."""
    api = FakeApi()
    api.before.append(failing("GET", "agents", ApiError(403, "Forbidden", "no RBAC"), 1))
    with pytest.raises(ApiError):
        asyncio.run(runtime_module._starting(agent(api).attach, asyncio.Event(), "attaching"))
