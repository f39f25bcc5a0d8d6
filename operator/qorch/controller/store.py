"""The operator's cache: records of every watched object, their indexes, and a feed of what changed.

Informers are its only writers, and they run on the event loop (never on a
thread), so the loop reads a consistent store between two awaits. Each apply
is O(1): it replaces one record, moves it in the indexes, and notes in `feed`
what the next cycle must look at, so a cycle's work grows with what changed,
not with the fleet.

What it must never do: keep an object the API no longer has. A re-list tells
the store everything that exists in a scope, and whatever was not listed is
deleted (kopf's watcher emits no DELETED for objects removed during a gap).
Deletes and re-creations are matched by uid, so a Task recreated under the
same name is a new object, never the old one with a new version.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from qorch.api import constants
from qorch.controller.records import (
    ACTIVE_PHASES,
    WAITING_PHASES,
    AgentRecord,
    ApprovalRecord,
    Key,
    LeaseRecord,
    PolicyRecord,
    TaskRecord,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["AGENTS", "APPROVALS", "LEASES", "POLICIES", "TASKS", "ClusterState", "Feed", "Sink", "stale"]

TASKS, AGENTS, LEASES, APPROVALS, POLICIES = "tasks", "agents", "leases", "approvals", "schedulingpolicies"


class Sink(Protocol):
    """What an informer feeds: events, and the brackets of a full list."""

    def upsert(self, body: Mapping[str, Any], *, listed: bool = False) -> None:
        """An object exists at this version (ADDED, MODIFIED, or an item of a list)."""

    def delete(self, body: Mapping[str, Any]) -> None:
        """An object is gone."""

    def begin_list(self, namespace: str | None) -> None:
        """A full list of a scope starts."""

    def end_list(self, namespace: str | None) -> None:
        """The list is complete: whatever was not listed no longer exists."""


@dataclass(slots=True)
class Feed:
    """What changed since the loop last drained the feed."""

    tasks: set[Key] = field(default_factory=set)  # evaluate these tasks again
    touched: set[Key] = field(default_factory=set)  # changed by someone else (not our own echo)
    deleted: set[Key] = field(default_factory=set)  # tasks gone
    agents: set[Key] = field(default_factory=set)  # agent status or liveness may have changed
    freed: set[Key] = field(default_factory=set)  # agents that lost an active task (a slot opened)
    reshaped: set[Key] = field(default_factory=set)  # agents added, or whose profile changed
    ignored: list[TaskRecord] = field(default_factory=list)  # reports for an attempt that is not current
    policy: bool = False
    # Tasks new, or whose dependsOn changed, or that began or stopped waiting at the gate: a
    # dependency cycle may have formed or broken through them.
    regraphed: set[Key] = field(default_factory=set)

    def drain(self) -> Feed:
        """Hand the changes over and start an empty feed."""
        taken = Feed(
            self.tasks,
            self.touched,
            self.deleted,
            self.agents,
            self.freed,
            self.reshaped,
            self.ignored,
            self.policy,
            self.regraphed,
        )
        self.tasks, self.touched, self.deleted = set(), set(), set()
        self.agents, self.freed, self.reshaped = set(), set(), set()
        self.ignored, self.policy, self.regraphed = [], False, set()
        return taken

    def restore(self, taken: Feed) -> None:
        """Put back changes a failed cycle did not finish, so none is lost."""
        self.tasks |= taken.tasks
        self.touched |= taken.touched
        self.deleted |= taken.deleted
        self.agents |= taken.agents
        self.freed |= taken.freed
        self.reshaped |= taken.reshaped
        self.ignored = taken.ignored + self.ignored
        self.policy |= taken.policy
        self.regraphed |= taken.regraphed


def stale(incoming: str, held: str) -> bool:
    """Whether version `incoming` is not newer than `held` (a replay, or an old event after a GET).

    resourceVersions are opaque to clients, but every etcd-backed apiserver writes
    integers; when both are integers, older ones are recognised, otherwise only equal.
    """
    if incoming == held:
        return True
    if incoming.isdigit() and held.isdigit():
        return int(incoming) < int(held)
    return False


def _holder(task: TaskRecord | None) -> Key | None:
    """The agent a task occupies a slot on, if any."""
    if task is None or task.phase not in ACTIVE_PHASES or not task.agent:
        return None
    return (task.namespace, task.agent)


def _move(index: dict[Key, set[Key]], member: Key, old: list[Key], new: list[Key]) -> None:
    """Move `member` from the sets under `old` keys to those under `new` keys."""
    for key in old:
        members = index.get(key)
        if members is not None:
            members.discard(member)
            if not members:
                del index[key]
    for key in new:
        index.setdefault(key, set()).add(member)


def _nothing() -> None:
    return None


def _never_echo(_plural: str, _key: Key, _rv: str | None) -> bool:
    return False


def _unwitnessed(_plural: str, _key: Key, _body: Mapping[str, Any]) -> None:
    return None


@dataclass(slots=True)
class ClusterState:
    """Everything the operator knows, kept current by informers."""

    tasks: dict[Key, TaskRecord] = field(default_factory=dict)
    agents: dict[Key, AgentRecord] = field(default_factory=dict)
    leases: dict[Key, LeaseRecord] = field(default_factory=dict)  # (namespace, agent) -> liveness Lease
    approvals: dict[Key, ApprovalRecord] = field(default_factory=dict)
    policy: PolicyRecord = field(default_factory=PolicyRecord)
    by_agent: dict[Key, set[Key]] = field(default_factory=dict)  # agent -> its Assigned/Running tasks
    dependents: dict[Key, set[Key]] = field(default_factory=dict)  # task -> tasks that depend on it
    approvals_for: dict[Key, set[Key]] = field(default_factory=dict)  # task key -> Approval keys naming it
    phases: dict[str | None, int] = field(default_factory=dict)  # tasks per phase (None: no status yet)
    fleet_version: int = 0  # bumped when an Agent comes, goes, or changes what it could run
    feed: Feed = field(default_factory=Feed)
    #: Called with every version seen (None: deleted); True when it is the echo of our own write.
    observe: Callable[[str, Key, str | None], bool] = _never_echo
    #: Called with every Task body seen (watch or settling GET): the writer looks for writes it doubted.
    witness: Callable[[str, Key, Mapping[str, Any]], None] = _unwitnessed
    clock: Callable[[], float] = time.monotonic
    notify: Callable[[], None] = _nothing  # wakes the loop after every change
    _listing: dict[tuple[str, str | None], set[Key]] = field(default_factory=dict)
    _seen: dict[tuple[str, Key], float] = field(default_factory=dict)  # kopf-fed kinds: when last upserted

    # ------------------------------------------------------------------ sinks
    def sink(self, plural: str) -> Sink:
        """The sink an informer of `plural` feeds."""
        return _KindSink(self, plural)

    def _begin(self, plural: str, namespace: str | None) -> None:
        self._listing[(plural, namespace)] = set()

    def _listed(self, plural: str, key: Key) -> None:
        for (kind, namespace), seen in self._listing.items():
            if kind == plural and namespace in (None, key[0]):
                seen.add(key)

    def _end(self, plural: str, namespace: str | None) -> None:
        seen = self._listing.pop((plural, namespace), set())
        tables: dict[str, Mapping[Key, Any]] = {
            TASKS: self.tasks,
            AGENTS: self.agents,
            LEASES: self.leases,
            APPROVALS: self.approvals,
        }
        table = tables.get(plural, {})
        gone = [k for k in table if k not in seen and (namespace is None or k[0] == namespace)]
        for key in gone:
            self._remove(plural, key, uid=None)

    # ------------------------------------------------------------------ tasks
    def upsert_task(self, body: Mapping[str, Any]) -> None:
        """Record a Task version."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        old = self.tasks.get(key)
        if old is not None and old.uid == meta.get("uid") and stale(meta["resourceVersion"], old.resource_version):
            return
        record = TaskRecord.of(body)
        if old is not None and old.uid != record.uid:
            self.remove_task(key, uid=old.uid)  # deleted and recreated while we were not watching
            old = None
        echo = self.observe(TASKS, key, record.resource_version)
        self.witness(TASKS, key, body)
        self.tasks[key] = record
        self._index_task(old, record)
        self.feed.tasks.add(key)
        if not echo:
            self.feed.touched.add(key)
        if old is None or old.phase != record.phase:
            self.feed.tasks.update(self.dependents.get(key, ()))
        if (
            old is None
            or old.depends_on != record.depends_on
            or (old.phase in WAITING_PHASES) != (record.phase in WAITING_PHASES)
        ):
            self.feed.regraphed.add(key)
        report = record.report
        if (
            old is not None
            and report is not None
            and old.report != report
            and not report.about(record.agent, record.attempt)
        ):
            self.feed.ignored.append(record)

    def remove_task(self, key: Key, *, uid: str | None) -> None:
        """Forget a Task (only the incarnation with `uid`, when given)."""
        old = self.tasks.get(key)
        if old is None or (uid and old.uid != uid):
            return
        del self.tasks[key]
        self.observe(TASKS, key, None)
        self._index_task(old, None)
        self.feed.deleted.add(key)
        self.feed.tasks.update(self.dependents.get(key, ()))

    def _index_task(self, old: TaskRecord | None, new: TaskRecord | None) -> None:
        if old is not None:
            self.phases[old.phase] = self.phases.get(old.phase, 0) - 1
        if new is not None:
            self.phases[new.phase] = self.phases.get(new.phase, 0) + 1
        key = (old or new).key  # type: ignore[union-attr]
        self._index_agent(key, _holder(old), _holder(new))
        old_deps = old.depends_on if old else ()
        new_deps = new.depends_on if new else ()
        if old_deps != new_deps:
            _move(self.dependents, key, [(key[0], d) for d in old_deps], [(key[0], d) for d in new_deps])
            self.feed.tasks.update((key[0], d) for d in set(old_deps) ^ set(new_deps))  # their children changed

    def _index_agent(self, key: Key, old_agent: Key | None, new_agent: Key | None) -> None:
        if old_agent == new_agent:
            return
        _move(self.by_agent, key, [old_agent] if old_agent else [], [new_agent] if new_agent else [])
        if old_agent is not None:
            self.feed.freed.add(old_agent)
            self.feed.agents.add(old_agent)
        if new_agent is not None:
            self.feed.agents.add(new_agent)

    # ------------------------------------------------------------------ agents
    def upsert_agent(self, body: Mapping[str, Any]) -> None:
        """Record an Agent version."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        old = self.agents.get(key)
        if old is not None and old.uid == meta.get("uid") and stale(meta["resourceVersion"], old.resource_version):
            return
        record = AgentRecord.of(body)
        if old is not None and old.uid != record.uid:
            self.remove_agent(key, uid=old.uid)
            old = None
        self.observe(AGENTS, key, record.resource_version)
        self.agents[key] = record
        self.feed.agents.add(key)
        if old is None or old.profile != record.profile:
            self.fleet_version += 1
            self.feed.reshaped.add(key)
            self.feed.tasks.update(self.by_agent.get(key, ()))

    def remove_agent(self, key: Key, *, uid: str | None) -> None:
        """Forget an Agent (its tasks stay until its Lease says it is gone)."""
        old = self.agents.get(key)
        if old is None or (uid and old.uid != uid):
            return
        del self.agents[key]
        self.fleet_version += 1
        self.observe(AGENTS, key, None)
        self.feed.agents.add(key)
        self.feed.tasks.update(self.by_agent.get(key, ()))

    # ------------------------------------------------------------------ leases
    def upsert_lease(self, body: Mapping[str, Any]) -> None:
        """Record an agent Lease; a version not seen before counts as a renewal observed now."""
        record = LeaseRecord.of(body, self.clock())
        if record is None:
            return
        old = self.leases.get(record.key)
        if old is not None and stale(record.resource_version, old.resource_version):
            return  # a re-list replays what we saw: nothing was renewed
        self.leases[record.key] = record
        self.feed.agents.add(record.key)
        if old is None or (not old.holder) != (not record.holder):
            self.feed.tasks.update(self.by_agent.get(record.key, ()))

    def remove_lease(self, key: Key) -> None:
        """An agent's Lease is gone: the agent released it or was removed."""
        if self.leases.pop(key, None) is not None:
            self.feed.agents.add(key)
            self.feed.tasks.update(self.by_agent.get(key, ()))

    # ------------------------------------------------------------------ approvals and the policy
    def upsert_approval(self, body: Mapping[str, Any]) -> None:
        """Record an Approval; the task it names is evaluated again."""
        record = ApprovalRecord.of(body)
        old = self.approvals.get(record.key)
        if old is not None and old.uid == record.uid and stale(record.resource_version, old.resource_version):
            return
        if old is not None and old.task_key != record.task_key:
            self._remove(APPROVALS, record.key, uid=None)
        self.observe(APPROVALS, record.key, record.resource_version)
        self.approvals[record.key] = record
        self.approvals_for.setdefault(record.task_key, set()).add(record.key)
        self.feed.tasks.add(record.task_key)

    def remove_approval(self, key: Key, *, uid: str | None) -> None:
        """Forget an Approval."""
        old = self.approvals.get(key)
        if old is None or (uid and old.uid != uid):
            return
        del self.approvals[key]
        self.observe(APPROVALS, key, None)
        named = self.approvals_for.get(old.task_key)
        if named is not None:
            named.discard(key)
            if not named:
                del self.approvals_for[old.task_key]
        self.feed.tasks.add(old.task_key)

    def approvals_of(self, task: Key) -> list[ApprovalRecord]:
        """Approvals naming the task (bound to any incarnation)."""
        return [self.approvals[k] for k in self.approvals_for.get(task, ()) if k in self.approvals]

    def upsert_policy(self, body: Mapping[str, Any]) -> None:
        """Record the cluster's SchedulingPolicy (only `default` counts)."""
        meta = body["metadata"]
        if meta["name"] != constants.DEFAULT_POLICY_NAME:
            return
        held = self.policy.resource_version
        if held and stale(str(meta.get("resourceVersion", "")), held):
            return
        fresh = PolicyRecord.of(body)
        # The leader's own status writes (observables, providers' breakers) change the version, not the settings:
        # they must not wake every parked task and agent.
        same = dataclasses.replace(fresh, resource_version=held, providers=self.policy.providers)
        if not held or same != self.policy:
            self.feed.policy = True
        self.policy = fresh

    def remove_policy(self, body: Mapping[str, Any]) -> None:
        """The policy was deleted: the CRD's defaults apply."""
        if body["metadata"]["name"] == constants.DEFAULT_POLICY_NAME:
            self.policy = PolicyRecord()
            self.feed.policy = True

    # ------------------------------------------------------------------ sweeping kopf-fed kinds
    def touch(self, plural: str, key: Key) -> None:
        """Note that an event for this object arrived now (for `sweep`)."""
        self._seen[(plural, key)] = self.clock()

    def seen_since(self, plural: str, key: Key, when: float) -> bool:
        """Whether an event for this object arrived at or after `when` (it is newer than a LIST begun then)."""
        return self._seen.get((plural, key), float("-inf")) >= when

    def sweep(self, plural: str, listed: set[Key], started: float) -> int:
        """Drop objects of `plural` a LIST begun at `started` did not show, unless an event came since.

        kopf's watcher gives no DELETED for objects removed while it re-lists; a
        periodic LIST closes that gap. An event newer than the LIST wins over it.
        """
        table: Mapping[Key, Any] = self.approvals if plural == APPROVALS else {}
        gone = [k for k in table if k not in listed and self._seen.get((plural, k), 0.0) < started]
        for key in gone:
            self._remove(plural, key, uid=None)
            self._seen.pop((plural, key), None)
        # Events for objects that no longer exist (a DELETED, a name never listed) are older news
        # than this LIST: forget them, or the map grows with every object ever deleted.
        stale = [s for s, when in self._seen.items() if s[0] == plural and s[1] not in table and when < started]
        for seen in stale:
            del self._seen[seen]
        return len(gone)

    # ------------------------------------------------------------------ helpers
    def _remove(self, plural: str, key: Key, *, uid: str | None) -> None:
        if plural == TASKS:
            self.remove_task(key, uid=uid)
        elif plural == AGENTS:
            self.remove_agent(key, uid=uid)
        elif plural == LEASES:
            self.remove_lease(key)
        elif plural == APPROVALS:
            self.remove_approval(key, uid=uid)

    def load(self, agent: Key) -> int:
        """Tasks Assigned or Running on `agent`, as the API says now."""
        return len(self.by_agent.get(agent, ()))


