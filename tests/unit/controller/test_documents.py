"""Status documents render as JSON patches that the apiserver accepts against the record they were decided on."""

from __future__ import annotations

import jsonpatch
import pytest

from qorch.api.enums import Reason, TaskPhase
from qorch.controller import documents
from qorch.controller.records import TaskRecord
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


def test_the_agents_report_is_never_touched() -> None:
    """Every transition leaves status.execution (the agent's) as it was."""
    body = bodies.task("t", status=bodies.assigned("a", 2, execution=bodies.execution("a", 2, finished=True)))
    task = TaskRecord.of(body)
    for change in (
        documents.succeeded(task),
        documents.requeued(task, Reason.AGENT_NOT_READY, "x"),
        documents.retrying(task, Reason.ATTEMPT_FAILED, "x", at=WHEN + 10),
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
