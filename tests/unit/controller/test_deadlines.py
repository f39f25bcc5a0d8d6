"""Deadlines and timeouts in the kernel (issue 13, item 6), against the in-memory apiserver.

Time is driven by hand: the monotonic clock for timeouts (measured by this
process), the wall clock for deadlines (instants the user wrote).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from qorch.controller import documents, metrics
from qorch.controller.records import TaskRecord
from qorch.controller.store import AGENTS, POLICIES, TASKS
from support import bodies
from support.kernel import WALL0, Harness, harness


def run(test: Callable[[Harness], Coroutine[Any, Any, None]]) -> None:
    """Run an async test body against a fresh harness."""

    async def main() -> None:
        async with harness() as h:
            await test(h)

    asyncio.run(main())


def misses(outcome: str) -> float:
    """The qorch_deadline_misses_total sample of one outcome."""
    return metrics.DEADLINE_MISSES.labels(outcome)._value.get()


def conditions(h: Harness, name: str) -> dict[str, dict[str, Any]]:
    """A task's conditions by type."""
    return {c["type"]: c for c in h.status(name).get("conditions", [])}


async def wait(h: Harness, seconds: float, *, step: float = 5.0, agents: tuple[str, ...] = ("a",)) -> None:
    """Let `seconds` pass with the agents renewing their Leases, cycling as the operator would."""
    left = seconds
    while left > 0:
        h.advance(min(step, left))
        left -= step
        for agent in agents:
            h.renew(agent)
        await h.cycle()


def running(agent: str = "a", attempt: int = 1) -> dict[str, Any]:
    """A status: the attempt claimed and running."""
    return bodies.assigned(agent, attempt, phase="Running", execution=bodies.execution(agent, attempt))


def test_a_missed_deadline_sets_a_condition_once_and_the_task_goes_on() -> None:
    """Passing the deadline unfinished: the DeadlineMissed condition, an Event, one count; later writes keep it."""

    async def test(h: Harness) -> None:
        h.create(AGENTS, bodies.agent("a", capabilities=["code"]))
        h.renew("a")
        deadline = documents.stamp(WALL0 + 20)
        h.create(TASKS, bodies.task("t", requires=["code"], deadline=deadline, status=running()))
        before = misses("continued")
        await h.cycle()
        assert "DeadlineMissed" not in conditions(h, "t")
        await wait(h, 25)
        missed = conditions(h, "t")["DeadlineMissed"]
        assert missed["status"] == "True"
        assert deadline in missed["message"]
        assert h.status("t")["phase"] == "Running"  # it goes on
        assert h.events.reasons().count("DeadlineMissed") == 1
        assert misses("continued") == before + 1
        # The agent finishes later: the transition keeps the condition, and nothing counts again.
        body = h.task("t")
        body["status"]["execution"] = bodies.execution("a", 1, finished=True)
        h.create(TASKS, body)
        await wait(h, 10)
        assert h.status("t")["phase"] == "Succeeded"
        assert conditions(h, "t")["DeadlineMissed"]["lastTransitionTime"] == missed["lastTransitionTime"]
        assert conditions(h, "t")["Scheduled"]["reason"] == "Succeeded"
        assert misses("continued") == before + 1
        assert h.events.reasons().count("DeadlineMissed") == 1

    run(test)


def test_fail_on_deadline_fails_the_task_and_withdraws_its_attempt() -> None:
    """failOnDeadline: Failed with reason DeadlineExceeded; the assignment goes, so the runtime cancels it."""

    async def test(h: Harness) -> None:
        h.create(AGENTS, bodies.agent("a", capabilities=["code"]))
        h.renew("a")
        deadline = documents.stamp(WALL0 + 10)
        h.create(TASKS, bodies.task("t", requires=["code"], deadline=deadline, failOnDeadline=True, status=running()))
        h.create(TASKS, bodies.task("queued", requires=["gpu"], deadline=deadline, failOnDeadline=True))
        before = misses("failed")
        await wait(h, 15)
        for name in ("t", "queued"):
            status = h.status(name)
            assert status["phase"] == "Failed", name
            assert status["conditions"][0]["reason"] == "DeadlineExceeded"
            assert "assignment" not in status
            assert conditions(h, name)["DeadlineMissed"]["status"] == "True"
        assert misses("failed") == before + 2
        await wait(h, 20)  # a load-only change of an Agent's status is written every 15 s at most
        assert h.api.get(AGENTS, "ns", "a")["status"]["activeTasks"] == 0  # the slot is free

    run(test)


def test_a_task_assigned_but_never_claimed_is_requeued_without_using_an_attempt() -> None:
    """claimTimeoutSeconds after the assignment, an unclaimed attempt goes back (ClaimTimedOut), attempts 0."""

    async def test(h: Harness) -> None:
        h.create(POLICIES, {"metadata": {"name": "default"}, "spec": {"claimTimeoutSeconds": 20}})
        h.create(AGENTS, bodies.agent("a", capabilities=["code"]))
        h.renew("a")
        h.create(TASKS, bodies.task("t", requires=["code"], status=bodies.assigned("a", 1)))
        await h.cycle()
        await wait(h, 15)
        assert h.status("t")["phase"] == "Assigned"  # within its limit
        await wait(h, 10, step=10)
        history = h.status("t")["history"]
        assert [e["reason"] for e in history][:1] == ["ClaimTimedOut"]
        assert h.status("t")["attempts"] == 0
        assert h.status("t")["phase"] in ("Queued", "Assigned")  # requeued, then maybe placed again
        assert h.status("t").get("assignment", {}).get("attempt", 2) == 2  # never attempt 1 again

    run(test)


