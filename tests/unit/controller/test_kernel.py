"""The kernel against an in-memory apiserver: each defect of the first controller, pinned without a cluster.

The real store, ledger, writer, lifecycle rules, queue and scheduler core run;
only the apiserver is a stand-in (tests/support/fakeapi.py), so that a fault
can land a write and lose its answer, which a real network only does by luck.
The same defects are driven through real processes in tests/e2e.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from qorch.controller import documents, metrics, translate
from qorch.controller import loop as loop_module
from qorch.controller.kube import ApiError, KubeError, TransportError
from qorch.controller.lifecycle import gate, writes
from qorch.controller.store import AGENTS, APPROVALS, LEASES, POLICIES, TASKS, ClusterState
from qorch.controller.writer import Outcome, StatusWriter, Write
from support import bodies
from support.fakeapi import FakeApi
from support.kernel import WALL0, Harness, harness


def run(test: Callable[[Harness], Coroutine[Any, Any, None]], api: FakeApi | None = None) -> None:
    """Run an async test body against a fresh harness."""

    async def main() -> None:
        async with harness(api) as h:
            await test(h)

    asyncio.run(main())


def policy(**spec: Any) -> dict[str, Any]:
    """SchedulingPolicy `default` with this spec."""
    return {"metadata": {"name": "default"}, "spec": spec}


def phases(h: Harness, names: list[str]) -> dict[str, str | None]:
    """Phases of some tasks, as the apiserver holds them."""
    return {n: h.status(n).get("phase") for n in names}


def test_cordoning_an_agent_leaves_its_work_alone() -> None:
    """Defect 3: a cordoned but alive agent keeps its Assigned and Running tasks; it only gets nothing new."""

    async def test(h: Harness) -> None:
        h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=3, cordoned=True))
        h.renew("a")
        h.create(TASKS, bodies.task("assigned", requires=["code"], status=bodies.assigned("a", 1)))
        running = bodies.assigned("a", 1, phase="Running", execution=bodies.execution("a", 1))
        h.create(TASKS, bodies.task("running", requires=["code"], status=running))
        h.create(TASKS, bodies.task("new", requires=["code"]))
        await h.cycle()
        assert phases(h, ["assigned", "running", "new"]) == {
            "assigned": "Assigned",
            "running": "Running",
            "new": "Queued",
        }
        assert h.status("new")["conditions"][0]["reason"] == "NoReadyAgent"
        assert h.api.get(AGENTS, "ns", "a")["status"]["phase"] == "Cordoned"
        assert h.api.get(AGENTS, "ns", "a")["status"]["activeTasks"] == 2

    run(test)


def test_an_agent_created_during_a_cycle_does_not_abort_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 7: a watch event adds an agent while the scheduler runs; the cycle finishes and writes."""
    real = translate.placements

    def placements_while_an_agent_appears(*args: Any, **kwargs: Any) -> Any:
        harnesses[0].create(AGENTS, bodies.agent("late", capabilities=["code"]))
        return real(*args, **kwargs)

    harnesses: list[Harness] = []

    async def test(h: Harness) -> None:
        harnesses.append(h)
        monkeypatch.setattr(translate, "placements", placements_while_an_agent_appears)
        h.create(AGENTS, bodies.agent("a", capabilities=["code"]))
        h.renew("a")
        h.create(TASKS, bodies.task("t", requires=["code"]))
        await h.cycle()
        assert h.status("t")["phase"] == "Assigned"
        await h.cycle()  # and the newcomer gets its status next
        assert h.api.get(AGENTS, "ns", "late")["status"]["phase"] == "NotReady"

    run(test)


def test_a_write_with_an_unknown_outcome_keeps_its_slot() -> None:
    """Defect 9: an assignment lands but its answer is lost; the agent's one slot is not filled twice."""
    api = FakeApi()
    lost = []

    def lose_first_task_answer(method: str, path: str) -> KubeError | None:
        if method == "PATCH" and "/tasks/" in path and not lost:
            lost.append(path)
            return TransportError("PATCH: ServerDisconnectedError")
        return None

    api.after.append(lose_first_task_answer)

    async def test(h: Harness) -> None:
        h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=1))
        h.renew("a")
        for name in ("t1", "t2"):
            h.create(TASKS, bodies.task(name, requires=["code"]))
        await h.cycle(echo=False)
        assert lost, "the fault never fired"
        await h.cycle(echo=False)  # the store has not seen the landed write: only the ledger knows
        assert sum(1 for n in ("t1", "t2") if h.status(n).get("phase") == "Assigned") == 1
        h.advance(5)
        await h.settle()  # the GET tells the store what happened
        await h.cycle()
        assert sum(1 for n in ("t1", "t2") if h.status(n).get("phase") == "Assigned") == 1
        assert len(h.writer.ledger) == 0

    run(test, api)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(RuntimeError("a bug in the client"), id="not-an-api-error"),
        pytest.param(TransportError("PATCH: ClientPayloadError"), id="reset"),
        pytest.param(ApiError(503, "ServiceUnavailable", "etcd leader changed"), id="5xx"),
    ],
)
def test_a_failed_write_never_leaves_a_task_stuck(error: Exception) -> None:
    """Defect 2: whatever a PATCH raises, the entry is settled by a GET and the task decided again at once.

    Soak (seed 878628): a 503 on an assignment held the *task* for the apiserver's request
    lifetime (65 s). Only the agent's slot needs that hold: compare-and-set lets one of the
    two writes decided on the same version land, never both.
    """
    api = FakeApi()
    fired: list[str] = []

    def fail_first(method: str, path: str) -> Any:
        if method == "PATCH" and "/tasks/" in path and not fired:
            fired.append(path)
            return error
        return None

    api.before.append(fail_first)

    async def test(h: Harness) -> None:
        h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=1))
        h.renew("a")
        h.create(TASKS, bodies.task("t", requires=["code"]))
        await h.cycle()
        assert fired
        assert "phase" not in h.status("t")
        h.create(AGENTS, bodies.agent("b", capabilities=["code"], capacity=1))
        h.renew("b")
        h.advance(5)
        await h.settle()
        assert h.writer.ledger.slots(("ns", "a")) == 1  # a's slot is held: the old write may yet land
        await h.cycle(echo=False)
        assert h.status("t")["phase"] == "Assigned"  # decided again within seconds, not a minute
        assert h.status("t")["assignment"]["agent"] == "b"
        h.create(TASKS, bodies.task("u", requires=["code"]))
        await h.cycle(echo=False)
        assert "assignment" not in h.status("u")  # a stays full while the hold lasts
        h.sync()  # t's new version: the old write, decided on the one before, can never land now
        assert h.writer.ledger.slots(("ns", "a")) == 0  # review finding E1: freed at once, not after 65 s
        await h.cycle()
        assert h.status("u")["assignment"]["agent"] == "a"
        assert len(h.writer.ledger) <= 2  # at most the agents' own status writes, settling

    run(test, api)


