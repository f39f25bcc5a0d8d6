"""The agent's claims and reports when the apiserver loses answers (reviewer findings 1 and 2).

A claim or finish whose answer is lost may or may not have landed. The agent
must never run an attempt twice, never give up a slot that holds a landed claim,
and never report "not current" (False) for a finish it simply could not send.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from qorch.agent import attempts as attempts_module
from qorch.agent.attempts import Attempts, UnsettledClaimError
from qorch.controller.kube import ApiError, KubeError, TransportError
from support.fakeapi import FakeApi

NS = "ns"


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries go at once: the tests are about outcomes, not waiting."""

    async def instant(tries: int) -> None:
        del tries

    monkeypatch.setattr(attempts_module, "_backoff", instant)


def assigned(api: FakeApi, agent: str = "a", attempt: int = 1) -> dict[str, Any]:
    """A Task assigned to `agent` for `attempt`, as the operator writes it."""
    return api.put(
        "tasks",
        {
            "apiVersion": "qorch.io/v1alpha1",
            "kind": "Task",
            "metadata": {"name": "t", "namespace": NS, "uid": "uid-1"},
            "spec": {},
            "status": {"phase": "Assigned", "assignment": {"agent": agent, "attempt": attempt}},
        },
    )


def lost_answer(method: str) -> Any:
    """A fault applied after the request: it landed, but the client hears a reset."""
    return lambda m, _path: TransportError("connection reset") if m == method else None


def no_answer(method: str) -> Any:
    """A fault applied before the request: it never reached the store."""
    return lambda m, _path: TransportError("timed out") if m == method else None


def patches(api: FakeApi) -> int:
    """How many PATCHes the agent sent."""
    return sum(1 for method, _ in api.calls if method == "PATCH")


def test_a_claim_whose_answer_was_lost_is_recognised_as_ours() -> None:
    """A claim whose answer was lost is recognised as ours."""
    api = FakeApi()
    task = assigned(api)
    api.after.append(lost_answer("PATCH"))
    claim = asyncio.run(Attempts(api, NS).claim(task, "a"))  # type: ignore[arg-type]
    assert claim is not None
    execution = api.get("tasks", NS, "t")["status"]["execution"]
    assert execution["startedAt"] == claim.started_at
    assert patches(api) == 1  # read back, not claimed a second time


def test_a_claim_that_never_reached_the_server_is_sent_again_and_lands() -> None:
    """A claim that never reached the server is sent again and lands."""
    api = FakeApi()
    task = assigned(api)
    failures = iter([True, True])
    api.before.append(lambda m, _path: TransportError("timed out") if m == "PATCH" and next(failures, False) else None)
    claim = asyncio.run(Attempts(api, NS).claim(task, "a"))  # type: ignore[arg-type]
    assert claim is not None
    assert api.get("tasks", NS, "t")["status"]["execution"]["startedAt"] == claim.started_at
    assert patches(api) == 3


def test_a_claim_with_no_answer_at_all_holds_its_slot_until_settled() -> None:
    """A claim with no answer at all holds its slot until settled."""
    api = FakeApi()
    task = assigned(api)
    api.before.append(no_answer("PATCH"))
    attempts = Attempts(api, NS)
    with pytest.raises(UnsettledClaimError) as raised:
        asyncio.run(attempts.claim(task, "a"))  # type: ignore[arg-type]
    doubt = raised.value
    api.before.clear()
    assert asyncio.run(attempts.settle(doubt)) is True  # the same claim, sent again, lands
    assert api.get("tasks", NS, "t")["status"]["execution"]["startedAt"] == doubt.claim.started_at


def test_a_claim_is_unsettled_when_the_read_back_fails_too() -> None:
    """A claim is unsettled when the read back fails too."""
    api = FakeApi()
    task = assigned(api)
    api.after.append(lost_answer("PATCH"))
    api.before.append(no_answer("GET"))
    attempts = Attempts(api, NS)
    with pytest.raises(UnsettledClaimError) as raised:
        asyncio.run(attempts.claim(task, "a"))  # type: ignore[arg-type]
    assert asyncio.run(attempts.settle(raised.value)) is None  # still cannot tell: the slot stays held
    api.before.clear()
    assert asyncio.run(attempts.settle(raised.value)) is True  # it had landed


