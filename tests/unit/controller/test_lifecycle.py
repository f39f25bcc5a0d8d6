"""The lifecycle rules, as pure functions of records and time: gate, progress, liveness, retry."""

from __future__ import annotations

import pytest

from qorch.api.enums import BreakerState, Reason, TaskPhase
from qorch.controller.breakers import Breakers
from qorch.controller.lifecycle import breaker, cancel, gate, liveness, progress, redrive, retry, writes
from qorch.controller.lifecycle.liveness import Liveness
from qorch.controller.records import AgentRecord, ApprovalRecord, LeaseRecord, Retry, TaskRecord
from support import bodies

NOW = 1_800_000_000.0
RETRY = Retry(max_attempts=3, backoff_seconds=10, max_backoff_seconds=300)


def record(body: dict) -> TaskRecord:
    """The record of a body."""
    return TaskRecord.of(body)


def approvals(*items: dict) -> list[ApprovalRecord]:
    """Records of Approval bodies."""
    return [ApprovalRecord.of(a) for a in items]


# ---------------------------------------------------------------------------------------------- gate
def test_an_approval_bound_to_the_task_lets_it_through() -> None:
    """Approve, bound to this incarnation's uid: the gate passes."""
    task = record(bodies.task("t", approval={"required": True}))
    verdict = gate.gate(task, approvals=approvals(bodies.approval("a", "t", bound=task.uid)), dependency=lambda _: None)
    assert verdict.change is None
    assert verdict.bind == ()


def test_a_recreated_task_does_not_inherit_an_old_approval() -> None:
    """An Approval bound to an earlier incarnation (another uid) does not count; the task waits."""
    task = record(bodies.task("t", uid="new", approval={"required": True}))
    verdict = gate.gate(task, approvals=approvals(bodies.approval("a", "t", bound="old")), dependency=lambda _: None)
    assert verdict.change is not None
    assert verdict.change.phase is TaskPhase.AWAITING_APPROVAL
    assert verdict.bind == ()  # already bound elsewhere: never re-bound


def test_an_approve_naming_no_incarnation_never_counts_and_is_never_bound() -> None:
    """Review finding C: the operator cannot know which generation the approver saw, so it binds no Approve.

    (The CRD refuses such an Approve; one stored before that rule, or with the status an older
    operator wrote, must not count either: an edit made before the binding would run approved.)
    """
    task = record(bodies.task("t", uid="u1", approval={"required": True}))
    unnamed = bodies.approval("a", "t")
    unnamed["status"] = {"taskUID": "u1", "taskGeneration": task.generation}  # what an older operator wrote
    for made in (bodies.approval("a", "t"), unnamed, bodies.approval("a", "t", task_uid="u1")):
        verdict = gate.gate(task, approvals=approvals(made), dependency=lambda _: None)
        assert verdict.change is not None
        assert verdict.change.phase is TaskPhase.AWAITING_APPROVAL
        assert verdict.bind == ()


def test_a_spec_task_uid_and_generation_count_at_once() -> None:
    """spec.taskUID and spec.taskGeneration (what `qorch approve` sets) count without a binding."""
    task = record(bodies.task("t", uid="u1", approval={"required": True}))
    made = bodies.approval("a", "t", task_uid="u1", task_generation=task.generation)
    verdict = gate.gate(task, approvals=approvals(made), dependency=lambda _: None)
    assert verdict.change is None
    assert verdict.bind == ()


def test_a_reject_naming_no_incarnation_counts_at_once_and_is_bound() -> None:
    """Review finding D: a hand-written Reject cancels the task it meets without waiting for its binding."""
    task = record(bodies.task("t", uid="u1", approval={"required": True}))
    ok = bodies.approval("ok", "t", bound="u1", generation=task.generation)
    verdict = gate.gate(task, approvals=approvals(ok, bodies.approval("no", "t", "Reject")), dependency=lambda _: None)
    assert verdict.change is not None
    assert (verdict.change.phase, verdict.change.reason) == (TaskPhase.CANCELLED, Reason.APPROVAL_REJECTED)
    assert [a.name for a in verdict.bind] == ["no"]