def test_hopeless_tasks_are_parked_and_never_crowd_out_a_new_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 17: 2,000 tasks no agent can run are parked; a new runnable task is decided alone next cycle."""
    offered: list[int] = []
    real = translate.tasks

    def spy(fleet: Any, queued: Any, **kwargs: Any) -> Any:
        offered.append(len(queued))
        return real(fleet, queued, **kwargs)

    monkeypatch.setattr(translate, "tasks", spy)

    async def test(h: Harness) -> None:
        h.create(POLICIES, policy(batchSize=100))
        h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=5))
        h.renew("a")
        for i in range(2000):
            h.create(TASKS, bodies.task(f"gpu-{i}", requires=["gpu"]))
        await h.cycle()  # a shape no agent admits needs no batch slot: all 2,000 are decided at once
        h.sync()
        statuses = [h.status(f"gpu-{i}") for i in range(2000)]
        assert all(s.get("phase") == "Queued" for s in statuses)
        assert {s["conditions"][0]["reason"] for s in statuses} == {"NoCapableAgent"}
        assert len(h.kernel.queue.parked) == 2000
        offered.clear()
        h.create(TASKS, bodies.task("new", requires=["code"]))
        await h.cycle()
        assert h.status("new")["phase"] == "Assigned"
        assert sum(offered) == 1  # the new task alone was offered to the scheduler

    run(test)


def test_every_task_gets_a_status_within_two_cycles_even_outside_the_batch() -> None:
    """Left out of a batch: the next batch's tasks are decided next cycle; those further back hear NotInBatch now."""

    async def test(h: Harness) -> None:
        h.create(POLICIES, policy(batchSize=10))
        h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=5))
        h.renew("a")
        names = [f"t{i}" for i in range(50)]
        for name in names:
            h.create(TASKS, bodies.task(name, requires=["code"]))
        await h.cycle()
        first = [h.status(n) for n in names]
        reasons = [s["conditions"][0]["reason"] for s in first if s]
        assert reasons.count("NotInBatch") == 30  # places 21 to 50: more than one batch away
        assert sum(1 for s in first if not s) == 10  # places 11 to 20: the very next batch
        in_line = next(s for s in first if s and s["conditions"][0]["reason"] == "NotInBatch")
        assert " in line" in in_line["conditions"][0]["message"]
        h.sync()
        await h.cycle()
        assert all(h.status(n).get("phase") in ("Assigned", "Queued") for n in names)

    run(test)


def test_a_slot_freed_wakes_tasks_parked_for_capacity() -> None:
    """Parked CapacityExhausted tasks come back when a task on a matching agent ends."""

    async def test(h: Harness) -> None:
        h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=1))
        h.renew("a")
        for name in ("t1", "t2"):
            h.create(TASKS, bodies.task(name, requires=["code"]))
        await h.cycle()
        h.sync()
        first = next(n for n in ("t1", "t2") if h.status(n)["phase"] == "Assigned")
        second = "t2" if first == "t1" else "t1"
        assert h.status(second)["conditions"][0]["reason"] == "CapacityExhausted"
        body = h.task(first)
        body["status"]["execution"] = bodies.execution("a", 1, finished=True)
        h.create(TASKS, body)  # the agent reports success
        await h.cycle()
        h.sync()
        await h.cycle()
        assert h.status(second)["phase"] == "Assigned"

    run(test)


def test_namespace_quotas_and_default_retry_reach_the_cluster() -> None:
    """Defect 14: maxConcurrentTasks and maxCost cap a namespace; defaultRetry applies to tasks without retry."""

    async def test(h: Harness) -> None:
        h.create(
            POLICIES,
            policy(
                quotas=[{"namespace": "ns", "maxConcurrentTasks": 2}, {"namespace": "cheap", "maxCost": 3}],
                defaultRetry={"maxAttempts": 1, "backoffSeconds": 0, "maxBackoffSeconds": 0},
            ),
        )
        h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=10))
        h.create(AGENTS, bodies.agent("b", namespace="cheap", capacity=10, provider={"name": "p", "costPerTask": 1}))
        h.renew("a")
        h.renew("b", namespace="cheap")
        for i in range(5):
            h.create(TASKS, bodies.task(f"t{i}", requires=["code"]))
            h.create(TASKS, bodies.task(f"c{i}", namespace="cheap"))
        await h.cycle()
        ns = [h.status(f"t{i}") for i in range(5)]
        cheap = [h.status(f"c{i}", "cheap") for i in range(5)]
        assert sum(s["phase"] == "Assigned" for s in ns) == 2
        assert {s["conditions"][0]["reason"] for s in ns if s["phase"] == "Queued"} == {"OverQuota"}
        assert sum(s["phase"] == "Assigned" for s in cheap) == 3
        h.sync()
        done = next(f"t{i}" for i in range(5) if ns[i]["phase"] == "Assigned")
        body = h.task(done)
        body["status"]["execution"] = bodies.execution("a", 1, finished=True, error="boom")
        h.create(TASKS, body)
        await h.cycle()
        ended = h.status(done)
        assert (ended["phase"], ended["conditions"][0]["reason"]) == ("DeadLettered", "AttemptsExhausted")

    run(test)


def test_a_retry_avoids_the_failure_domain_that_failed() -> None:
    """Defect 14: after failing on an agent of group g1, the retry goes to the equally good agent of g2."""

    async def test(h: Harness) -> None:
        h.create(AGENTS, bodies.agent("a1", capabilities=["code"], capacity=5, entanglementGroup="g1"))
        h.create(AGENTS, bodies.agent("a2", capabilities=["code"], capacity=5, entanglementGroup="g2"))
        h.renew("a1")
        h.renew("a2")
        h.create(
            TASKS,
            bodies.task("t", requires=["code"], retry={"maxAttempts": 3, "backoffSeconds": 0, "maxBackoffSeconds": 0}),
        )
        await h.cycle()
        h.sync()
        first = h.status("t")["assignment"]["agent"]
        body = h.task("t")
        body["status"]["execution"] = bodies.execution(first, 1, finished=True, error="boom")
        h.create(TASKS, body)
        await h.cycle()
        h.sync()
        await h.cycle()
        status = h.status("t")
        assert status["phase"] == "Assigned"
        assert status["assignment"]["attempt"] == 2
        assert status["assignment"]["agent"] != first

    run(test)


def test_a_report_for_another_attempt_is_ignored_and_recorded_once() -> None:
    """Defect 4: a zombie's finish of attempt 1 does not end attempt 2; an Event and a metric say so, once."""

    async def test(h: Harness) -> None:
        h.create(AGENTS, bodies.agent("b", capabilities=["code"]))
        h.renew("b")
        h.create(TASKS, bodies.task("t", requires=["code"], status=bodies.assigned("b", 2)))
        await h.cycle()
        before = metrics.REPORTS_IGNORED._value.get()
        body = h.task("t")
        body["status"]["execution"] = bodies.execution("zombie", 1, finished=True)
        h.create(TASKS, body)
        await h.cycle()
        await h.cycle()
        assert h.status("t")["phase"] == "Assigned"
        assert h.events.reasons().count("ReportIgnored") == 1
        assert metrics.REPORTS_IGNORED._value.get() == before + 1

    run(test)


