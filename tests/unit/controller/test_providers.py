"""LLM providers' circuit breakers in the kernel (issue 13, item 8), against the in-memory apiserver."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from qorch.agent import ProviderError
from qorch.api import protocol
from qorch.controller import documents
from qorch.controller.store import AGENTS, POLICIES, TASKS
from support import bodies
from support.kernel import WALL0, Harness, harness

RATE_LIMITED = "ProviderError: [RateLimited] 429 Too Many Requests"


def run(test: Callable[[Harness], Coroutine[Any, Any, None]]) -> None:
    """Run an async test body against a fresh harness."""

    async def main() -> None:
        async with harness() as h:
            await test(h)

    asyncio.run(main())


def fleet(h: Harness, **policy: Any) -> None:
    """alpha-1 and alpha-2 (provider alpha, cheap), beta-1 (provider beta, dear); cost decides."""
    spec = {"weights": {"cost": 100}, "providerBreaker": {"failureThreshold": 2, "cooldownSeconds": 30}, **policy}
    h.create(POLICIES, {"metadata": {"name": "default"}, "spec": spec})
    for name, provider, cost in (("alpha-1", "alpha", 1), ("alpha-2", "alpha", 1), ("beta-1", "beta", 50)):
        h.create(
            AGENTS,
            bodies.agent(name, capabilities=["code"], capacity=4, provider={"name": provider, "costPerTask": cost}),
        )
        h.renew(name)


def failed_on(h: Harness, name: str, agent: str, error: str = RATE_LIMITED) -> None:
    """Task `name` ran attempt 1 on `agent` and failed with `error`."""
    report = bodies.execution(agent, 1, finished=True, error=error)
    status = bodies.assigned(agent, 1, phase="Running", execution=report)
    retry = {"maxAttempts": 3, "backoffSeconds": 0, "maxBackoffSeconds": 0}
    h.create(TASKS, bodies.task(name, requires=["code"], retry=retry, status=status))


def agent_of(h: Harness, name: str) -> str:
    """The agent a task is assigned to now ("" for none)."""
    return str((h.status(name).get("assignment") or {}).get("agent", ""))


def finish(h: Harness, name: str, agent: str) -> None:
    """The agent reports the task's current attempt done."""
    body = h.task(name)
    attempt = body["status"]["assignment"]["attempt"]
    body["status"]["phase"] = "Running"
    body["status"]["execution"] = bodies.execution(agent, attempt, finished=True)
    h.create(TASKS, body)


def renew_all(h: Harness) -> None:
    """Every agent renews its Lease."""
    for name in ("alpha-1", "alpha-2", "beta-1"):
        h.renew(name)


def test_provider_errors_open_the_providers_breaker_for_all_its_agents_and_work_fails_over() -> None:
    """Two rate limits on two alpha agents open alpha's breaker: no alpha agent gets work, beta does.

    The agents' own breakers do not count them. After the cool-down one alpha agent takes
    one probe; its success closes the breaker and the cheap provider gets work again.
    """

    async def test(h: Harness) -> None:
        fleet(h)
        await h.cycle()
        h.create(TASKS, bodies.task("before", requires=["code"]))
        await h.cycle()
        assert agent_of(h, "before").startswith("alpha-")  # cheapest first
        failed_on(h, "f1", "alpha-1")
        failed_on(h, "f2", "alpha-2")
        await h.cycle()
        await h.cycle()
        assert "ProviderBreakerOpen" in h.events.reasons()
        for name in ("f1", "f2"):
            assert agent_of(h, name) == "beta-1", name  # the retries failed over
        assert all("breaker" not in (h.api.get(AGENTS, "ns", a).get("status") or {}) or
                   h.api.get(AGENTS, "ns", a)["status"]["breaker"]["state"] == "Closed"
                   for a in ("alpha-1", "alpha-2"))  # fmt: skip
        h.create(TASKS, bodies.task("during", requires=["code"]))
        await h.cycle()
        assert agent_of(h, "during") == "beta-1"
        assert [p["name"] for p in h.kernel.providers.status()] == ["alpha"]
        finish(h, "before", agent_of(h, "before"))  # a success while Open changes nothing
        await h.cycle()
        assert h.status("before")["phase"] == "Succeeded"
        assert [p["state"] for p in h.kernel.providers.status()] == ["Open"]

        # The cool-down ends: HalfOpen, one probe on alpha-1 (first by name), one at a time.
        h.advance(31)
        renew_all(h)
        for i in range(3):
            h.create(TASKS, bodies.task(f"after-{i}", requires=["code"]))
        await h.cycle()
        await h.cycle()
        placed = [agent_of(h, f"after-{i}") for i in range(3)]
        assert placed.count("alpha-1") == 1, placed
        assert "alpha-2" not in placed, placed
        probe = f"after-{placed.index('alpha-1')}"
        finish(h, probe, "alpha-1")
        await h.cycle()
        assert h.status(probe)["phase"] == "Succeeded"
        assert "ProviderBreakerClosed" in h.events.reasons()
        assert h.kernel.providers.status() == []
        h.create(TASKS, bodies.task("healed", requires=["code"]))
        await h.cycle()
        assert agent_of(h, "healed").startswith("alpha-")

    run(test)


def test_an_ordinary_failure_counts_for_the_agent_not_the_provider() -> None:
    """A handler's own error is the agent's business: the provider's breaker stays closed."""

    async def test(h: Harness) -> None:
        fleet(h, breaker={"failureThreshold": 1, "cooldownSeconds": 30})
        await h.cycle()
        failed_on(h, "f1", "alpha-1", error="ValueError: bad input")
        await h.cycle()
        await h.cycle()
        assert h.kernel.providers.status() == []
        assert h.api.get(AGENTS, "ns", "alpha-1")["status"]["breaker"]["state"] == "Open"

    run(test)


def test_a_new_leader_continues_an_open_provider_breaker() -> None:
    """status.providers says alpha is Open until later: after take-over no alpha agent gets work."""

    async def test(h: Harness) -> None:
        fleet(h)
        body = h.api.get(POLICIES, "", "default")
        body["status"] = {
            "providers": [
                {"name": "alpha", "state": "Open", "consecutiveFailures": 2, "openUntil": documents.stamp(WALL0 + 60)}
            ]
        }
        h.create(POLICIES, body)
        h.kernel._take_over()
        await h.cycle()
        h.create(TASKS, bodies.task("t", requires=["code"]))
        await h.cycle()
        assert agent_of(h, "t") == "beta-1"

    run(test)


def test_the_runtime_reports_a_provider_error_in_the_protocols_form() -> None:
    """ProviderError("RateLimited", ...) is the error line the operator reads; other errors are not."""
    assert f"ProviderError: {ProviderError('RateLimited', '429 Too Many Requests')}" == RATE_LIMITED
    assert protocol.provider_error(RATE_LIMITED) == "RateLimited"
    assert protocol.provider_error("ValueError: [RateLimited] looks alike") == ""
    assert protocol.provider_error("ProviderError: no kind") == ""