def test_an_approval_of_an_older_generation_does_not_count() -> None:
    """Editing the task after approval needs a new approval; the task says which approval went stale and why."""
    body = bodies.task("t", approval={"required": True})
    body["metadata"]["generation"] = 3
    task = record(body)
    verdict = gate.gate(
        task, approvals=approvals(bodies.approval("ok", "t", bound=task.uid)), dependency=lambda _: None
    )
    assert verdict.change is not None
    assert verdict.change.phase is TaskPhase.AWAITING_APPROVAL
    assert "Approval ok approved generation 1" in verdict.change.message
    assert "generation 3" in verdict.change.message
    again = approvals(
        bodies.approval("ok", "t", bound=task.uid), bodies.approval("ok2", "t", bound=task.uid, generation=3)
    )
    assert gate.gate(task, approvals=again, dependency=lambda _: None).change is None


def test_an_approval_for_another_incarnation_is_not_bound_again() -> None:
    """An Approval whose spec names an older uid is never bound to the new task (no pointless write)."""
    task = record(bodies.task("t", uid="new", approval={"required": True}))
    verdict = gate.gate(task, approvals=approvals(bodies.approval("a", "t", task_uid="old")), dependency=lambda _: None)
    assert verdict.bind == ()


@pytest.mark.parametrize("order", [("Approve", "Reject"), ("Reject", "Approve")], ids=["approve-first", "reject-first"])
def test_a_rejection_wins_over_any_approval(order: tuple[str, str]) -> None:
    """With an Approve and a Reject bound to the task, it is cancelled whichever came last, at any generation."""
    body = bodies.task("t", approval={"required": True})
    body["metadata"]["generation"] = 2
    task = record(body)
    found = approvals(
        *(bodies.approval(f"a{i}", "t", d, bound=task.uid, generation=i + 1) for i, d in enumerate(order))
    )
    verdict = gate.gate(task, approvals=found, dependency=lambda _: None)
    assert verdict.change is not None
    assert (verdict.change.phase, verdict.change.reason) == (TaskPhase.CANCELLED, Reason.APPROVAL_REJECTED)


@pytest.mark.parametrize(
    ("dep_phase", "phase", "reason"),
    [
        pytest.param(None, TaskPhase.BLOCKED, Reason.DEPENDENCY_PENDING, id="missing"),
        pytest.param("Running", TaskPhase.BLOCKED, Reason.DEPENDENCY_PENDING, id="running"),
        pytest.param("Failed", TaskPhase.FAILED, Reason.DEPENDENCY_FAILED, id="failed"),
        pytest.param("DeadLettered", TaskPhase.FAILED, Reason.DEPENDENCY_FAILED, id="dead-lettered"),
        pytest.param("Cancelled", TaskPhase.FAILED, Reason.DEPENDENCY_FAILED, id="cancelled"),
    ],
)
def test_dependencies_hold_or_fail_the_task(dep_phase: str | None, phase: TaskPhase, reason: Reason) -> None:
    """A task waits in Blocked while its dependency may still succeed, and fails once it never can."""
    task = record(bodies.task("t", dependsOn=["d"]))
    dep = None if dep_phase is None else record(bodies.task("d", status={"phase": dep_phase}))
    verdict = gate.gate(task, approvals=[], dependency=lambda _: dep)
    assert verdict.change is not None
    assert (verdict.change.phase, verdict.change.reason) == (phase, reason)


def test_a_failure_anywhere_wins_over_a_dependency_still_missing() -> None:
    """Two dependencies, one missing and one failed: the task fails now rather than wait for nothing."""
    task = record(bodies.task("t", dependsOn=["later", "broken"]))
    failed = record(bodies.task("broken", status={"phase": "Failed"}))
    verdict = gate.gate(task, approvals=[], dependency=lambda name: failed if name == "broken" else None)
    assert verdict.change is not None
    assert verdict.change.phase is TaskPhase.FAILED
    assert "dependency broken ended Failed" in verdict.change.message