def test_approvals_are_bound_to_the_incarnation_then_counted() -> None:
    """Defect 13: an Approve counts for the incarnation and generation it names; a bare Reject is bound to the task."""

    async def test(h: Harness) -> None:
        h.create(AGENTS, bodies.agent("a", capabilities=["code"]))
        h.renew("a")
        task = h.create(TASKS, bodies.task("t", requires=["code"], approval={"required": True}))
        h.create(TASKS, bodies.task("u", requires=["code"], approval={"required": True}))
        h.create(APPROVALS, bodies.approval("ok", "t", task_uid="gone", task_generation=1))  # an earlier incarnation
        h.create(APPROVALS, bodies.approval("no", "u", "Reject"))
        await h.cycle()
        assert h.status("t")["phase"] == "AwaitingApproval"
        assert h.status("u")["phase"] == "Cancelled"
        assert h.api.get(APPROVALS, "ns", "no")["status"]["taskUID"] == h.task("u")["metadata"]["uid"]
        assert "status" not in h.api.get(APPROVALS, "ns", "ok")
        h.create(APPROVALS, bodies.approval("ok2", "t", bound=task["metadata"]["uid"], generation=1))
        await h.cycle()
        assert h.status("t")["phase"] == "Assigned"

    run(test)


def test_a_dead_agents_unclaimed_work_moves_and_claimed_work_counts() -> None:
    """Liveness from Lease changes: after the Lease's own duration without a change, work moves on."""

    async def test(h: Harness) -> None:
        for name in ("dying", "spare"):
            h.create(AGENTS, bodies.agent(name, capabilities=["code"], capacity=2))
        h.renew("dying", duration=5)
        h.renew("spare", duration=60)
        h.create(TASKS, bodies.task("unclaimed", requires=["code"], status=bodies.assigned("dying", 1)))
        claimed = bodies.assigned("dying", 1, phase="Running", execution=bodies.execution("dying", 1))
        h.create(TASKS, bodies.task("claimed", requires=["code"], status=claimed))
        await h.cycle()
        assert phases(h, ["unclaimed", "claimed"]) == {"unclaimed": "Assigned", "claimed": "Running"}
        h.advance(4)
        await h.cycle()
        assert phases(h, ["unclaimed", "claimed"]) == {"unclaimed": "Assigned", "claimed": "Running"}
        h.advance(2)
        await h.cycle()
        unclaimed, lost = h.status("unclaimed"), h.status("claimed")
        assert (unclaimed["phase"], unclaimed["conditions"][0]["reason"]) == ("Queued", "AgentNotReady")
        assert lost["conditions"][0]["reason"] == "AgentLost"
        assert lost["attempts"] == 1

    run(test)


def test_the_loop_never_decides_for_a_process_that_does_not_lead() -> None:
    """A follower cycles nothing; the writer drops anything queued once leadership is gone."""

    async def test(h: Harness) -> None:
        h.writer.may_write = lambda: False
        h.create(AGENTS, bodies.agent("a", capabilities=["code"]))
        h.renew("a")
        h.create(TASKS, bodies.task("t", requires=["code"]))
        await h.cycle()
        assert "phase" not in h.status("t")
        assert not [c for c in h.api.calls if c[0] == "PATCH"]

    run(test)


def test_the_ledger_stays_bounded_after_objects_vanish() -> None:
    """Defect 15: entries of objects deleted before their echo are dropped with the objects."""

    async def test(h: Harness) -> None:
        h.api.after.append(lambda method, _: TransportError("lost") if method == "PATCH" else None)
        h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=50))
        h.renew("a")
        for i in range(20):
            h.create(TASKS, bodies.task(f"t{i}", requires=["code"]))
        await h.cycle(echo=False)
        assert len(h.writer.ledger) >= 20
        for i in range(20):
            h.store.sink(TASKS).delete(h.task(f"t{i}"))
        assert len([e for e in h.writer.ledger.entries.values() if e.plural == TASKS]) == 0
        assert h.writer.ledger.slots(("ns", "a")) == 0

    run(test)


def test_loop_module_numbers_its_steps() -> None:
    """The cycle is documented as numbered steps, as Kueue's is."""
    assert "1. timers" in (loop_module.__doc__ or "")
    assert "6. write" in (loop_module.__doc__ or "")


def test_a_refusal_pauses_the_agent_and_the_next_attempt_gets_a_new_identity() -> None:
    """An agent that refuses for lack of room gets nothing for a pause; its refusal never matches the next attempt."""

    async def test(h: Harness) -> None:
        h.create(AGENTS, bodies.agent("a", capabilities=["code"]))
        h.renew("a", duration=600)
        h.create(TASKS, bodies.task("t", requires=["code"]))
        await h.cycle()
        body = h.task("t")
        body["status"]["execution"] = bodies.execution("a", 1, refused="OverCapacity")
        h.create(TASKS, body)
        await h.cycle()  # requeued, attempt 1 not counted
        h.sync()
        await h.cycle()
        status = h.status("t")
        assert (status["phase"], status["conditions"][0]["reason"]) == ("Queued", "NoReadyAgent")
        assert status.get("attempts", 0) == 0
        h.advance(6)
        await h.cycle()
        status = h.status("t")
        assert status["phase"] == "Assigned"
        assert status["assignment"]["attempt"] == 2  # the refused identity is never handed out again
        await h.cycle()
        assert h.status("t")["phase"] == "Assigned"  # the old refusal does not match attempt 2

    run(test)


def test_lease_renewals_alone_do_not_rewrite_the_agent_status() -> None:
    """The Lease is the heartbeat: renewals without a change of phase or load cost no status write (no echo loop)."""

    async def test(h: Harness) -> None:
        h.create(AGENTS, bodies.agent("a", capabilities=["code"]))
        h.renew("a")
        await h.cycle()
        h.sync()
        writes = sum(1 for method, path in h.api.calls if method == "PATCH" and "/agents/" in path)
        for _ in range(20):
            h.renew("a")
            h.advance(0.5)
            await h.cycle()
            h.sync()
        assert sum(1 for method, path in h.api.calls if method == "PATCH" and "/agents/" in path) == writes
        assert h.api.get(AGENTS, "ns", "a")["status"]["phase"] == "Ready"

    run(test)


