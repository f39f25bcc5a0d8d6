"""The audit log wired into the operator: landed writes only, decisions that write nothing, terms and anchors."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from qorch.api import constants
from qorch.audit import key_id, parse_anchor, read_segments, replay, verify_segments
from qorch.controller import auditing
from qorch.controller.auditing import DecisionLog
from qorch.controller.kube import ApiError, KubeError, TransportError
from qorch.controller.leader import LeaderElector, LeaseTimings
from qorch.controller.store import AGENTS, APPROVALS, TASKS
from support import bodies
from support.fakeapi import FakeApi, once
from support.kernel import Harness, harness


def write_key(path: Path) -> Ed25519PrivateKey:
    """A new Ed25519 key in `path` (PKCS#8 PEM), as a Secret's volume holds it."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)
    return key


def entries(decisions: DecisionLog) -> list[dict[str, Any]]:
    """Everything the log holds so far (verified), oldest first."""
    assert decisions.flush()
    verdict = verify_segments(read_segments([decisions.directory]), _trusted(decisions))
    assert verdict.ok, verdict
    return list(verdict.chain)


_KEYS: dict[Path, Any] = {}


def _trusted(decisions: DecisionLog) -> Any:
    return _KEYS[decisions.key_path]


@pytest.fixture
def decisions(tmp_path: Path) -> Iterator[DecisionLog]:
    """A decision log whose term 1 has begun (no anchor before it)."""
    key_path = tmp_path / "audit.key"
    _KEYS[key_path] = write_key(key_path).public_key()
    made = DecisionLog(tmp_path / "audit", key_path, identity="op-1")
    made.acquired(1, {})
    assert made.flush()  # the term has begun (with the key as it is now) before a test changes anything
    yield made
    made.close()


def run(test: Callable[[Harness], Coroutine[Any, Any, None]], api: FakeApi | None = None) -> None:
    """Run an async test body against a fresh kernel harness."""

    async def main() -> None:
        async with harness(api) as h:
            await test(h)

    asyncio.run(main())


def kinds(found: list[dict[str, Any]], task: str = "") -> list[str]:
    """The kinds of the entries (about one task, if named)."""
    return [e["kind"] for e in found if not task or e["subject"].get("task") == f"ns/{task}"]


@pytest.mark.parametrize("settled_by", ["watch", "read"])
def test_a_write_that_landed_with_its_answer_lost_is_recorded(decisions: DecisionLog, settled_by: str) -> None:
    """Review finding A: the assignment lands, its answer is a 503; the audit still gets it (and I5 holds).

    Before, only a write answered 2xx was recorded, so replay showed the task unassigned while
    the apiserver held it Assigned (and its breaker count and metrics were skipped too).
    """
    api = FakeApi()
    api.after.append(once("PATCH", "tasks/t", ApiError(503, "ServiceUnavailable", "etcd is busy")))

    async def test(h: Harness) -> None:
        h.kernel.audit = decisions
        h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=2))
        h.renew("a")
        h.create(TASKS, bodies.task("t", requires=["code"]))
        await h.cycle(echo=False)  # landed, answer lost
        assert h.status("t")["phase"] == "Assigned"
        assert kinds(entries(decisions), "t") == []
        if settled_by == "watch":
            h.sync()
        else:
            h.advance(10)
            await h.settle()  # the ledger's GET brings the landed version
        await h.cycle()
        await asyncio.sleep(0)
        found = [e for e in entries(decisions) if e["subject"].get("task") == "ns/t"]
        assert [e["kind"] for e in found] == ["assign"]
        assert found[0]["data"]["agent"] == "a"
        await h.cycle()
        assert kinds(entries(decisions), "t") == ["assign"]  # once

    run(test, api)


