"""Classification versus clearance, enforced twice (issue 14, item 2), against the in-memory apiserver."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from qorch.controller import metrics, translate
from qorch.controller.store import AGENTS, TASKS
from support import bodies
from support.kernel import Harness, harness


def refused(rule: str) -> float:
    """qorch_assignments_refused_total of one rule."""
    return metrics.ASSIGNMENTS_REFUSED.labels(rule)._value.get()


def test_a_scheduler_bug_proposing_a_violating_assignment_is_never_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """An injected bug places a secret task on an internal agent: not written; an Event and the metric say so."""
    real = translate.placements
    harnesses: list[Harness] = []

    def buggy(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        low = harnesses[0].store.agents[("ns", "low")]
        return [dataclasses.replace(p, agent=low, reason=None) if p.task.name == "secret" else p for p in out]

    async def main() -> None:
        async with harness() as h:
            harnesses.append(h)
            monkeypatch.setattr(translate, "placements", buggy)
            h.create(AGENTS, bodies.agent("low", capabilities=["code"], capacity=4, clearance="internal"))
            h.create(AGENTS, bodies.agent("high", capabilities=["code"], capacity=4, clearance="secret"))
            h.renew("low")
            h.renew("high")
            h.create(TASKS, bodies.task("secret", requires=["code"], classification="secret"))
            h.create(TASKS, bodies.task("plain", requires=["code"]))
            before = refused("clearance")
            await h.cycle()
            assert h.status("secret").get("phase") != "Assigned"
            assert h.status("plain")["phase"] == "Assigned"
            assert refused("clearance") == before + 1
            assert "AssignmentRefused" in h.events.reasons()

    asyncio.run(main())


def test_lowering_an_agents_clearance_requeues_what_it_may_no_longer_hold_without_failing_it() -> None:
    """A running secret task on an agent lowered to internal: back to the queue, attempt Withdrawn, no breaker."""

    async def main() -> None:
        async with harness() as h:
            h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=2, clearance="secret"))
            h.renew("a")
            running = bodies.assigned("a", 1, phase="Running", execution=bodies.execution("a", 1))
            h.create(TASKS, bodies.task("t", requires=["code"], classification="secret", status=running))
            await h.cycle()
            assert h.status("t")["phase"] == "Running"
            lowered = h.api.get(AGENTS, "ns", "a")
            lowered["spec"]["clearance"] = "internal"
            lowered["metadata"]["generation"] = 2
            h.create(AGENTS, lowered)
            h.renew("a")
            await h.cycle()
            status = h.status("t")
            assert status["phase"] == "Queued"
            assert status["history"][-1]["reason"] == "ClearanceTooLow"
            assert status["history"][-1]["outcome"] == "Withdrawn"
            agent = h.api.get(AGENTS, "ns", "a")["status"]
            assert (agent.get("breaker") or {}).get("consecutiveFailures", 0) == 0
            # Raising it again takes effect at once: the task is placed on it in the next pass.
            raised = h.api.get(AGENTS, "ns", "a")
            raised["spec"]["clearance"] = "secret"
            raised["metadata"]["generation"] = 3
            h.create(AGENTS, raised)
            h.renew("a")
            await h.cycle()
            await h.cycle()
            assert h.status("t")["phase"] == "Assigned"

    asyncio.run(main())


def test_a_task_the_agent_cannot_run_waits_and_never_pauses_the_agent_for_others() -> None:
    """Found by fuzzing: NoHandler refusals paused the agent each time, starving every other task.

    A refusal about the task itself brings it back after a delay (Retrying, no attempt
    spent); the agent gets no pause, so well-formed work flows at once.
    """

    async def main() -> None:
        async with harness() as h:
            h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=4))
            h.renew("a")
            refusal = bodies.execution("a", 1, refused="NoHandler")
            h.create(TASKS, bodies.task("odd", status=bodies.assigned("a", 1, execution=refusal)))
            await h.cycle()
            status = h.status("odd")
            assert (status["phase"], status["attempts"]) == ("Retrying", 0)
            assert "nextAttemptAt" in status
            h.create(TASKS, bodies.task("good", requires=["code"]))
            await h.cycle()
            assert h.status("good")["phase"] == "Assigned"

    asyncio.run(main())