def test_a_claim_overtaken_by_a_requeue_is_let_go() -> None:
    """A claim overtaken by a requeue is let go."""
    api = FakeApi()
    task = assigned(api)
    api.before.append(no_answer("PATCH"))
    attempts = Attempts(api, NS)
    with pytest.raises(UnsettledClaimError) as raised:
        asyncio.run(attempts.claim(task, "a"))  # type: ignore[arg-type]
    # Meanwhile the operator requeued the task to another agent: the claim's version is gone for good.
    requeued = api.get("tasks", NS, "t")
    requeued["status"]["assignment"] = {"agent": "b", "attempt": 2}
    api.put("tasks", requeued)
    api.before.clear()
    assert asyncio.run(attempts.settle(raised.value)) is False
    assert "execution" not in api.get("tasks", NS, "t")["status"]


def test_a_claim_refused_by_conflict_after_a_requeue_runs_nothing() -> None:
    """A claim refused by conflict after a requeue runs nothing."""
    api = FakeApi()
    task = assigned(api)
    requeued = api.get("tasks", NS, "t")
    requeued["status"]["assignment"] = {"agent": "b", "attempt": 2}
    api.put("tasks", requeued)
    assert asyncio.run(Attempts(api, NS).claim(task, "a")) is None  # type: ignore[arg-type]
    assert "execution" not in api.get("tasks", NS, "t")["status"]


def started(api: FakeApi) -> Any:
    """A claimed attempt the operator has marked Running."""
    task = assigned(api)
    claim = asyncio.run(Attempts(api, NS).claim(task, "a"))  # type: ignore[arg-type]
    assert claim is not None
    running = api.get("tasks", NS, "t")
    running["status"]["phase"] = "Running"
    api.put("tasks", running)
    return claim


def test_a_finish_whose_answer_was_lost_counts_as_reported() -> None:
    """A finish whose answer was lost counts as reported."""
    api = FakeApi()
    claim = started(api)
    api.after.append(lost_answer("PATCH"))
    assert asyncio.run(Attempts(api, NS).finish(claim, result="ok")) is True
    execution = api.get("tasks", NS, "t")["status"]["execution"]
    assert execution["finishedAt"]
    assert execution["result"] == "ok"


def test_a_finish_that_cannot_be_sent_raises_instead_of_saying_not_current() -> None:
    """A finish that cannot be sent raises instead of saying not current."""
    api = FakeApi()
    claim = started(api)
    api.before.append(no_answer("PATCH"))
    with pytest.raises(KubeError):
        asyncio.run(Attempts(api, NS).finish(claim, result="ok"))
    api.before.clear()
    assert asyncio.run(Attempts(api, NS).finish(claim, result="ok")) is True  # owed, and delivered later


def test_a_zombie_finish_never_lands_on_the_next_attempt() -> None:
    """A zombie finish never lands on the next attempt."""
    api = FakeApi()
    claim = started(api)
    nxt = api.get("tasks", NS, "t")
    nxt["status"] = {"phase": "Assigned", "assignment": {"agent": "b", "attempt": 2}}
    api.put("tasks", nxt)
    assert asyncio.run(Attempts(api, NS).finish(claim, error="late")) is False
    assert "execution" not in api.get("tasks", NS, "t")["status"]


@pytest.mark.parametrize(
    "later",
    [
        pytest.param(ApiError(429, "TooManyRequests", "throttled"), id="throttled"),
        pytest.param(ApiError(403, "Forbidden", "no"), id="forbidden"),
    ],
)
def test_a_failure_after_an_unanswered_try_keeps_the_claim_unsettled(later: ApiError) -> None:
    """Reviewer: the first try may still land; whatever the next one hears, the slot stays held."""
    api = FakeApi()
    task = assigned(api)
    answers: list[KubeError] = [TransportError("timed out"), later, later, later, later]

    def fault(method: str, _path: str) -> KubeError | None:
        return answers.pop(0) if method == "PATCH" and answers else None

    api.before.append(fault)
    with pytest.raises(UnsettledClaimError):
        asyncio.run(Attempts(api, NS).claim(task, "a"))  # type: ignore[arg-type]