class _KindSink:
    """Routes one informer's stream into the store."""

    __slots__ = ("_plural", "_state")

    def __init__(self, state: ClusterState, plural: str) -> None:
        self._state = state
        self._plural = plural

    def upsert(self, body: Mapping[str, Any], *, listed: bool = False) -> None:
        state, plural = self._state, self._plural
        meta = body["metadata"]
        if plural == TASKS:
            state.upsert_task(body)
        elif plural == AGENTS:
            state.upsert_agent(body)
        elif plural == LEASES:
            state.upsert_lease(body)
        elif plural == APPROVALS:
            state.upsert_approval(body)
        elif plural == POLICIES:
            state.upsert_policy(body)
        if listed:
            name = str(meta["name"])
            if plural == LEASES:
                name = name.removeprefix(constants.AGENT_LEASE_PREFIX)
            state._listed(plural, (str(meta.get("namespace", "")), name))  # noqa: SLF001 - the sink is the store's
        state.notify()

    def delete(self, body: Mapping[str, Any]) -> None:
        state, plural = self._state, self._plural
        meta = body["metadata"]
        namespace, name, uid = str(meta.get("namespace", "")), str(meta["name"]), meta.get("uid")
        if plural == LEASES:
            if name.startswith(constants.AGENT_LEASE_PREFIX):
                state.remove_lease((namespace, name.removeprefix(constants.AGENT_LEASE_PREFIX)))
        elif plural == POLICIES:
            state.remove_policy(body)
        else:
            state._remove(plural, (namespace, name), uid=uid)  # noqa: SLF001
        state.notify()

    def begin_list(self, namespace: str | None) -> None:
        self._state._begin(self._plural, namespace)  # noqa: SLF001

    def end_list(self, namespace: str | None) -> None:
        self._state._end(self._plural, namespace)  # noqa: SLF001
        self._state.notify()
