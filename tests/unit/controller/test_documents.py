"""Status documents render as JSON patches that the apiserver accepts against the record they were decided on."""

from __future__ import annotations

import jsonpatch
import pytest

from qorch.api.enums import AttemptOutcome, Reason, TaskPhase
from qorch.controller import documents
from qorch.controller.lifecycle import progress
from qorch.controller.lifecycle.liveness import Liveness
from qorch.controller.records import Retry, TaskRecord
from support import bodies

WHEN = 1_800_000_000.25


def apply(body: dict, ops: list[dict]) -> dict:
    """Apply as the apiserver does (RFC 6902); an op on an absent member raises."""
    return jsonpatch.apply_patch(body, ops)


def test_a_task_without_status_gets_its_whole_status_at_once() -> None:
    """No status yet: one `add /status`, with the condition, the phase and no history for a queue reason."""
    body = bodies.task("t")
    change = documents.queued(Reason.NO_CAPABLE_AGENT, "no agent offers [gpu]", [])
    ops = documents.render(change, TaskRecord.of(body), WHEN)
    assert [op["path"] for op in ops] == ["/status"]
    status = apply(body, ops)["status"]
    assert status["phase"] == "Queued"
    assert status["conditions"][0]["reason"] == "NoCapableAgent"
    assert "history" not in status


def test_removes_are_only_emitted_for_fields_present() -> None:
    """A JSON patch removing an absent member fails, so the record's presence bits decide."""
    body = bodies.task("t", status={"phase": "Queued"})
    change = documents.queued(Reason.CAPACITY_EXHAUSTED, "busy", [])
    ops = documents.render(change, TaskRecord.of(body), WHEN)
    assert not [op for op in ops if op["op"] == "remove"]
    body = bodies.task("t", status=bodies.assigned("a", nextAttemptAt="2026-01-01T00:00:00Z"))
    ops = documents.render(change, TaskRecord.of(body), WHEN)
    assert {op["path"] for op in ops if op["op"] == "remove"} == {"/status/assignment", "/status/nextAttemptAt"}
    assert "assignment" not in apply(body, ops)["status"]


def test_history_appends_one_entry_and_keeps_the_latest_twenty() -> None:
    """At the CRD's limit the oldest entry goes, so the list never exceeds maxItems."""
    history = [{"time": "2026-01-01T00:00:00Z", "phase": "Queued", "message": str(i)} for i in range(20)]
    body = bodies.task("t", status=bodies.assigned("a", 1, phase="Running", history=history))
    task = TaskRecord.of(body)
    after = apply(body, documents.render(documents.succeeded(task), task, WHEN))["status"]["history"]
    assert len(after) == documents.HISTORY_LIMIT == 20
    assert after[0]["message"] == "1"
    assert after[-1]["reason"] == "Succeeded"
    assert after[-1]["attempt"] == 1
    assert after[-1]["time"].endswith(".250000Z")


@pytest.mark.parametrize(("before", "total"), [(None, 21), (56, 57)])
def test_history_total_counts_every_entry_even_those_dropped(before: int | None, total: int) -> None:
    """Item 2: historyTotal counts every entry ever appended (from the list's length when it is absent)."""
    history = [{"time": "2026-01-01T00:00:00Z", "phase": "Queued", "message": str(i)} for i in range(20)]
    extra = {} if before is None else {"historyTotal": before}
    body = bodies.task("t", status=bodies.assigned("a", 1, phase="Running", history=history, **extra))
    task = TaskRecord.of(body)
    status = apply(body, documents.render(documents.succeeded(task), task, WHEN))["status"]
    assert (len(status["history"]), status["historyTotal"]) == (20, total)
    waiting = documents.queued(Reason.CAPACITY_EXHAUSTED, "busy", [])  # no entry, no count
    assert not [op for op in documents.render(waiting, task, WHEN) if "history" in op["path"]]
    fresh = bodies.task("new")
    first = documents.render(documents.cancelled_by_user("stop"), TaskRecord.of(fresh), WHEN)
    assert apply(fresh, first)["status"]["historyTotal"] == 1