@pytest.mark.parametrize("jump", [3600.0, -3600.0], ids=["forward", "backward"])
def test_a_step_of_the_operators_wall_clock_fails_nothing(jump: float) -> None:
    """Defect 6: the machine's clock jumps an hour; liveness runs on the monotonic clock, so work stays put."""

    async def test(h: Harness) -> None:
        h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=2))
        h.renew("a", duration=10)
        running = bodies.assigned("a", 1, phase="Running", execution=bodies.execution("a", 1))
        h.create(TASKS, bodies.task("busy", requires=["code"], status=running))
        await h.cycle()
        h.step_wall_clock(jump)
        h.advance(5)
        h.renew("a", duration=10)
        await h.cycle()
        h.advance(5)
        await h.cycle()
        assert h.status("busy")["phase"] == "Running"
        assert h.api.get(AGENTS, "ns", "a")["status"]["phase"] == "Ready"

    run(test)


def test_a_scheduling_pass_that_fails_is_run_again_next_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reviewer finding 5: a pass that raises must not leave its queued tasks waiting for an unrelated change."""
    real = translate.placements
    failures = [RuntimeError("a bug in one pass")]

    def placements_failing_once(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)

    async def test(h: Harness) -> None:
        monkeypatch.setattr(translate, "placements", placements_failing_once)
        h.create(AGENTS, bodies.agent("a", capabilities=["code"]))
        h.renew("a")
        h.create(TASKS, bodies.task("t", requires=["code"]))
        with pytest.raises(RuntimeError):
            await h.cycle()
        await h.cycle()  # nothing new happened in between
        assert h.status("t").get("phase") == "Assigned"

    run(test)


def test_a_refused_assignment_frees_its_slot_for_a_parked_task() -> None:
    """Reviewer finding 6: a reservation released without any store change still wakes tasks parked for room."""
    api = FakeApi()
    fired: list[str] = []

    def conflict_on_first(method: str, path: str) -> KubeError | None:
        if method == "PATCH" and "/tasks/first/" in path + "/" and not fired:
            fired.append(path)
            return ApiError(409, "Conflict", "the object has been modified")
        return None

    api.before.append(conflict_on_first)

    async def test(h: Harness) -> None:
        h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=1))
        h.renew("a")
        h.create(TASKS, bodies.task("first", requires=["code"], priority=900))
        h.create(TASKS, bodies.task("second", requires=["code"], priority=100))
        await h.cycle()
        assert fired  # the assignment of `first` was refused: nothing written, its slot is free
        assert h.status("second")["conditions"][0]["reason"] == "CapacityExhausted"
        await h.cycle()  # no clock moved, no object changed
        assert h.status("second").get("phase") == "Assigned"

    run(test, api)


def test_a_late_settling_read_never_removes_a_task_recreated_meanwhile() -> None:
    """Reviewer finding 8: the GET that settles an entry answers 404, but the watch has since seen a new Task."""
    api = FakeApi()
    api.after.append(lambda m, p: TransportError("reset") if m == "PATCH" and "/tasks/" in p else None)

    async def test(h: Harness) -> None:
        h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=1))
        h.renew("a")
        old = h.create(TASKS, bodies.task("t", uid="uid-1", requires=["code"]))
        await h.cycle(echo=False)  # the assignment landed, its answer was lost: settled by a GET later
        api.after.clear()

        def recreated_while_reading(method: str, path: str) -> KubeError | None:
            if method == "GET" and path.endswith("/tasks/t"):
                api.before.clear()
                del api.objects[(TASKS, "ns", "t")]
                h.store.sink(TASKS).delete(old)  # the watch: deleted ...
                h.create(TASKS, bodies.task("t", uid="uid-2", requires=["code"]))  # ... and created again
                return ApiError(404, "NotFound", "the GET ran between the two")
            return None

        api.before.append(recreated_while_reading)
        h.advance(5)
        await h.settle()
        assert h.store.tasks[("ns", "t")].uid == "uid-2"

    run(test, api)


def test_a_check_that_crashes_does_not_end_settling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reviewer finding 11: a bug in one settling read is logged; the entry is checked again later."""
    api = FakeApi()
    api.after.append(lambda m, p: TransportError("reset") if m == "PATCH" and "/tasks/" in p else None)
    real = StatusWriter._check
    crashes = [KeyError("metadata")]

    async def crash_once(self: StatusWriter, entry: Any) -> None:
        if crashes:
            raise crashes.pop()
        await real(self, entry)

    async def test(h: Harness) -> None:
        monkeypatch.setattr(StatusWriter, "_check", crash_once)
        h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=1))
        h.renew("a")
        h.create(TASKS, bodies.task("t", requires=["code"]))
        await h.cycle(echo=False)  # landed, answer lost: an unknown outcome, settled by reading
        api.after.clear()
        h.advance(5)
        await h.settle()  # the first read crashes: no exception escapes, the entry stays open
        assert h.writer.busy(TASKS, ("ns", "t"))
        h.advance(60)
        await h.settle()
        assert not h.writer.busy(TASKS, ("ns", "t"))

    run(test, api)


def test_a_follower_keeps_no_backlog_of_changes() -> None:
    """Reviewer finding 11: while following, the loop empties the feed (taking over looks at everything)."""

    async def test(h: Harness) -> None:
        leading = [False]
        h.kernel.leading = lambda: leading[0]
        h.kernel.tick = 0.01
        loop = asyncio.create_task(h.kernel.run())
        for i in range(50):
            h.create(TASKS, bodies.task(f"t{i}"))
            h.kernel.poke()
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)
        assert not h.store.feed.tasks
        leading[0] = True
        h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=100))
        h.renew("a")
        h.kernel.poke()
        for _ in range(200):
            await asyncio.sleep(0.01)
            if h.writer.ledger.entries or h.status("t0"):
                break
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        await h.writer.drained()
        assert all(h.status(f"t{i}").get("phase") for i in range(50))  # every task was decided on taking over

    run(test)


def test_an_unanswered_assignment_keeps_its_slot_while_it_may_still_land() -> None:
    """Reviewer finding 7: a read showing the old version does not prove a timed-out write will never land."""
    api = FakeApi()
    fired: list[str] = []

    def time_out_first(method: str, path: str) -> KubeError | None:
        if method == "PATCH" and "/tasks/" in path and not fired:
            fired.append(path)
            return TransportError("PATCH: TimeoutError")
        return None

    api.before.append(time_out_first)

    async def test(h: Harness) -> None:
        h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=1))
        h.renew("a")
        h.create(TASKS, bodies.task("first", requires=["code"], priority=100))
        await h.cycle()
        assert fired
        h.create(TASKS, bodies.task("second", requires=["code"], priority=900))  # would win the slot
        h.advance(5)
        await h.settle()  # `first` still shows the version it was decided on
        await h.cycle()
        assert h.status("second").get("phase") != "Assigned"  # the one slot may be taken by `first`'s write
        h.advance(65)
        h.renew("a")
        await h.settle()
        await h.cycle()
        assert [h.status(n).get("phase") for n in ("first", "second")].count("Assigned") == 1

    run(test, api)