def test_a_landing_the_watch_brought_before_the_answer_was_lost_is_recorded(decisions: DecisionLog) -> None:
    """Review: the watch delivers the landed version while the PATCH still waits for its answer, then it resets.

    The write was watched for only after its answer was lost, so the one version that
    showed it had already gone by: no audit entry, until (if ever) the task changed again.
    """
    api = FakeApi()
    harnesses: list[Harness] = []

    def echo_then_reset(method: str, path: str) -> KubeError | None:
        if method == "PATCH" and path.endswith("/tasks/t/status") and harnesses:
            harnesses.pop().sync()  # the watch is quicker than the answer
            return TransportError("PATCH: connection reset")
        return None

    api.after.append(echo_then_reset)

    async def test(h: Harness) -> None:
        harnesses.append(h)
        h.kernel.audit = decisions
        h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=2))
        h.renew("a")
        h.create(TASKS, bodies.task("t", requires=["code"]))
        await h.cycle(echo=False)
        await asyncio.sleep(0)
        assert h.status("t")["phase"] == "Assigned"
        assert kinds(entries(decisions), "t") == ["assign"]

    run(test, api)


def test_a_landed_assignment_is_recorded_and_a_refused_one_is_not(decisions: DecisionLog) -> None:
    """t1's assignment lands (assign); t2's fails its compare-and-set (409): nothing about it until one lands."""
    api = FakeApi()
    api.before.append(once("PATCH", "tasks/t2", ApiError(409, "Conflict", "modified")))

    async def test(h: Harness) -> None:
        h.kernel.audit = decisions
        h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=2))
        h.renew("a")
        for name in ("t1", "t2"):
            h.create(TASKS, bodies.task(name, requires=["code"]))
        await h.cycle()
        found = entries(decisions)
        assert kinds(found) == ["leader", "assign"]
        assert found[1]["subject"]["task"] == "ns/t1"
        assert found[1]["data"]["agent"] == "a"
        assert h.status("t2").get("phase") is None  # the refused write left nothing
        h.advance(6)
        await h.settle()  # the refused write's cool-down is over: a GET settles it
        await h.cycle()
        await h.cycle()
        assert h.status("t2")["phase"] == "Assigned"
        assert kinds(entries(decisions), "t2") == ["assign"]

    run(test, api)


def test_a_run_that_fails_retries_and_dead_letters_is_recorded_and_replays(decisions: DecisionLog) -> None:
    """assign, start, retry, assign, start, dead-letter and the breaker: replay ends where the apiserver does."""

    async def test(h: Harness) -> None:
        h.kernel.audit = decisions
        h.create(AGENTS, bodies.agent("a", capabilities=["code"], capacity=1))
        h.renew("a", duration=600)
        retry = {"maxAttempts": 2, "backoffSeconds": 0, "maxBackoffSeconds": 0}
        h.create(TASKS, bodies.task("t", requires=["code"], retry=retry))
        for _ in range(2):
            await h.cycle()
            body = h.task("t")
            attempt = body["status"]["assignment"]["attempt"]
            body["status"]["execution"] = bodies.execution("a", attempt)
            h.create(TASKS, body)
            await h.cycle()
            body = h.task("t")
            body["status"]["execution"] = bodies.execution("a", attempt, finished=True, error="boom")
            h.create(TASKS, body)
            await h.cycle()
            await h.cycle()
        assert h.status("t")["phase"] == "DeadLettered"
        found = entries(decisions)
        assert kinds(found, "t") == ["assign", "start", "retry", "assign", "start", "dead-letter"]
        assert replay(found) == {"ns/t": (None, "DeadLettered")}

    run(test)


