"""The store: indexes kept per event, deletes by uid, re-lists that drop phantoms, stale events ignored."""

from __future__ import annotations

import asyncio
import random

from qorch.controller import handlers
from qorch.controller.records import ACTIVE_PHASES
from qorch.controller.store import AGENTS, APPROVALS, LEASES, TASKS, ClusterState
from support import bodies
from support.fakeapi import FakeApi


def fresh() -> ClusterState:
    """An empty store whose clock reads 100."""
    state = ClusterState()
    now = [100.0]
    state.clock = lambda: now[0]
    return state


def test_a_relist_drops_objects_deleted_while_nobody_watched() -> None:
    """Defect 10: a task and an agent missing from a re-list are forgotten, and their slots freed."""
    state = fresh()
    tasks, agents = state.sink(TASKS), state.sink(AGENTS)
    agents.upsert(bodies.agent("a"))
    agents.upsert(bodies.agent("gone-agent"))
    tasks.upsert(bodies.task("kept"))
    tasks.upsert(bodies.task("phantom", status=bodies.assigned("a")))
    assert state.load(("ns", "a")) == 1
    state.feed.drain()

    tasks.begin_list(None)
    tasks.upsert(bodies.task("kept"), listed=True)
    tasks.end_list(None)
    agents.begin_list("ns")
    agents.upsert(bodies.agent("a"), listed=True)
    agents.end_list("ns")

    assert set(state.tasks) == {("ns", "kept")}
    assert set(state.agents) == {("ns", "a")}
    assert state.load(("ns", "a")) == 0
    feed = state.feed.drain()
    assert ("ns", "phantom") in feed.deleted
    assert ("ns", "a") in feed.freed


def test_a_relist_of_one_namespace_leaves_other_namespaces_alone() -> None:
    """A namespaced informer's list only speaks for its namespace."""
    state = fresh()
    tasks = state.sink(TASKS)
    tasks.upsert(bodies.task("x", namespace="one"))
    tasks.upsert(bodies.task("y", namespace="two"))
    tasks.begin_list("one")
    tasks.end_list("one")
    assert set(state.tasks) == {("two", "y")}


def test_deletes_match_the_uid() -> None:
    """A DELETED for an old incarnation does not remove the recreated Task of the same name."""
    state = fresh()
    tasks = state.sink(TASKS)
    old = bodies.task("t", uid="old")
    tasks.upsert(bodies.task("t", uid="new"))
    tasks.delete(old)
    assert state.tasks[("ns", "t")].uid == "new"


def test_a_recreated_task_replaces_the_old_one_and_its_slot() -> None:
    """Same name, new uid: the old incarnation's agent slot is released."""
    state = fresh()
    tasks = state.sink(TASKS)
    tasks.upsert(bodies.task("t", uid="old", status=bodies.assigned("a")))
    tasks.upsert(bodies.task("t", uid="new"))
    assert state.load(("ns", "a")) == 0
    assert state.tasks[("ns", "t")].uid == "new"


def test_an_older_version_never_overwrites_a_newer_one() -> None:
    """After a GET brought version N, a late watch event of version N-1 is ignored."""
    state = fresh()
    tasks = state.sink(TASKS)
    older = bodies.task("t", status={"phase": "Queued"})
    newer = bodies.task("t", status=bodies.assigned("a"))
    tasks.upsert(newer)
    tasks.upsert(older)
    assert state.tasks[("ns", "t")].phase == "Assigned"


def test_a_relist_replaying_a_lease_is_not_a_renewal() -> None:
    """Only a new Lease version counts as a heartbeat; a re-list of the same one keeps the old time."""
    state = fresh()
    leases = state.sink(LEASES)
    body = bodies.lease("a")
    leases.upsert(body)
    state.clock = lambda: 500.0
    leases.begin_list(None)
    leases.upsert(body, listed=True)
    leases.end_list(None)
    assert state.leases[("ns", "a")].observed_at == 100.0


def test_only_agent_leases_are_kept() -> None:
    """The leader's own Lease and others are not agents."""
    state = fresh()
    state.sink(LEASES).upsert({"metadata": {"name": "qorch-operator", "namespace": "ns", "resourceVersion": "1"}})
    assert state.leases == {}


def test_a_report_for_another_attempt_is_noted_once_when_it_arrives() -> None:
    """A report that does not match the current assignment is fed to the loop as ignored."""
    state = fresh()
    tasks = state.sink(TASKS)
    tasks.upsert(bodies.task("t", status=bodies.assigned("b", 2)))
    tasks.upsert(bodies.task("t", status=bodies.assigned("b", 2, execution=bodies.execution("a", 1, finished=True))))
    ignored = state.feed.drain().ignored
    assert [(r.name, r.report.agent) for r in ignored if r.report] == [("t", "a")]
    tasks.upsert(bodies.task("t", status=bodies.assigned("b", 2, execution=bodies.execution("b", 2))))
    assert state.feed.drain().ignored == []


def test_dependents_are_reevaluated_when_a_dependency_changes_phase() -> None:
    """A task's phase change marks the tasks depending on it."""
    state = fresh()
    tasks = state.sink(TASKS)
    tasks.upsert(bodies.task("child", dependsOn=["parent"]))
    tasks.upsert(bodies.task("parent"))
    state.feed.drain()
    tasks.upsert(bodies.task("parent", status={"phase": "Succeeded"}))
    assert ("ns", "child") in state.feed.drain().tasks