def lease_reader(h: Harness, fail: list[bool] | None = None) -> Any:
    """The operator's read-back of an agent Lease, from the fake apiserver (optionally failing)."""

    async def read(key: tuple[str, str]) -> dict[str, Any] | None:
        if fail and fail[0]:
            raise TransportError("GET: timed out")
        try:
            return h.api.get(LEASES, key[0], f"qorch-agent-{key[1]}")
        except KeyError:
            return None

    return read


async def running_on_a(h: Harness) -> None:
    """Agent `a` alive (Lease of 10 s) with task `t` Running on it; one cycle run."""
    h.create(AGENTS, bodies.agent("a", capabilities=["code"]))
    h.renew("a")
    running = bodies.assigned("a", 1, phase="Running", execution=bodies.execution("a", 1))
    h.create(TASKS, bodies.task("t", requires=["code"], status=running))
    await h.cycle()
    assert h.status("t")["phase"] == "Running"


def test_a_renewal_the_watch_missed_keeps_the_agents_work() -> None:
    """Reviewer finding 3: the Lease watch is silent, the agent renews: read back, it keeps its work and status."""

    async def test(h: Harness) -> None:
        h.kernel.read_lease = lease_reader(h)
        await running_on_a(h)
        h.advance(11)
        h.api.put(LEASES, bodies.lease("a"))  # renewed in the apiserver; the watch does not say so
        await h.cycle()
        assert h.api.get(AGENTS, "ns", "a")["status"]["phase"] == "Ready"  # suspect, not NotReady
        await h.read_backs()
        await h.cycle()
        assert h.status("t")["phase"] == "Running"
        assert h.status("t")["attempts"] == 1
        assert h.api.get(AGENTS, "ns", "a")["status"]["phase"] == "Ready"  # no flap while it was checked

    run(test)


def test_a_death_is_confirmed_by_reading_the_lease_back() -> None:
    """The Lease read back unchanged: the agent is dead, its running attempt is lost."""

    async def test(h: Harness) -> None:
        h.kernel.read_lease = lease_reader(h)
        await running_on_a(h)
        h.advance(11)
        await h.cycle()
        assert h.status("t")["phase"] == "Running"  # not before the read-back
        await h.read_backs()
        await h.cycle()
        assert "AgentLost" in [entry["reason"] for entry in h.status("t").get("history", [])]

    run(test)


def test_a_lease_that_cannot_be_read_back_leaves_the_verdict_to_the_watch() -> None:
    """Reviewer: a read-back failing for two grace periods must not keep a dead agent's work forever."""

    async def test(h: Harness) -> None:
        h.kernel.read_lease = lease_reader(h, fail=[True])
        await running_on_a(h)
        h.advance(11)
        await h.cycle()
        await h.read_backs()
        await h.cycle()
        assert h.status("t")["phase"] == "Running"  # one failed read proves nothing
        h.advance(2 * h.store.policy.agent_grace_seconds + 1)
        await h.read_backs()  # the read in flight fails too, and the agent is judged again
        await h.cycle()
        assert "AgentLost" in [entry["reason"] for entry in h.status("t").get("history", [])]

    run(test)


# ---------------------------------------------------------------------------------------------- circuit breakers
def breaker_policy(threshold: int = 1, cooldown: int = 20) -> dict[str, Any]:
    """A policy whose breakers open after `threshold` failed attempts, for `cooldown` seconds."""
    return policy(breaker={"failureThreshold": threshold, "cooldownSeconds": cooldown})


def failed_on(agent: str, name: str, attempt: int = 1) -> dict[str, Any]:
    """A Task whose current attempt on `agent` ran and failed, with no attempt left (it is dead-lettered)."""
    execution = bodies.execution(agent, attempt, finished=True, error="boom")
    status = bodies.assigned(agent, attempt, phase="Running", execution=execution)
    return bodies.task(name, requires=["code"], status=status, retry={"maxAttempts": attempt})


async def open_breaker_of_a(h: Harness) -> None:
    """Agent `a` (capacity 3, Lease of 10 min) whose breaker a failed attempt just opened for 20 s."""
    h.create(POLICIES, breaker_policy())
    h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=3))
    h.renew("a", duration=600)
    h.create(TASKS, failed_on("a", "failed"))
    await h.cycle()
    assert h.status("failed")["phase"] == "DeadLettered"
    await h.cycle()  # the agent's status shows the breaker
    assert h.api.get(AGENTS, "ns", "a")["status"]["breaker"]["state"] == "Open"


def test_a_refusal_does_not_shorten_the_pause_of_an_open_breaker() -> None:
    """D3: a refusal's 5 s pause during a 20 s cool-down must not end the breaker's pause (its wake-up) early."""

    async def test(h: Harness) -> None:
        h.create(TASKS, bodies.task("refused", requires=["code"], status=bodies.assigned("a", 1)))
        await open_breaker_of_a(h)
        body = h.task("refused")
        body["status"]["execution"] = bodies.execution("a", 1, refused="OverCapacity")
        h.create(TASKS, body)
        h.create(TASKS, bodies.task("waiting", requires=["code"]))
        await h.cycle()
        await h.cycle()
        assert phases(h, ["refused", "waiting"]) == {"refused": "Queued", "waiting": "Queued"}
        h.advance(6)  # the refusal's pause is over, the breaker's is not
        await h.cycle()
        h.advance(15)  # the cool-down is over: the breaker is HalfOpen, one probe may go
        await h.cycle()
        assert list(phases(h, ["refused", "waiting"]).values()).count("Assigned") == 1

    run(test)


# ---------------------------------------------------------------------------------------------- issue 13, item 1
NO_BACKOFF = {"maxAttempts": 3, "backoffSeconds": 0, "maxBackoffSeconds": 0}


async def fail_the_attempt(h: Harness, name: str = "t") -> str:
    """The current attempt of `name` is reported failed by its agent; returns that agent."""
    body = h.task(name)
    status = body["status"]
    agent = status["assignment"]["agent"]
    status["execution"] = bodies.execution(agent, status["assignment"]["attempt"], finished=True, error="boom")
    h.create(TASKS, body)
    await h.cycle()
    await h.cycle()
    return agent


@pytest.mark.parametrize("first", ["a1", "a2"])
def test_a_retry_avoids_the_agent_that_failed_it_even_in_no_group(first: str) -> None:
    """Item 1: two equal agents in no failure domain; whichever failed attempt 1, attempt 2 goes to the other."""

    async def test(h: Harness) -> None:
        for name in ("a1", "a2"):
            h.create(AGENTS, bodies.agent(name, capabilities=["code"], capacity=5))
            h.renew(name)
        running = bodies.assigned(first, 1, phase="Running", execution=bodies.execution(first, 1))
        h.create(TASKS, bodies.task("t", requires=["code"], retry=NO_BACKOFF, status=running))
        assert await fail_the_attempt(h) == first
        status = h.status("t")
        assert (status["phase"], status["assignment"]["attempt"]) == ("Assigned", 2)
        assert status["assignment"]["agent"] != first
        assert first not in [c["agent"] for c in status["explanation"]["candidates"][:1]]

    run(test)