def test_an_approval_and_a_rejection_are_recorded(decisions: DecisionLog) -> None:
    """The write that takes an approved task past the gate records approve; a rejection records reject."""

    async def test(h: Harness) -> None:
        h.kernel.audit = decisions
        h.create(AGENTS, bodies.agent("a", capabilities=["code"]))
        h.renew("a")
        ok = h.create(TASKS, bodies.task("ok", requires=["code"], approval={"required": True}))
        h.create(TASKS, bodies.task("no", requires=["code"], approval={"required": True}))
        h.create(APPROVALS, bodies.approval("yes", "ok", bound=ok["metadata"]["uid"], generation=1))
        h.create(APPROVALS, bodies.approval("nope", "no", decision="Reject"))
        for _ in range(3):
            await h.cycle()
        assert (h.status("ok")["phase"], h.status("no")["phase"]) == ("Assigned", "Cancelled")
        found = entries(decisions)
        assert kinds(found, "ok") == ["approve", "assign"]
        assert next(e for e in found if e["kind"] == "approve")["data"]["approvals"] == ["yes"]
        assert kinds(found, "no") == ["reject"]
        assert replay(found) == {"ns/ok": ("a", "Assigned"), "ns/no": (None, "Rejected")}

    run(test)


def test_an_ignored_report_and_an_opened_breaker_are_recorded(decisions: DecisionLog) -> None:
    """A zombie's report (refused-report) and a breaker that opens (breaker) write no task status of their own."""

    async def test(h: Harness) -> None:
        h.kernel.audit = decisions
        h.create(AGENTS, bodies.agent("b", capabilities=["code"]))
        h.renew("b", duration=600)
        h.create(TASKS, bodies.task("t", requires=["code"], status=bodies.assigned("b", 2)))
        await h.cycle()
        body = h.task("t")
        body["status"]["execution"] = bodies.execution("zombie", 1, finished=True)
        h.create(TASKS, body)
        await h.cycle()
        h.create(TASKS, bodies.task("f", requires=["code"], retry={"maxAttempts": 1},
                                    status=bodies.assigned("b", 1, phase="Running",
                                                           execution=bodies.execution("b", 1, finished=True,
                                                                                      error="boom"))))  # fmt: skip
        h.create("schedulingpolicies", {"metadata": {"name": "default"}, "spec": {"breaker": {"failureThreshold": 1}}})
        await h.cycle()
        await h.cycle()
        found = entries(decisions)
        refused = next(e for e in found if e["kind"] == "refused-report")
        assert refused["data"] == {"agent": "zombie", "attempt": 1, "current": 2}
        breaker = next(e for e in found if e["kind"] == "breaker")
        assert (breaker["subject"], breaker["data"]["to"]) == ({"agent": "ns/b"}, "Open")

    run(test)


def test_a_new_term_continues_the_chain_from_the_anchor_on_the_lease(tmp_path: Path, decisions: DecisionLog) -> None:
    """Replica 2 (its own directory) starts after replica 1's anchored head; both directories verify as one chain."""
    decisions.record("assign", {"task": "ns/t", "uid": "u"}, {"agent": "a"})
    assert decisions.flush()
    annotations = decisions.annotations()
    anchor = parse_anchor(annotations[constants.AUDIT_ANCHOR_ANNOTATION])
    assert anchor.seq == 1
    other = DecisionLog(tmp_path / "replica-2", decisions.key_path, identity="op-2")
    try:
        other.acquired(2, annotations)
        other.record("finish", {"task": "ns/t", "uid": "u"}, {"phase": "Succeeded"})
        assert other.flush()
        assert other.segment is not None
        assert other.segment.name == "term-00000002-op-2.log"
        head = parse_anchor(other.annotations()[constants.AUDIT_ANCHOR_ANNOTATION])
        verdict = verify_segments(
            read_segments([decisions.directory, other.directory]), _trusted(decisions), [anchor, head]
        )
        assert verdict.ok, verdict
        assert [e["kind"] for e in verdict.chain] == ["leader", "assign", "leader", "finish"]
        assert verdict.chain[2]["data"]["from"] == str(anchor)
        assert replay(verdict.chain) == {"ns/t": ("a", "Succeeded")}
    finally:
        other.close()