def test_a_cycle_is_named_on_the_task() -> None:
    """a -> b -> c -> a: each is held with reason DependencyCycle and the cycle in its message."""
    graph = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}
    tasks = {n: record(bodies.task(n, dependsOn=deps, status={"phase": "Blocked"})) for n, deps in graph.items()}
    messages = {}
    for name in ("a", "b", "c"):
        verdict = gate.gate(tasks[name], approvals=[], dependency=tasks.get)
        assert verdict.change is not None
        assert verdict.change.reason is Reason.DEPENDENCY_CYCLE
        messages[name] = verdict.change.message
    assert "a -> b -> c -> a" in messages["a"]
    assert "b -> c -> a -> b" in messages["b"]
    outside = gate.gate(tasks["d"], approvals=[], dependency=tasks.get).change
    assert outside is not None
    assert outside.reason is Reason.DEPENDENCY_PENDING  # waits on a cycle, is not in one


def test_a_long_chain_is_not_a_cycle() -> None:
    """A chain of 3,000 waiting tasks: no cycle, just waiting (and the search is bounded)."""
    tasks = {f"t{i}": record(bodies.task(f"t{i}", dependsOn=[f"t{i - 1}"] if i else [], status={"phase": "Blocked"}))
             for i in range(3000)}  # fmt: skip
    assert gate.cycle(tasks["t2999"], tasks.get) == []


@pytest.mark.parametrize("order", ["head-first", "tail-first"])
def test_a_long_chain_gated_in_one_pass_costs_a_walk_down_it_not_one_per_task(order: str) -> None:
    """D6: 1,000 waiting tasks in a chain, each gated (with a search) in one pass: a few lookups per task."""
    n = 1000
    tasks = {f"t{i}": record(bodies.task(f"t{i}", dependsOn=[f"t{i - 1}"] if i else [], status={"phase": "Blocked"}))
             for i in range(n)}  # fmt: skip
    lookups = [0]

    def dependency(name: str) -> TaskRecord | None:
        lookups[0] += 1
        return tasks.get(name)

    walks = gate.Walks()
    names = [f"t{i}" for i in range(n)]
    for name in names if order == "head-first" else reversed(names):
        verdict = gate.gate(tasks[name], approvals=[], dependency=dependency, walks=walks)
        assert verdict.change is None or verdict.change.reason is Reason.DEPENDENCY_PENDING
    assert lookups[0] <= 3 * n


def test_a_cycle_found_once_names_every_member_without_walking_it_again() -> None:
    """Within one pass the members of a cycle found are named from what the first walk learned."""
    graph = {f"c{i}": [f"c{(i + 1) % 500}"] for i in range(500)}
    tasks = {n: record(bodies.task(n, dependsOn=deps, status={"phase": "Blocked"})) for n, deps in graph.items()}
    lookups = [0]

    def dependency(name: str) -> TaskRecord | None:
        lookups[0] += 1
        return tasks.get(name)

    walks = gate.Walks()
    for name in graph:
        verdict = gate.gate(tasks[name], approvals=[], dependency=dependency, walks=walks)
        assert verdict.change is not None
        assert verdict.change.reason is Reason.DEPENDENCY_CYCLE
        assert verdict.cycle[0] == verdict.cycle[-1] == name
        assert len(verdict.cycle) == 501
    assert lookups[0] <= 3 * len(graph)


def test_succeeded_dependencies_let_the_task_through() -> None:
    """All dependencies Succeeded: no hold."""
    task = record(bodies.task("t", dependsOn=["d"]))
    dep = record(bodies.task("d", status={"phase": "Succeeded"}))
    assert gate.gate(task, approvals=[], dependency=lambda _: dep).change is None


# ---------------------------------------------------------------------------------------------- progress
def run(status: dict, alive: Liveness = Liveness.ALIVE, *, retry_policy: Retry = RETRY):
    """progress() for a task with this status."""
    return progress.progress(record(bodies.task("t", status=status)), liveness=alive, retry=retry_policy, now=NOW)


