"""qorch.testing.invariants over hand-built bodies: each invariant holds on a sound state and catches a broken one."""

from __future__ import annotations

from typing import Any

import pytest

from qorch.testing.invariants import CapacitySampler, Report, Violation, check, check_bodies
from support.bodies import agent, assigned, task


def scheduled(reason: str, message: str = "") -> dict[str, Any]:
    """The Scheduled condition."""
    return {"type": "Scheduled", "status": "True", "reason": reason, "message": message}


def ended(attempt: int, agent_name: str, outcome: str, phase: str = "Succeeded") -> dict[str, Any]:
    """A history entry that ends an attempt."""
    return {"time": "2026-01-01T00:00:05Z", "phase": phase, "agent": agent_name, "attempt": attempt,
            "reason": outcome, "message": "", "outcome": outcome}  # fmt: skip


def placed(attempt: int, agent_name: str) -> dict[str, Any]:
    """The history entry of an assignment."""
    return {"time": "2026-01-01T00:00:01Z", "phase": "Assigned", "agent": agent_name, "attempt": attempt,
            "reason": "Scheduled", "message": f"on {agent_name}"}  # fmt: skip


def succeeded(name: str, agent_name: str = "a", *, history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A task that succeeded in attempt 1 on `agent_name`."""
    status = {
        "phase": "Succeeded",
        "attempts": 1,
        "conditions": [scheduled("Succeeded", f"attempt 1 on {agent_name} succeeded")],
        "history": history if history is not None else [placed(1, agent_name), ended(1, agent_name, "Succeeded")],
    }
    return task(name, status=status)


def running(name: str, agent_name: str, attempt: int = 1, **spec: Any) -> dict[str, Any]:
    """A task Running on `agent_name`."""
    status = assigned(agent_name, attempt, phase="Running", conditions=[scheduled("Started", f"on {agent_name}")])
    status["history"] = [placed(attempt, agent_name)]
    return task(name, status=status, **spec)


def ids(report: Report) -> list[str]:
    """The invariants a report says were broken."""
    return sorted({v.invariant for v in report.violations})


# ---------------------------------------------------------------------- I1
def test_i1_holds_for_one_ending_per_attempt_and_one_success() -> None:
    """I1: holds for one ending per attempt and one success."""
    retried = succeeded(
        "t",
        "b",
        history=[placed(1, "a"), ended(1, "a", "Failed", "Retrying"), placed(2, "b"), ended(2, "b", "Succeeded")],
    )
    report = check_bodies([retried], [agent("a"), agent("b")], completions=[("t", 1, "a", "Failed"), ("t", 2, "b")])
    assert report.ok, report.violations


def test_i1_catches_an_attempt_ended_twice_and_two_successes_in_status() -> None:
    """I1: catches an attempt ended twice and two successes in status."""
    twice = succeeded("t", history=[placed(1, "a"), ended(1, "a", "Succeeded"), ended(1, "a", "Succeeded")])
    two = succeeded("u", history=[ended(1, "a", "Succeeded"), ended(2, "a", "Succeeded")])
    none = succeeded("v", history=[placed(1, "a")])
    report = check_bodies([twice, two, none], [agent("a")])
    messages = [str(v) for v in report.of("I1")]
    assert any("Task/t: attempt 1 ended 2 times" in m for m in messages), messages
    assert any("Task/u: attempts [1, 2] all succeeded" in m for m in messages), messages
    assert any("Task/v: Succeeded, but no attempt" in m for m in messages), messages


def test_i1_catches_one_attempt_on_two_agents() -> None:
    """I1: catches one attempt on two agents."""
    body = running("t", "b")
    body["status"]["history"] = [placed(1, "a")]  # the history says a, the assignment says b
    report = check_bodies([body], [agent("a"), agent("b")])
    assert [v.message for v in report.of("I1")] == ["attempt 1 placed on ['a', 'b'] at once"]


def test_i1_catches_completions_twice_elsewhere_and_two_successes() -> None:
    """I1: catches completions twice elsewhere and two successes."""
    tasks = [succeeded("t", "a"), succeeded("u", "a")]
    log = [
        {"task": "t", "attempt": 1, "agent": "a"},
        {"task": "t", "attempt": 1, "agent": "a"},  # the same attempt completed twice
        ("u", 1, "b"),  # where the history does not place it
        ("u", 2, "a"),  # and a second success
    ]
    messages = [str(v) for v in check_bodies(tasks, [agent("a"), agent("b")], completions=log).of("I1")]
    assert "I1 Task/t: attempt 1 completed 2 times (on ['a'])" in messages, messages
    assert "I1 Task/t: completed successfully in attempts [1]" not in messages
    assert "I1 Task/u: completed successfully in attempts [1, 2]" in messages, messages
    assert "I1 Task/u: attempt 1 completed on b, but was placed on ['a']" in messages, messages


# ---------------------------------------------------------------------- I2
def test_i2_holds_for_final_and_explained_waiting_tasks_and_deliberate_deletes() -> None:
    """I2: holds for final and explained waiting tasks and deliberate deletes."""
    waiting = task("w", status={"phase": "Queued", "conditions": [scheduled("NoCapableAgent", "no agent has gpu")]})
    report = check_bodies([succeeded("t"), waiting], [agent("a")], created=["t", "w", "gone"], deleted=["gone"])
    assert report.ok, report.violations


def test_i2_catches_unexplained_waits_unanswered_tasks_and_lost_ones() -> None:
    """I2: catches unexplained waits unanswered tasks and lost ones."""
    mute = task("m", status={"phase": "Queued", "conditions": [scheduled("NoReadyAgent", "")]})
    bare = task("b")
    final = task("f", status={"phase": "Failed", "conditions": []})
    report = check_bodies([mute, bare, final], [], created=["m", "b", "f", "lost"])
    assert sorted(v.object for v in report.of("I2")) == ["Task/b", "Task/f", "Task/lost", "Task/m"], report.violations
    assert ids(report) == ["I2"]


# ---------------------------------------------------------------------- I3
def test_i3_holds_at_capacity() -> None:
    """I3: holds at capacity."""
    tasks = [running("t1", "a"), running("t2", "a"), succeeded("t3", "a")]
    assert check_bodies(tasks, [agent("a", capacity=2)]).ok


def test_i3_catches_an_agent_over_capacity() -> None:
    """I3: catches an agent over capacity."""
    tasks = [running("t1", "a"), running("t2", "a")]
    report = check_bodies(tasks, [agent("a", capacity=1)])
    assert report.violations == [Violation("I3", "Agent/a", "holds 2 tasks, capacity 1")]


class Frames:
    """A reader that replays samples, then repeats the last one."""

    def __init__(self, frames: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]) -> None:
        """One (tasks, agents) pair per sample."""
        self.frames, self.read = frames, 0

    def tasks(self, namespace: str) -> list[dict[str, Any]]:  # noqa: ARG002 - one namespace
        """The next sample's tasks."""
        self.read += 1
        return self.frames[min(self.read, len(self.frames)) - 1][0]

    def agents(self, namespace: str) -> list[dict[str, Any]]:  # noqa: ARG002 - one namespace
        """The current sample's agents."""
        return self.frames[min(self.read, len(self.frames)) - 1][1]


def test_the_sampler_records_the_peak_and_a_passing_overload_between_settled_states() -> None:
    """The sampler records the peak and a passing overload between settled states."""
    agents = [agent("a", capacity=1)]
    frames = [([], agents), ([running("t1", "a"), running("t2", "a")], agents), ([], agents)]
    reader = Frames(frames)
    sampler = CapacitySampler(reader, "ns", interval=3600)  # samples taken by hand
    for _ in frames:
        sampler.sample()
    assert sampler.peak == {"a": 2}
    assert sampler.samples == 3
    assert check(reader, "ns").ok  # the end state alone looks fine
    with pytest.raises(AssertionError, match="I3 Agent/a: holds 2 tasks, capacity 1"):
        sampler.assert_ok()


def test_the_sampler_threads_and_catches_an_attempt_moving_between_agents() -> None:
    """The sampler threads and catches an attempt moving between agents."""
    agents = [agent("a", capacity=2), agent("b", capacity=2)]
    reader = Frames([([running("t", "a")], agents), ([running("t", "b")], agents)])
    with CapacitySampler(reader, "ns", interval=0.01) as sampler:
        pass
    assert sampler.peak == {"a": 1, "b": 1}
    assert [v.invariant for v in sampler.violations] == ["I1"], sampler.violations
    quiet = CapacitySampler(Frames([([running("t", "a")], agents)]), "ns", interval=0.01)
    with quiet:
        pass
    quiet.assert_ok()
    assert quiet.samples >= 2


# ---------------------------------------------------------------------- I4
def test_i4_holds_for_a_cleared_capable_selected_agent() -> None:
    """I4: holds for a cleared capable selected agent."""
    body = running("t", "a", requires=["code"], classification="secret",
                   agentSelector={"matchLabels": {"zone": "eu"}})  # fmt: skip
    good = agent("a", capabilities=["code", "web"], clearance="topsecret", labels={"zone": "eu"}, capacity=2)
    assert check_bodies([body], [good]).ok


def test_i4_catches_clearance_capabilities_selectors_and_missing_agents() -> None:
    """I4: catches clearance capabilities selectors and missing agents."""
    body = running("t", "a", requires=["code", "gpu"], classification="secret",
                   agentSelector={"matchExpressions": [{"key": "zone", "operator": "In", "values": ["eu"]}]},
    )  # fmt: skip
    bad = agent("a", capabilities=["code"], clearance="internal", labels={"zone": "us"})
    orphan = running("o", "ghost")
    messages = [v.message for v in check_bodies([body, orphan], [bad]).of("I4")]
    assert messages == [
        "secret task on a, cleared only for internal",
        "on a, which lacks ['gpu']",
        "on a, whose labels {'zone': 'us'} its selector rejects",
        "Running on ghost, which does not exist",
    ]


# ---------------------------------------------------------------------- I5
def test_i5_is_skipped_without_a_replay_and_compares_phases_with_one() -> None:
    """I5: is skipped without a replay and compares phases with one."""
    reader = Frames([([succeeded("t")], [agent("a")])])
    report = check(reader, "ns")
    assert report.ok
    assert "I5: no replay hook given" in report.skipped
    assert check(reader, "ns", replay=lambda _ns: {"t": "Succeeded"}).ok
    wrong = check(reader, "ns", replay=lambda _ns: {"t": "Failed", "x": "Queued"})
    assert [str(v) for v in wrong.violations] == [
        "I5 Task/t: is 'Succeeded', but replaying the audit log gives 'Failed'",
        "I5 Task/x: is None, but replaying the audit log gives 'Queued'",
    ]
    with pytest.raises(AssertionError, match="2 invariant violation"):
        wrong.assert_ok()