def test_an_attempt_running_past_its_timeout_with_a_silent_agent_fails() -> None:
    """timeoutSeconds + the agents' grace with no report: AttemptTimedOut, counted, retried."""

    async def test(h: Harness) -> None:
        h.create(POLICIES, {"metadata": {"name": "default"}, "spec": {"agentGraceSeconds": 10}})
        h.create(AGENTS, bodies.agent("a", capabilities=["code"]))
        h.renew("a")
        retry = {"maxAttempts": 3, "backoffSeconds": 60, "maxBackoffSeconds": 60}
        h.create(TASKS, bodies.task("t", requires=["code"], timeoutSeconds=30, retry=retry, status=running()))
        await h.cycle()  # first seen Running: the operator's clock starts
        await wait(h, 35)
        assert h.status("t")["phase"] == "Running"  # past timeoutSeconds, within the grace
        await wait(h, 10)
        status = h.status("t")
        assert status["phase"] == "Retrying"
        assert status["conditions"][0]["reason"] == "AttemptTimedOut"
        assert status["attempts"] == 1
        assert "assignment" not in status

    run(test)


def test_timeout_seconds_bounds_an_attempt_not_the_task() -> None:
    """spec.timeoutSeconds is no deadline: a long-waiting task with it never misses one."""
    record = TaskRecord.of(bodies.task("t", timeoutSeconds=5))
    assert record.deadline is None
    assert record.timeout == 5.0


def test_a_task_created_past_its_deadline_still_runs_and_is_marked_once_it_has_a_status() -> None:
    """Review defect: the condition patch needs a status; the task gets its first status (and runs) first."""

    async def test(h: Harness) -> None:
        h.create(AGENTS, bodies.agent("a", capabilities=["code"]))
        h.renew("a")
        h.create(TASKS, bodies.task("t", requires=["code"], deadline=documents.stamp(WALL0 - 60)))
        await h.cycle()
        assert h.status("t")["phase"] == "Assigned"
        await h.cycle()
        assert conditions(h, "t")["DeadlineMissed"]["status"] == "True"
        assert h.status("t")["phase"] == "Assigned"

    run(test)


def test_work_finished_in_time_but_seen_late_is_not_failed_for_the_deadline() -> None:
    """Review defect: a finished report is decided before the deadline: Succeeded, not DeadlineExceeded."""

    async def test(h: Harness) -> None:
        h.create(AGENTS, bodies.agent("a", capabilities=["code"]))
        h.renew("a")
        done = bodies.assigned("a", 1, phase="Running", execution=bodies.execution("a", 1, finished=True))
        deadline = documents.stamp(WALL0 - 1)
        h.create(TASKS, bodies.task("t", requires=["code"], deadline=deadline, failOnDeadline=True, status=done))
        await h.cycle()
        assert h.status("t")["phase"] == "Succeeded"

    run(test)


def test_a_deadline_arms_one_timer_however_often_the_task_is_visited() -> None:
    """Review defect: every visit armed another timer living until the deadline."""

    async def test(h: Harness) -> None:
        h.create(TASKS, bodies.task("t", requires=["gpu"], deadline=documents.stamp(WALL0 + 86_400)))
        for _ in range(20):
            h.kernel.store.feed.tasks.add(("ns", "t"))
            await h.cycle()
        assert sum(1 for timer in h.kernel._timers if timer[3] == ("ns", "t")) == 1

    run(test)


def test_a_wedged_agent_that_never_claims_opens_its_breaker() -> None:
    """Review defect: claim timeouts count against the agent, so a wedged runtime stops absorbing work."""

    async def test(h: Harness) -> None:
        policy = {"claimTimeoutSeconds": 5, "breaker": {"failureThreshold": 2, "cooldownSeconds": 600}}
        h.create(POLICIES, {"metadata": {"name": "default"}, "spec": policy})
        h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=2))
        h.renew("a")
        for name in ("t1", "t2"):
            h.create(TASKS, bodies.task(name, requires=["code"], status=bodies.assigned("a", 1)))
        await h.cycle()
        await wait(h, 10)
        await h.cycle()
        assert h.api.get(AGENTS, "ns", "a")["status"]["breaker"]["state"] == "Open"
        assert {h.status(n)["phase"] for n in ("t1", "t2")} == {"Queued"}

    run(test)


def test_fail_on_deadline_records_the_withdrawn_attempt_in_history() -> None:
    """Review defect: the history entry of the attempt a deadline withdrew says how it ended."""

    async def test(h: Harness) -> None:
        h.create(AGENTS, bodies.agent("a", capabilities=["code"]))
        h.renew("a")
        deadline = documents.stamp(WALL0 + 5)
        h.create(TASKS, bodies.task("t", requires=["code"], deadline=deadline, failOnDeadline=True, status=running()))
        await wait(h, 10)
        assert h.status("t")["history"][-1]["outcome"] == "Withdrawn"

    run(test)