def test_a_claim_moves_the_task_to_running_and_counts_the_attempt() -> None:
    """The agent's claim of the current attempt: Running, attempts = that attempt."""
    change = run(bodies.assigned("a", 2, execution=bodies.execution("a", 2)))
    assert change is not None
    assert change.phase is TaskPhase.RUNNING
    assert change.fields["attempts"] == 2


def test_a_finish_seen_before_the_claim_still_counts_the_attempt() -> None:
    """Defect 5: claim and failure first seen together (still Assigned) count the attempt, so retries end."""
    status = bodies.assigned("a", 3, execution=bodies.execution("a", 3, finished=True, error="boom"))
    change = run(status)
    assert change is not None
    assert change.fields["attempts"] == 3
    assert (change.phase, change.reason) == (TaskPhase.DEAD_LETTERED, Reason.ATTEMPTS_EXHAUSTED)


def test_a_failed_attempt_retries_after_a_backoff() -> None:
    """Attempt 1 of 3 fails: Retrying with nextAttemptAt in the future, the failing agent recorded."""
    change = run(bodies.assigned("a", 1, phase="Running", execution=bodies.execution("a", 1, finished=True, error="x")))
    assert change is not None
    assert change.phase is TaskPhase.RETRYING
    assert change.reason is Reason.ATTEMPT_FAILED
    assert change.agent == "a"
    assert "nextAttemptAt" in change.fields
    assert "assignment" in change.remove


def test_a_zero_backoff_retries_at_once() -> None:
    """backoffSeconds 0: straight back to Queued (retries within the same second)."""
    policy = Retry(max_attempts=5, backoff_seconds=0, max_backoff_seconds=0)
    status = bodies.assigned("a", 1, phase="Running", execution=bodies.execution("a", 1, finished=True, error="x"))
    change = run(status, retry_policy=policy)
    assert change is not None
    assert change.phase is TaskPhase.QUEUED
    assert "nextAttemptAt" not in change.fields


def test_success_ends_the_task() -> None:
    """A finish without error: Succeeded."""
    change = run(bodies.assigned("a", 1, phase="Running", execution=bodies.execution("a", 1, finished=True)))
    assert change is not None
    assert change.phase is TaskPhase.SUCCEEDED


def test_a_refusal_requeues_without_using_an_attempt() -> None:
    """The agent declined (over capacity): back to Queued, attempts unchanged."""
    change = run(bodies.assigned("a", 2, execution=bodies.execution("a", 2, refused="OverCapacity")))
    assert change is not None
    assert (change.phase, change.reason) == (TaskPhase.QUEUED, Reason.AGENT_REFUSED)
    assert "attempts" not in change.fields


@pytest.mark.parametrize(
    "report",
    [
        pytest.param(bodies.execution("a", 1, finished=True), id="previous-attempt"),
        pytest.param(bodies.execution("zombie", 2, finished=True), id="other-agent"),
    ],
)
def test_a_report_about_another_attempt_changes_nothing(report: dict) -> None:
    """Defect 4: a late finish of attempt 1, or one by another agent, does not end attempt 2."""
    assert run(bodies.assigned("a", 2, execution=report)) is None
    assert run(bodies.assigned("a", 2, phase="Running", execution=report)) is None


def test_a_dead_agent_gives_back_an_unclaimed_attempt_for_free() -> None:
    """Agent dead before claiming: Queued with AgentNotReady, attempts unchanged."""
    change = run(bodies.assigned("a", 1), Liveness.DEAD)
    assert change is not None
    assert (change.phase, change.reason) == (TaskPhase.QUEUED, Reason.AGENT_NOT_READY)
    assert "attempts" not in change.fields


def test_a_dead_agent_loses_a_claimed_attempt() -> None:
    """Agent dead while running: the attempt counts as failed (AgentLost)."""
    change = run(bodies.assigned("a", 1, phase="Running", execution=bodies.execution("a", 1)), Liveness.DEAD)
    assert change is not None
    assert (change.phase, change.reason) == (TaskPhase.RETRYING, Reason.AGENT_LOST)
    assert change.fields["attempts"] == 1