def test_a_leader_that_comes_back_takes_the_breakers_from_the_agents_status() -> None:
    """D1: the breakers a replica held in an earlier term give way to what another leader wrote meanwhile."""

    async def test(h: Harness) -> None:
        await open_breaker_of_a(h)
        h.advance(25)  # another leader led meanwhile: its probe succeeded, it closed the breaker
        body = h.api.get(AGENTS, "ns", "a")
        body["status"]["breaker"] = {"state": "Closed", "consecutiveFailures": 0}
        h.create(AGENTS, body)
        h.renew("a", duration=600)
        h.kernel._take_over()  # this replica leads again
        for i in range(3):
            h.create(TASKS, bodies.task(f"t{i}", requires=["code"]))
        await h.cycle()
        assert phases(h, ["t0", "t1", "t2"]) == dict.fromkeys(["t0", "t1", "t2"], "Assigned")  # not one probe

    run(test)


def test_a_retry_still_runs_on_the_agent_that_failed_it_when_no_other_can() -> None:
    """Item 1, never starve: the only capable agent, or the only one with room, gets the retry."""

    async def test(h: Harness) -> None:
        h.create(AGENTS, bodies.agent("only", capabilities=["gpu"], capacity=2))
        h.create(AGENTS, bodies.agent("full", capabilities=["code"], capacity=1))
        h.create(AGENTS, bodies.agent("roomy", capabilities=["code"], capacity=2))
        for name in ("only", "full", "roomy"):
            h.renew(name)
        alone = bodies.assigned("only", 1, phase="Running", execution=bodies.execution("only", 1))
        h.create(TASKS, bodies.task("alone", requires=["gpu"], retry=NO_BACKOFF, status=alone))
        # `full` is busy with another task: the retry of a task that failed on `roomy` has nowhere else to go.
        h.create(TASKS, bodies.task("busy", requires=["code"], status=bodies.assigned("full", 1, phase="Running")))
        crowded = bodies.assigned("roomy", 1, phase="Running", execution=bodies.execution("roomy", 1))
        h.create(TASKS, bodies.task("crowded", requires=["code"], retry=NO_BACKOFF, status=crowded))
        await fail_the_attempt(h, "alone")
        await fail_the_attempt(h, "crowded")
        for name, agent in (("alone", "only"), ("crowded", "roomy")):
            status = h.status(name)
            assert (status["phase"], status["assignment"]["attempt"]) == ("Assigned", 2), status
            assert status["assignment"]["agent"] == agent

    run(test)


def test_an_open_breaker_taken_from_the_agents_status_is_counted_and_its_end_wakes_tasks() -> None:
    """D2: a new leader holds an inherited Open breaker: qorch_breakers counts it, its cool-down's end wakes tasks."""

    async def test(h: Harness) -> None:
        body = bodies.agent("a", capabilities=["code"])
        until = documents.stamp(WALL0 + 20)
        body["status"] = {"breaker": {"state": "Open", "consecutiveFailures": 5, "openUntil": until}}
        h.create(AGENTS, body)
        h.renew("a", duration=600)
        h.create(TASKS, bodies.task("t", requires=["code"]))
        await h.cycle()
        assert (h.status("t")["phase"], h.status("t")["conditions"][0]["reason"]) == ("Queued", "NoReadyAgent")
        assert metrics.BREAKERS.labels("Open")._value.get() == 1
        h.advance(21)  # nothing else happens: the cool-down's own timer wakes the task
        await h.cycle()
        assert h.status("t")["phase"] == "Assigned"

    run(test)


def test_an_agent_recreated_under_the_same_name_does_not_inherit_the_old_breaker() -> None:
    """D4: breakers belong to one Agent incarnation (uid): a new Agent named like an old one starts Closed."""

    async def test(h: Harness) -> None:
        await open_breaker_of_a(h)
        old = h.api.get(AGENTS, "ns", "a")
        del h.api.objects[(AGENTS, "ns", "a")]
        h.store.sink(AGENTS).delete(old)
        h.create(AGENTS, bodies.agent("a", uid="uid-a-2", capabilities=["code"], capacity=3))
        for i in range(3):
            h.create(TASKS, bodies.task(f"t{i}", requires=["code"]))
        await h.cycle()
        assert phases(h, ["t0", "t1", "t2"]) == dict.fromkeys(["t0", "t1", "t2"], "Assigned")
        await h.cycle()
        assert "breaker" not in h.api.get(AGENTS, "ns", "a")["status"]

    run(test)


def test_the_end_of_a_cool_down_is_an_event() -> None:
    """Open turns HalfOpen with the cool-down's timer: an Event BreakerHalfOpen and a transition counted."""

    async def test(h: Harness) -> None:
        counted = metrics.BREAKER_TRANSITIONS.labels("HalfOpen")._value.get()
        await open_breaker_of_a(h)
        assert h.events.reasons().count("BreakerOpen") == 1
        h.advance(21)
        await h.cycle()
        await h.cycle()
        assert h.events.reasons().count("BreakerHalfOpen") == 1
        assert metrics.BREAKER_TRANSITIONS.labels("HalfOpen")._value.get() == counted + 1
        assert h.api.get(AGENTS, "ns", "a")["status"]["breaker"]["state"] == "HalfOpen"

    run(test)


def test_a_failure_counted_by_a_breaker_is_written_to_the_agent_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """D5: the Agent status write that carries a breaker's new count goes with the urgent writes, not after them."""
    submitted: list[Write] = []
    real = StatusWriter.submit

    def spy(self: StatusWriter, write: Write) -> bool:
        submitted.append(write)
        return real(self, write)

    async def test(h: Harness) -> None:
        monkeypatch.setattr(StatusWriter, "submit", spy)
        h.create(POLICIES, breaker_policy(threshold=3))
        h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=3))
        h.renew("a", duration=600)
        await h.cycle()
        submitted.clear()
        h.create(TASKS, failed_on("a", "failed"))
        await h.cycle()
        await h.cycle()
        counting = [w for w in submitted if w.key == ("ns", "a") and "breaker" in w.render()["status"]]
        assert [w.render()["status"]["breaker"]["consecutiveFailures"] for w in counting] == [1]
        assert counting[0].urgent

    run(test)


# ---------------------------------------------------------------------------------------------- dependencies
def count_lookups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the gate's calls of its `dependency` callable (direct dependencies and cycle searches)."""
    lookups = [0]
    real = gate.gate

    def counting(task: Any, **kwargs: Any) -> gate.Verdict:
        dependency = kwargs["dependency"]

        def counted(name: str) -> Any:
            lookups[0] += 1
            return dependency(name)

        return real(task, **{**kwargs, "dependency": counted})

    monkeypatch.setattr(gate, "gate", counting)
    return lookups