def test_a_changed_key_file_is_rotated_to_in_the_chain(tmp_path: Path, decisions: DecisionLog) -> None:
    """The Secret's key changes: a key-rotation entry signed by the old key; the chain verifies from the first key."""
    decisions.record("assign", {"task": "ns/t", "uid": "u"}, {"agent": "a"})
    new = write_key(decisions.key_path)
    decisions.check_key()
    decisions.record("finish", {"task": "ns/t", "uid": "u"}, {"phase": "Succeeded"})
    found = entries(decisions)
    assert kinds(found) == ["leader", "assign", "key-rotation", "finish"]
    assert decisions.annotations()[constants.AUDIT_KEY_ANNOTATION] == found[-1]["key"]
    # A replica that loaded the new key while following starts its term with it: the chain's key already.
    other = DecisionLog(tmp_path / "replica-2", decisions.key_path, identity="op-2")
    try:
        other.acquired(2, decisions.annotations())
        assert other.flush()
        verdict = verify_segments(read_segments([decisions.directory, other.directory]), _trusted(decisions))
        assert verdict.ok, verdict
        del new
    finally:
        other.close()


def test_a_key_that_cannot_be_read_keeps_the_old_one_signing(decisions: DecisionLog) -> None:
    """A half-written Secret update (not a key) is logged and counted; the old key signs on."""
    decisions.key_path.write_text("not a key")
    decisions.check_key()
    decisions.record("assign", {"task": "ns/t", "uid": "u"}, {"agent": "a"})
    assert kinds(entries(decisions)) == ["leader", "assign"]


def test_the_elector_anchors_on_every_write_and_hands_the_anchor_to_the_next_term() -> None:
    """Renewals carry annotate(); a new term's on_acquired hears the annotations its predecessor left."""
    api = FakeApi()
    timings = LeaseTimings(lease_duration=3.0, renew_deadline=2.0, retry_period=0.5)
    heard: list[tuple[int, dict[str, str]]] = []
    first = LeaderElector(api, namespace="ns", name="op", identity="one", timings=timings)
    first.annotate = lambda: {constants.AUDIT_ANCHOR_ANNOTATION: "7:" + "a" * 64}
    first.on_acquired = lambda term, annotations: heard.append((term, annotations))

    async def scenario() -> None:
        runner = asyncio.create_task(first.run())
        await asyncio.wait_for(first.leading.wait(), 5)
        await asyncio.sleep(0.7)  # one renewal
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, KubeError):
            await runner
        await first.release()
        second = LeaderElector(api, namespace="ns", name="op", identity="two", timings=timings)
        second.on_acquired = lambda term, annotations: heard.append((term, annotations))
        runner = asyncio.create_task(second.run())
        await asyncio.wait_for(second.leading.wait(), 5)
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, KubeError):
            await runner

    asyncio.run(scenario())
    lease = api.get("leases", "ns", "op")
    assert lease["metadata"]["annotations"][constants.AUDIT_ANCHOR_ANNOTATION] == "7:" + "a" * 64
    assert heard[0] == (0, {})
    assert heard[1][0] == 1
    assert heard[1][1][constants.AUDIT_ANCHOR_ANNOTATION] == "7:" + "a" * 64