@pytest.mark.parametrize("alive", [Liveness.ALIVE, Liveness.UNKNOWN], ids=["alive", "unknown"])
def test_a_live_or_unknown_agent_keeps_its_work(alive: Liveness) -> None:
    """Only a dead agent loses work; right after start-up (unknown) nothing is taken away."""
    assert run(bodies.assigned("a", 1), alive) is None
    assert run(bodies.assigned("a", 1, phase="Running", execution=bodies.execution("a", 1)), alive) is None


# ---------------------------------------------------------------------------------------------- liveness
def lease(observed_at: float, duration: float | None = 10, holder: str = "a") -> LeaseRecord:
    """A Lease record observed at `observed_at`."""
    return LeaseRecord("ns", "a", "1", holder, duration, "2020-01-01T00:00:00Z", observed_at)


@pytest.mark.parametrize(
    ("observed", "duration", "now", "expected"),
    [
        pytest.param(100.0, 10, 109.0, Liveness.ALIVE, id="within-duration"),
        pytest.param(100.0, 10, 111.0, Liveness.DEAD, id="past-duration"),
        pytest.param(100.0, 3600, 1000.0, Liveness.ALIVE, id="long-lease-honoured"),
        pytest.param(100.0, None, 125.0, Liveness.ALIVE, id="grace-when-unset"),
        pytest.param(100.0, None, 131.0, Liveness.DEAD, id="grace-expired"),
    ],
)
def test_liveness_uses_the_leases_own_duration_on_our_clock(
    observed: float, duration: float | None, now: float, expected: Liveness
) -> None:
    """Defect 6: judged from when we saw the Lease change, against its leaseDurationSeconds (grace 30 s)."""
    assert liveness.judge(lease(observed, duration), now=now, grace=30, watching_since=0) is expected


def test_a_released_lease_means_dead_at_once() -> None:
    """holderIdentity cleared on a clean shutdown: dead without waiting."""
    assert liveness.judge(lease(100.0, holder=""), now=100.5, grace=30, watching_since=0) is Liveness.DEAD


def test_no_lease_is_unknown_for_one_grace_after_watching_starts() -> None:
    """Defect 11: right after start-up a missing Lease is not yet a dead agent."""
    assert liveness.judge(None, now=110, grace=30, watching_since=100) is Liveness.UNKNOWN
    assert liveness.judge(None, now=131, grace=30, watching_since=100) is Liveness.DEAD


def test_next_change_is_when_the_lease_runs_out() -> None:
    """The loop's timer for an agent: observed + duration."""
    assert liveness.next_change(lease(100.0, 10), grace=30, watching_since=0) == 110.0
    assert liveness.next_change(None, grace=30, watching_since=50) == 80.0


# ---------------------------------------------------------------------------------------------- retry
def test_backoff_doubles_up_to_the_cap_with_bounded_jitter() -> None:
    """Equal jitter: between half and all of backoff * 2^(n-1), never above maxBackoffSeconds."""
    policy = Retry(max_attempts=10, backoff_seconds=10, max_backoff_seconds=60)
    for failures, doubled in [(1, 10), (2, 20), (3, 40), (4, 60), (9, 60)]:
        assert retry.backoff(policy, failures, 0.0) == doubled / 2
        assert retry.backoff(policy, failures, 0.999999) == pytest.approx(doubled, rel=1e-5)


def test_jitter_is_stable_per_attempt_and_spread_across_attempts() -> None:
    """The same attempt gets the same jitter; different attempts spread over [0, 1)."""
    assert retry.jitter("u", 1) == retry.jitter("u", 1)
    spread = {round(retry.jitter(f"u{i}", 1), 1) for i in range(200)}
    assert len(spread) >= 8


# ---------------------------------------------------------------------------------------------- our own writes
def test_one_failed_write_waits_nothing_repeated_ones_double_up_to_the_cap() -> None:
    """A first 409 is ordinary concurrency; from the second failure on, half to all of 1, 2, 4 ... 60 s."""
    assert writes.delay(0, "tasks/ns/t") == writes.delay(1, "tasks/ns/t") == 0.0
    for failures, doubled in [(2, 1.0), (3, 2.0), (4, 4.0), (8, 60.0), (50, 60.0)]:
        wait = writes.delay(failures, "tasks/ns/t")
        assert doubled / 2 <= wait <= doubled, (failures, wait)
        assert wait == writes.delay(failures, "tasks/ns/t")  # stable: the same answer twice
    spread = {round(writes.delay(9, f"tasks/ns/t{i}")) for i in range(100)}
    assert min(spread) >= 30
    assert len(spread) >= 10  # objects failing together do not come back together