def test_a_long_chain_is_not_searched_again_for_every_status_that_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """D6: 1,000 tasks in a chain, their Blocked statuses echoed ten at a time: lookups grow with the chain, once."""
    lookups = count_lookups(monkeypatch)
    n = 1000

    async def test(h: Harness) -> None:
        for i in range(n):
            h.create(TASKS, bodies.task(f"t{i}", dependsOn=[f"t{i - 1}"] if i else []))
        await h.cycle(echo=False)
        for i in range(0, n, 10):  # the watch brings the statuses back a few at a time
            for j in range(i, i + 10):
                h.store.sink(TASKS).upsert(h.task(f"t{j}"))
            await h.cycle(echo=False)
        assert all(h.status(f"t{i}")["phase"] == "Blocked" for i in range(1, n))
        assert lookups[0] <= 6 * n

    run(test)


def reasons(h: Harness, names: list[str]) -> dict[str, str]:
    """The Scheduled condition's reason of some tasks, as the apiserver holds them."""
    return {n: h.status(n)["conditions"][0]["reason"] for n in names}


def test_a_cycle_closed_or_broken_at_one_task_is_told_on_every_member() -> None:
    """D8: x1 -> x2 -> x3 wait; x3 is edited to depend on x1, later back: all three say so, not only x3 and x2."""
    members = ["x1", "x2", "x3"]

    async def rewire(h: Harness, depends_on: list[str]) -> None:
        body = h.task("x3")
        body["spec"]["dependsOn"] = depends_on
        h.create(TASKS, body)
        for _ in range(3):
            await h.cycle()

    async def test(h: Harness) -> None:
        h.create(TASKS, bodies.task("x1", dependsOn=["x2"]))
        h.create(TASKS, bodies.task("x2", dependsOn=["x3"]))
        h.create(TASKS, bodies.task("x3", dependsOn=["missing"]))
        await h.cycle()
        await h.cycle()
        assert reasons(h, members) == dict.fromkeys(members, "DependencyPending")
        await rewire(h, ["x1"])
        assert reasons(h, members) == dict.fromkeys(members, "DependencyCycle")
        assert "x1 -> x2 -> x3 -> x1" in h.status("x1")["conditions"][0]["message"]
        await rewire(h, ["missing"])
        assert reasons(h, members) == dict.fromkeys(members, "DependencyPending")

    run(test)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(ApiError(500, "InternalError", "etcdserver: request timed out"), id="500"),
        pytest.param(ApiError(409, "Conflict", "the object has been modified"), id="409"),
    ],
)
def test_writes_that_keep_failing_back_off_exponentially_and_a_success_resets(error: ApiError) -> None:
    """Item 1: an apiserver that refuses every write of one task is asked ever more rarely, never in a hot loop.

    Simulated time only: 300 s in steps of half a second, the attempts counted and timed on the
    harness's clock. Without the backoff the same run makes one write per settling (a second or
    five); with it the gaps double up to a minute. Once writes land again the count starts over.
    """
    api = FakeApi()
    failing = [True]
    sent: list[float] = []
    clock: list[list[float]] = []

    def refuse(method: str, path: str) -> ApiError | None:
        if method == "PATCH" and path.endswith("/tasks/t/status"):
            sent.append(clock[0][0])
            return error if failing[0] else None
        return None

    api.before.append(refuse)

    async def test(h: Harness) -> None:
        clock.append(h.now)
        h.create(AGENTS, bodies.agent("a", capabilities=["code"]))
        h.renew("a")
        done = bodies.assigned("a", 1, phase="Running", execution=bodies.execution("a", 1, finished=True))
        h.create(TASKS, bodies.task("t", requires=["code"], status=done))
        start = h.now[0]
        while h.now[0] - start < 300:
            await h.cycle()
            await h.settle()
            h.advance(0.5)
            h.renew("a")
        assert h.status("t")["phase"] == "Running"  # nothing landed
        gaps = [b - a for a, b in itertools.pairwise(sent)]
        assert 8 <= len(sent) <= 20, gaps  # ~60 (409: one per 5 s hold) or ~200 (500) without the backoff
        assert max(gaps) <= writes.CAP + 6  # bounded: the cap, plus settling and the half-second steps
        assert min(gaps[-3:]) >= writes.CAP / 2  # and it got there
        for n, gap in enumerate(gaps[1:], start=2):  # after failure n (n >= 2) at least half the doubled delay
            assert gap >= 0.5 * min(writes.CAP, writes.BASE * 2.0 ** (n - 2)), (n, gaps)
        assert h.writer.failures(TASKS, ("ns", "t")) == len(sent)
        failing[0] = False
        h.advance(writes.CAP)
        await h.settle()
        await h.cycle()
        assert h.status("t")["phase"] == "Succeeded"
        assert h.writer.failures(TASKS, ("ns", "t")) == 0  # reset by the write that landed
        assert not h.writer.backing_off(TASKS, ("ns", "t"))

    run(test, api)


def test_a_failed_write_long_ago_is_no_repeat_and_old_counts_are_swept() -> None:
    """Review defect: a conflict minutes after an earlier one starts the count afresh (no backoff at once)."""
    now = [0.0]
    store = ClusterState(clock=lambda: now[0])
    status_writer = StatusWriter(FakeApi(), store, may_write=lambda: True, clock=lambda: now[0])  # type: ignore[arg-type]
    key = ("ns", "t")
    status_writer._count(TASKS, key, Outcome.CONFLICT, now[0])
    now[0] = 600.0
    status_writer._count(TASKS, key, Outcome.CONFLICT, now[0])
    assert status_writer.failures(TASKS, key) == 1
    assert not status_writer.backing_off(TASKS, key)
    status_writer._count(TASKS, key, Outcome.CONFLICT, now[0])  # a repeat now: it backs off
    assert status_writer.backing_off(TASKS, key)