@pytest.mark.parametrize(
    ("report", "liveness", "phase", "outcome"),
    [
        ({"finished": True}, Liveness.ALIVE, "Succeeded", "Succeeded"),
        ({"finished": True, "error": "boom"}, Liveness.ALIVE, "Retrying", "Failed"),
        ({}, Liveness.DEAD, "Retrying", "Lost"),
        ({"refused": "OverCapacity"}, Liveness.ALIVE, "Queued", "Refused"),
    ],
)
def test_the_entry_that_ends_an_attempt_says_how_and_when_its_handler_ran(
    report: dict, liveness: Liveness, phase: str, outcome: str
) -> None:
    """Item 2: agent, attempt, outcome, and startedAt/finishedAt from the agent's report (when it has them)."""
    execution = bodies.execution("a", 3, **report)
    body = bodies.task("t", status=bodies.assigned("a", 3, phase="Running", execution=execution))
    task = TaskRecord.of(body)
    change = progress.progress(task, liveness=liveness, retry=Retry(5, 10, 60), now=WHEN)
    assert change is not None
    [entry] = apply(body, documents.render(change, task, WHEN))["status"]["history"]
    assert (entry["phase"], entry["agent"], entry["attempt"], entry["outcome"]) == (phase, "a", 3, outcome)
    assert entry.get("startedAt") == execution.get("startedAt")
    assert entry.get("finishedAt") == execution.get("finishedAt")


def test_entries_that_end_no_attempt_carry_no_outcome() -> None:
    """Assigned and Running open an attempt; a report about another attempt lends it no times."""
    body = bodies.task("t", status=bodies.assigned("a", 2, execution=bodies.execution("b", 1, finished=True)))
    task = TaskRecord.of(body)
    [entry] = apply(body, documents.render(documents.running(task), task, WHEN))["status"]["history"]
    assert not {"outcome", "startedAt", "finishedAt"} & set(entry)
    [ended] = apply(body, documents.render(documents.succeeded(task), task, WHEN))["status"]["history"]
    assert ended["outcome"] == "Succeeded"
    assert not {"startedAt", "finishedAt"} & set(ended)  # the report is about attempt 1 on b


def test_the_agents_report_is_never_touched() -> None:
    """Every transition leaves status.execution (the agent's) as it was."""
    body = bodies.task("t", status=bodies.assigned("a", 2, execution=bodies.execution("a", 2, finished=True)))
    task = TaskRecord.of(body)
    for change in (
        documents.succeeded(task),
        documents.requeued(task, Reason.AGENT_NOT_READY, "x"),
        documents.retrying(task, Reason.ATTEMPT_FAILED, "x", at=WHEN + 10, outcome=AttemptOutcome.FAILED),
        documents.dead_lettered(task, "x"),
    ):
        ops = documents.render(change, task, WHEN)
        assert not [op for op in ops if op["path"].startswith("/status/execution")]
        assert apply(body, ops)["status"]["execution"] == body["status"]["execution"]


def test_an_assignment_carries_its_attempt_and_microsecond_time() -> None:
    """Defect 6: assignedAt keeps microseconds; the attempt number is written for the agent to claim."""
    body = bodies.task("t", status={"phase": "Queued"})
    change = documents.assigned(
        agent="a", attempt=3, epoch=2, when=WHEN, score=0.5, probability=0.25, strategy="quantum", candidates=[]
    )
    status = apply(body, documents.render(change, TaskRecord.of(body), WHEN))["status"]
    assert status["assignment"]["attempt"] == 3
    assert status["assignment"]["assignedAt"].endswith(".250000Z")
    assert status["phase"] == TaskPhase.ASSIGNED.value
    assert change.reserve


@pytest.mark.parametrize(
    ("phase", "scheduled"),
    [("Assigned", "True"), ("Running", "True"), ("Succeeded", "True"), ("Queued", "False"), ("Failed", "False")],
)
def test_the_scheduled_condition_follows_the_phase(phase: str, scheduled: str) -> None:
    """Scheduled=True exactly while the task has (or had, to success) an agent."""
    change = documents.StatusChange(TaskPhase(phase), Reason.SCHEDULED, "")
    ops = documents.render(change, TaskRecord.of(bodies.task("t")), WHEN)
    assert ops[0]["value"]["conditions"][0]["status"] == scheduled