# ---------------------------------------------------------------------------------------------- cancel
@pytest.mark.parametrize(
    "status",
    [None, {"phase": "Queued"}, {"phase": "Blocked"}, {"phase": "AwaitingApproval"}, {"phase": "Retrying"}],
)
def test_cancel_stops_a_task_that_has_not_started(status: dict | None) -> None:
    """spec.cancel on a waiting task: Cancelled, and no attempt is named."""
    change = cancel.cancel(record(bodies.task("t", cancel=True, status=status)))
    assert change is not None
    assert (change.phase, change.reason) == (TaskPhase.CANCELLED, Reason.CANCELLED)
    assert change.agent == ""
    assert "assignment" in change.remove


@pytest.mark.parametrize("phase", ["Assigned", "Running"])
def test_cancel_withdraws_the_current_attempt(phase: str) -> None:
    """spec.cancel on an active task: the assignment goes (the runtime cancels its handler), the attempt is named."""
    change = cancel.cancel(record(bodies.task("t", cancel=True, status=bodies.assigned("a", 2, phase=phase))))
    assert change is not None
    assert change.phase is TaskPhase.CANCELLED
    assert (change.agent, change.attempt) == ("a", 2)
    assert "assignment" in change.remove
    assert "attempt 2 on a" in change.message


def test_cancel_comes_before_a_failure_report() -> None:
    """The handler's report of its own cancellation is not a failed attempt to retry."""
    status = bodies.assigned("a", 1, phase="Running", execution=bodies.execution("a", 1, finished=True, error="x"))
    task = record(bodies.task("t", cancel=True, status=status))
    change = cancel.cancel(task)
    assert change is not None
    assert change.phase is TaskPhase.CANCELLED


@pytest.mark.parametrize("phase", ["Succeeded", "Failed", "DeadLettered", "Cancelled"])
def test_cancel_leaves_an_ended_task_alone(phase: str) -> None:
    """A final phase stays what it is."""
    assert cancel.cancel(record(bodies.task("t", cancel=True, status={"phase": phase}))) is None


def test_no_cancel_no_change() -> None:
    """Without spec.cancel the other rules decide."""
    assert cancel.cancel(record(bodies.task("t", status=bodies.assigned("a", 1)))) is None


# ---------------------------------------------------------------------------------------------- dead letters
def test_exhausted_attempts_go_to_the_dead_letter_queue_with_the_last_error() -> None:
    """The last allowed attempt fails: DeadLettered, reason AttemptsExhausted, the handler's error in the message."""
    status = bodies.assigned("a", 3, phase="Running", attempts=3,
                             execution=bodies.execution("a", 3, finished=True, error="ValueError: no"))  # fmt: skip
    change = run(status)
    assert change is not None
    assert (change.phase, change.reason) == (TaskPhase.DEAD_LETTERED, Reason.ATTEMPTS_EXHAUSTED)
    assert "ValueError: no" in change.message


def test_a_redrive_queues_a_dead_letter_once_with_a_fresh_budget() -> None:
    """spec.redrive raised past status.redrives: Queued, Redriven, the budget counted from the attempts made."""
    dead = record(bodies.task("t", redrive=1, status={"phase": "DeadLettered", "attempts": 3}))
    change = redrive.redrive(dead)
    assert change is not None
    assert (change.phase, change.reason) == (TaskPhase.QUEUED, Reason.REDRIVEN)
    assert change.fields == {"redrives": 1, "attemptsBeforeRedrive": 3}
    acted = record(bodies.task("t", redrive=1, status={"phase": "DeadLettered", "redrives": 1}))
    assert redrive.redrive(acted) is None  # one raise, one redrive
    assert redrive.redrive(record(bodies.task("t", redrive=2, status={"phase": "Failed"}))) is None