def test_what_each_transition_records() -> None:
    """The kind of each landed transition, and whether the task keeps its agent after it (replay follows it)."""
    from qorch.api.enums import Reason, TaskPhase  # noqa: PLC0415
    from qorch.controller import documents  # noqa: PLC0415
    from qorch.controller.auditing import task_entries  # noqa: PLC0415
    from qorch.controller.records import TaskRecord  # noqa: PLC0415

    running = TaskRecord.of(bodies.task("t", status=bodies.assigned("a", 1, phase="Running")))
    cancelled = task_entries(running, documents.cancelled_by_user("stop", agent="a", attempt=1))
    assert [(k, d.get("agent"), d.get("previousAgent")) for k, _, d in cancelled] == [("finish", None, "a")]
    done = task_entries(running, documents.succeeded(running))
    assert [(k, d["agent"], d["phase"]) for k, _, d in done] == [("finish", "a", "Succeeded")]
    assert task_entries(running, documents.queued(Reason.CAPACITY_EXHAUSTED, "full", [])) == []
    gated = TaskRecord.of(bodies.task("g", approval={"required": True}, status={"phase": "AwaitingApproval"}))
    passed = task_entries(gated, documents.queued(Reason.CAPACITY_EXHAUSTED, "full", []))
    assert [k for k, _, _ in passed] == ["approve"]
    assert passed[0][1] == {"task": "ns/g", "uid": gated.uid}
    held = documents.held(TaskPhase.AWAITING_APPROVAL, Reason.AWAITING_APPROVAL, "ask")
    assert task_entries(gated, held) == []


def test_a_segment_that_cannot_be_continued_gets_a_new_file_not_a_silent_term(tmp_path: Path) -> None:
    """Review finding F: the same pod takes its Lease back (same term, same file) and the file's tail is torn.

    Before, opening the segment raised, no segment was open, and every entry of the term
    was dropped without a word. Now the term writes a new segment beside it.
    """
    key_path = tmp_path / "audit.key"
    write_key(key_path)
    first = DecisionLog(tmp_path / "audit", key_path, identity="op-1")
    first.acquired(3, {})
    first.record("assign", {"task": "ns/t", "uid": "u"}, {"agent": "a"})
    assert first.flush()
    anchor = first.annotations()
    torn = first.segment
    first.close()
    assert torn is not None
    with torn.open("ab") as f:
        f.write(b'{"seq": 2, "kind": "fin')  # killed mid-line
    again = DecisionLog(tmp_path / "audit", key_path, identity="op-1")
    try:
        again.acquired(3, anchor)
        again.record("finish", {"task": "ns/t", "uid": "u"}, {"phase": "Succeeded"})
        assert again.flush()
        assert again.segment is not None
        assert again.segment != torn
        written = [json.loads(line)["kind"] for line in again.segment.read_text().splitlines()]
        assert written == ["leader", "finish"]
    finally:
        again.close()


def test_a_key_changed_while_the_log_starts_is_picked_up_at_the_next_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review nit: the Secret updated between loading the key and fingerprinting it was never loaded."""
    key_path = tmp_path / "audit.key"
    write_key(key_path)
    real_load = auditing.load_private_key
    newer: list[Ed25519PrivateKey] = []

    def load_then_update(path: Path) -> Ed25519PrivateKey:
        key = real_load(path)
        if not newer:
            newer.append(write_key(key_path))  # the kubelet swaps the mounted Secret right now
        return key

    monkeypatch.setattr(auditing, "load_private_key", load_then_update)
    made = DecisionLog(tmp_path / "audit", key_path, identity="op-1")
    try:
        made.acquired(1, {})
        made.check_key()
        assert made.flush()
        assert made.annotations()[constants.AUDIT_KEY_ANNOTATION] == key_id(newer[0].public_key())
    finally:
        made.close()


def test_a_term_whose_segment_cannot_be_opened_writes_nothing_into_the_last_terms(
    decisions: DecisionLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: a failed open left term 1's segment in place, and term 2 chained onto it and anchored its head."""
    decisions.record("assign", {"task": "ns/t", "uid": "u"}, {"agent": "a"})
    assert decisions.flush()
    first = decisions.segment
    assert first is not None
    size = first.stat().st_size

    def unopenable(*_args: Any, **_kwargs: Any) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(auditing, "AuditLog", unopenable)
    decisions.acquired(2, decisions.annotations())
    decisions.record("finish", {"task": "ns/t", "uid": "u"}, {"phase": "Succeeded"})
    assert decisions.flush()
    assert first.stat().st_size == size
    assert decisions.annotations() == {}