def backed_off_while_it_changed(
    change: Callable[[Harness], None], then: Callable[[Harness], Coroutine[Any, Any, None]]
) -> None:
    """Task t waits for a's only slot; its writes back off (409s); `change` moves it on meanwhile; x ends, freeing a.

    The backoff ends before the writer's settling retouches t, and a new hopeless task starts a
    scheduling pass: the pass meets a version of t the rules have not judged. `then` checks.
    """
    api = FakeApi()
    refusing = [True]

    def conflict(method: str, path: str) -> ApiError | None:
        if refusing[0] and method == "PATCH" and path.endswith("/tasks/t/status"):
            return ApiError(409, "Conflict", "the object has been modified")
        return None

    api.before.append(conflict)

    async def test(h: Harness) -> None:
        h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=1))
        h.renew("a")
        running = bodies.assigned("a", 1, phase="Running", execution=bodies.execution("a", 1))
        h.create(TASKS, bodies.task("x", requires=["code"], status=running))
        h.create(TASKS, bodies.task("t", requires=["code"]))
        for i in range(40):  # t waits for room; writing that it waits keeps failing
            await h.cycle()
            await h.settle()
            if h.writer.backing_off(TASKS, ("ns", "t")):
                break
            h.advance(1.0)
            h.renew("a")
            agent = bodies.agent("a", capabilities=["code"], capacity=1)
            h.create(AGENTS, {**agent, "metadata": {**agent["metadata"], "labels": {"touched": str(i)}}})  # wakes t
        assert h.writer.backing_off(TASKS, ("ns", "t"))
        change(h)
        await h.cycle()  # seen while backing off: the rules are not run on it
        refusing[0] = False
        h.advance(writes.CAP + 1)
        h.renew("a")
        h.create(TASKS, {**h.task("x"), "status": {**running, "execution": bodies.execution("a", 1, finished=True)}})
        h.create(TASKS, bodies.task("u", requires=["gpu"]))  # any new task starts a scheduling pass
        await h.cycle()  # x's end frees a's slot, before settling retouches t
        await then(h)

    run(test, api)


def test_a_task_that_ended_while_its_writes_backed_off_is_never_assigned_again() -> None:
    """CI failure under split brain: a parked task's writes backed off while another leader ran it to the end.

    The rules never saw its later versions (a backing-off task is not decided), a freed slot
    woke it, and the next scheduling pass assigned it with the Succeeded version's
    resourceVersion: compare-and-set let a second attempt of a finished task land. A pass
    may only use the version the rules last judged.
    """
    done = bodies.assigned("b", 1, phase="Succeeded", execution=bodies.execution("b", 1, finished=True))

    def ended_elsewhere(h: Harness) -> None:
        h.create(TASKS, {**h.task("t"), "status": done})  # the other leader placed t elsewhere, and it ended

    async def then(h: Harness) -> None:
        await h.settle()
        await h.cycle()
        assert h.status("t")["phase"] == "Succeeded"
        assert h.status("t")["assignment"] == done["assignment"]

    backed_off_while_it_changed(ended_elsewhere, then)


def test_a_task_edited_while_its_writes_backed_off_is_judged_and_placed_without_another_event() -> None:
    """Review: the pass that skipped t's unjudged version must not leave it waiting for some unrelated event."""

    def edited(h: Harness) -> None:
        body = h.task("t")
        h.create(TASKS, {**body, "spec": {**body["spec"], "priority": 900}})  # still waiting, a new version

    async def then(h: Harness) -> None:
        for _ in range(3):  # nothing else happens: no agent, task or clock change
            await h.cycle()
        assert h.status("t")["assignment"]["agent"] == "a"

    backed_off_while_it_changed(edited, then)


def test_two_unanswered_writes_of_one_task_are_both_watched_for() -> None:
    """Review: W1's answer is lost and a read shows it not landed; W2 (decided on the same version) is lost too.

    W1 lands late. Before, W2's doubt replaced W1's, so W1's landing was never reported
    (no audit entry, no breaker count). Only the write whose entry the version carries hears it.
    """
    store = ClusterState(clock=lambda: 0.0)
    writer = StatusWriter(FakeApi(), store, may_write=lambda: True, clock=lambda: 0.0)  # type: ignore[arg-type]
    heard: dict[str, list[Outcome]] = {"w1": [], "w2": []}
    writes_ = {}
    for name in ("w1", "w2"):
        entry = {"time": f"2026-12-03T13:00:0{name[-1]}.000000Z", "phase": "Assigned", "attempt": 1}
        write = Write(loop_module.TASK_RESOURCE, ("ns", "t"), "5", [], done=heard[name].append)
        write.sent = [{"op": "add", "path": "/status/history/-", "value": entry}]
        writer._watch_for(write)
        writer._answered(write, Outcome.UNKNOWN)
        writes_[name] = entry
    landed = bodies.task("t", status={"phase": "Assigned", "history": [writes_["w1"]]})
    landed["metadata"]["resourceVersion"] = "6"
    store.sink(TASKS).upsert(landed)
    assert heard == {"w1": [Outcome.WRITTEN], "w2": []}
    assert writer._doubtful == {}  # a newer version without its entry: w2 can never land now


def test_a_bare_reject_after_the_gate_is_bound_to_that_task_and_spares_the_next_one() -> None:
    """Review: a Reject made while the task runs stayed unbound and cancelled the next task of that name."""

    async def test(h: Harness) -> None:
        h.create(AGENTS, bodies.agent("a", capabilities=["code"]))
        h.renew("a")
        running = bodies.assigned("a", 1, phase="Running", execution=bodies.execution("a", 1))
        first = h.create(TASKS, bodies.task("t", uid="uid-1", requires=["code"], approval={"required": True},
                                            status=running))  # fmt: skip
        h.create(APPROVALS, bodies.approval("no", "t", "Reject"))
        await h.cycle()
        assert h.api.get(APPROVALS, "ns", "no")["status"]["taskUID"] == first["metadata"]["uid"]
        assert h.status("t")["phase"] == "Running"  # past the gate: the attempt goes on (docs/api.md)
        del h.api.objects[(TASKS, "ns", "t")]
        h.store.sink(TASKS).delete(first)
        h.create(TASKS, bodies.task("t", uid="uid-2", requires=["code"], approval={"required": True}))
        await h.cycle()
        await h.cycle()
        assert h.status("t")["phase"] == "AwaitingApproval"  # not Cancelled by the old incarnation's Reject

    run(test)


def test_a_json_patch_that_no_longer_applies_is_a_conflict_not_a_refusal(caplog: pytest.LogCaptureFixture) -> None:
    """Cold start at full size: `remove /status/nextAttemptAt` on a task changed meanwhile got 422, logged as an error.

    The apiserver applies the operations before it checks the resourceVersion, so a stale
    decision whose `remove` no longer applies answers 422. When the store already holds a
    newer version, that is a conflict: decided again, no error logged.
    """
    api = FakeApi()
    harnesses: list[Harness] = []

    def moved_then_invalid(method: str, path: str) -> ApiError | None:
        if method == "PATCH" and path.endswith("/tasks/t/status") and harnesses:
            h = harnesses.pop()
            body = h.task("t")
            h.create(TASKS, {**body, "spec": {**body["spec"], "priority": 900}})  # changed meanwhile, seen
            return ApiError(422, "Unprocessable Entity", "the server rejected our request due to an error")
        return None

    api.before.append(moved_then_invalid)

    async def test(h: Harness) -> None:
        harnesses.append(h)
        h.create(AGENTS, bodies.agent("a", capabilities=["code"]))
        h.renew("a")
        h.create(TASKS, bodies.task("t", requires=["code"]))
        with caplog.at_level("ERROR", logger="qorch.controller.writer"):
            await h.cycle()
        assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []
        await h.cycle()
        assert h.status("t")["phase"] == "Assigned"  # decided again on the version it was changed to

    run(test, api)