def test_approvals_mark_the_task_they_name() -> None:
    """An Approval's arrival and deletion both wake the task it decides."""
    state = fresh()
    approvals = state.sink(APPROVALS)
    approvals.upsert(bodies.approval("a", "t"))
    assert ("ns", "t") in state.feed.drain().tasks
    approvals.delete(bodies.approval("a", "t"))
    assert ("ns", "t") in state.feed.drain().tasks
    assert state.approvals_of(("ns", "t")) == []


def test_sweep_drops_unlisted_approvals_but_not_newer_ones() -> None:
    """kopf-fed kinds: an Approval missing from a LIST goes, unless an event for it came after the LIST began."""
    state = fresh()
    approvals = state.sink(APPROVALS)
    state.touch(APPROVALS, ("ns", "old"))
    approvals.upsert(bodies.approval("old", "t"))
    state.clock = lambda: 200.0
    state.touch(APPROVALS, ("ns", "new"))
    approvals.upsert(bodies.approval("new", "t"))
    assert state.sweep(APPROVALS, set(), started=150.0) == 1
    assert set(state.approvals) == {("ns", "new")}


def test_indexes_equal_a_rebuild_after_any_sequence_of_events() -> None:
    """Random upserts, re-assignments and deletes: by_agent, dependents and phase counts match a recount."""
    rnd = random.Random(5)
    state = fresh()
    tasks = state.sink(TASKS)
    phases = ["Queued", "Assigned", "Running", "Succeeded", None]
    for _ in range(3000):
        name = f"t{rnd.randrange(60)}"
        if rnd.random() < 0.15:
            tasks.delete(bodies.task(name))
            continue
        phase = rnd.choice(phases)
        status = (
            bodies.assigned(f"a{rnd.randrange(5)}", phase=phase)
            if phase in ACTIVE_PHASES
            else ({"phase": phase} if phase else None)
        )
        deps = [f"t{rnd.randrange(60)}" for _ in range(rnd.randrange(3))]
        tasks.upsert(bodies.task(name, status=status, dependsOn=sorted(set(deps) - {name})))
    by_agent: dict = {}
    dependents: dict = {}
    counts: dict = {}
    for key, task in state.tasks.items():
        if task.phase in ACTIVE_PHASES:
            by_agent.setdefault((task.namespace, task.agent), set()).add(key)
        for dep in task.depends_on:
            dependents.setdefault((task.namespace, dep), set()).add(key)
        counts[task.phase] = counts.get(task.phase, 0) + 1
    assert state.by_agent == by_agent
    assert state.dependents == dependents
    assert {p: c for p, c in state.phases.items() if c} == counts


def test_kopf_handlers_run_on_the_event_loop_never_on_a_thread() -> None:
    """Defect 8: every kopf handler is a coroutine, so kopf never runs one on a thread beside the store."""
    import inspect  # noqa: PLC0415

    import kopf  # noqa: PLC0415

    from qorch.controller import handlers  # noqa: PLC0415

    registry = kopf.OperatorRegistry()
    handlers.register(registry, fresh(), lambda: None, kopf.ConnectionInfo(server="https://127.0.0.1"))
    found = [h for r in (registry._watching, registry._activities) for h in r.get_all_handlers()]
    watching = [h for h in found if getattr(h, "id", "") in ("approvals", "policy")]
    assert len(watching) == 2
    assert all(inspect.iscoroutinefunction(h.fn) for h in watching)


def test_a_sweep_never_brings_back_an_approval_deleted_during_its_list() -> None:
    """Reviewer finding 8: kopf delivers DELETED while the sweep's LIST is on its way; the LIST is older."""
    state = fresh()
    api = FakeApi()
    approval = bodies.approval("ok", "t")
    stored = api.put(APPROVALS, approval)
    state.sink(APPROVALS).upsert(stored)

    def deleted_while_listing(method: str, path: str) -> None:
        if method == "GET" and path.endswith("/approvals"):
            api.before.clear()
            state.touch(APPROVALS, ("ns", "ok"))  # the kopf handler: an event for it now ...
            state.sink(APPROVALS).delete(stored)  # ... DELETED (the LIST's answer was read before)

    api.before.append(deleted_while_listing)  # type: ignore[arg-type]
    api.objects[(APPROVALS, "ns", "")] = {"items": [stored], "metadata": {}}  # what the LIST answers
    asyncio.run(handlers.sweep(api, state, ("ns",)))  # type: ignore[arg-type]
    assert ("ns", "ok") not in state.approvals


def test_a_sweep_forgets_events_of_objects_long_gone() -> None:
    """Reviewer: every deleted Approval left its event time behind for good; a sweep after it forgets it."""
    state = fresh()
    approvals = state.sink(APPROVALS)
    for i in range(100):
        body = bodies.approval(f"a{i}", "t")
        state.touch(APPROVALS, ("ns", f"a{i}"))
        approvals.upsert(body)
        state.touch(APPROVALS, ("ns", f"a{i}"))
        approvals.delete(body)
    assert state.seen_since(APPROVALS, ("ns", "a0"), 0.0)
    state.clock = lambda: 200.0
    state.sweep(APPROVALS, set(), started=150.0)
    assert not any(state.seen_since(APPROVALS, ("ns", f"a{i}"), 0.0) for i in range(100))