def test_a_redrive_raised_before_the_dead_letter_is_not_acted_on() -> None:
    """D7: spec.redrive raised while the task still ran does not redrive the failure that came after it."""
    failing = bodies.assigned("a", 3, phase="Running", attempts=3,
                              execution=bodies.execution("a", 3, finished=True, error="boom"))  # fmt: skip
    change = progress.progress(record(bodies.task("t", redrive=1, status=failing)), liveness=Liveness.ALIVE,
                               retry=RETRY, now=NOW)  # fmt: skip
    assert change is not None
    assert change.phase is TaskPhase.DEAD_LETTERED
    assert change.fields["redrives"] == 1  # the raise is used up by the dead-lettering itself
    dead = {"phase": "DeadLettered", **change.fields}
    assert redrive.redrive(record(bodies.task("t", redrive=1, status=dead))) is None
    assert redrive.redrive(record(bodies.task("t", redrive=2, status=dead))) is not None  # a raise after it counts


def test_after_a_redrive_the_budget_counts_from_the_attempts_made_before() -> None:
    """3 attempts made, redriven, the 4th fails: a retry (1 of 3 since the redrive), not the DLQ again."""
    status = bodies.assigned("a", 4, phase="Running", attempts=4, redrives=1, attemptsBeforeRedrive=3,
                             execution=bodies.execution("a", 4, finished=True, error="boom"))  # fmt: skip
    change = run(status)
    assert change is not None
    assert change.phase in {TaskPhase.RETRYING, TaskPhase.QUEUED}
    assert "attempt 2 of 3" in change.message


# ---------------------------------------------------------------------------------------------- circuit breakers
def test_a_breaker_opens_after_the_threshold_cools_down_probes_and_closes() -> None:
    """Closed -> (3 failures) Open -> (cool-down) HalfOpen -> success -> Closed; a failed probe reopens."""
    opts = {"threshold": 3, "cooldown": 30.0}
    b = breaker.CLOSED
    for i in range(2):
        b = breaker.after(b, succeeded=False, now=NOW + i, **opts)
        assert (b.state, b.failures) == (BreakerState.CLOSED, i + 1)
    b = breaker.after(b, succeeded=False, now=NOW + 2, **opts)
    assert (b.state, b.open_until) == (BreakerState.OPEN, NOW + 32)
    assert breaker.now_state(b, NOW + 31).state is BreakerState.OPEN
    assert breaker.now_state(b, NOW + 32).state is BreakerState.HALF_OPEN
    assert breaker.after(b, succeeded=True, now=NOW + 10, **opts) == b  # a late success while Open: no change
    reopened = breaker.after(b, succeeded=False, now=NOW + 40, **opts)  # the probe failed
    assert (reopened.state, reopened.open_until) == (BreakerState.OPEN, NOW + 70)
    closed = breaker.after(reopened, succeeded=True, now=NOW + 75, **opts)  # the next probe succeeded
    assert closed == breaker.CLOSED


def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    """Failures must be consecutive: fail, fail, succeed, fail, fail stays Closed at threshold 3."""
    b = breaker.CLOSED
    for succeeded in (False, False, True, False, False):
        b = breaker.after(b, succeeded=succeeded, now=NOW, threshold=3, cooldown=5.0)
    assert (b.state, b.failures) == (BreakerState.CLOSED, 2)


def test_a_new_leader_continues_the_breaker_the_agent_status_shows() -> None:
    """Breakers seeds from status.breaker: two failures written by the old leader + one more opens it."""
    body = bodies.agent("a")
    body["status"] = {"breaker": {"state": "Closed", "consecutiveFailures": 2}}
    agent = AgentRecord.of(body)
    held = Breakers()
    change = held.ended(agent.key, {agent.key: agent}, succeeded=False, now=NOW, threshold=3, cooldown=10.0)
    assert change is not None
    assert change.after.state is BreakerState.OPEN
    assert held.counts(NOW) == {"Open": 1}
    assert held.counts(NOW + 11) == {"HalfOpen": 1}
