"""The scheduling queue: tasks that may be tried now, and tasks parked until something could help them.

kube-scheduler's shape: an *active* set is offered to every cycle; a task the
scheduler could not place is *parked* with its reason, and comes back only on
an event that could change the answer, or after a bounded wait that grows
with each fruitless try. So thousands of tasks that cannot run (no capable
agent, none alive) never crowd a new task out of a batch, and the cost of a
cycle follows what can move, not what is stuck.

Which events wake which parked tasks (queueing hints):
- an agent added, or whose capabilities, clearance, labels, cost or cordon
  changed, or that came alive: parked tasks of its namespace it could run;
- a slot freed on an agent: parked `CapacityExhausted` tasks it could run and
  `OverQuota` tasks of its namespace;
- the policy changed: everything;
- the task itself changed (not by our own write): that task.

The bounded wait is a safety net, not a stampede: waits are jittered so tasks
parked together do not come back together, and a task whose wait is over
returns only if a cheap check of its shape says it could be placed now
(`could_place`); otherwise it waits again, longer (like kube-scheduler's
queueing hints, asked once per shape rather than once per task).

Pure: no clock and no I/O; times are passed in.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qorch.api.enums import Reason

if TYPE_CHECKING:
    from collections.abc import Callable

    from qorch.controller.records import AgentRecord, Key, TaskRecord
    from qorch.scheduler.tasks import Selector

__all__ = ["Parked", "SchedulingQueue", "Shape"]

_FIRST_WAIT = 60.0
_LONGEST_WAIT = 300.0


@dataclass(frozen=True, slots=True)
class Shape:
    """What decides which agents could ever take a task."""

    namespace: str
    requires: tuple[str, ...]
    classification: int
    selector: Selector | None
    max_cost: float | None

    @classmethod
    def of(cls, task: TaskRecord) -> Shape:
        """The shape of a task."""
        return cls(task.namespace, task.requires, task.classification, task.selector, task.max_cost)

    def admits(self, agent: AgentRecord) -> bool:
        """Whether `agent` could run a task of this shape (ignoring load and liveness)."""
        if agent.namespace != self.namespace or agent.clearance < self.classification:
            return False
        if self.max_cost is not None and agent.cost > self.max_cost:
            return False
        if self.requires and not set(self.requires) <= set(agent.capabilities):
            return False
        return self.selector is None or self.selector.matches(dict(agent.labels))


@dataclass(slots=True)
class Parked:
    """A task waiting for an event."""

    shape: Shape
    reason: Reason
    until: float  # monotonic time of the bounded-wait flush
    tries: int


@dataclass(slots=True)
class SchedulingQueue:
    """Active tasks (tried every cycle) and parked ones (waiting for a helpful event)."""

    active: dict[Key, None] = field(default_factory=dict)  # insertion-ordered set
    parked: dict[Key, Parked] = field(default_factory=dict)
    due: list[tuple[float, Key]] = field(default_factory=list)  # (until, key) heap; stale entries skipped
    groups: dict[str, dict[Shape, dict[Reason, set[Key]]]] = field(default_factory=dict)  # namespace -> ...
    tries: dict[Key, int] = field(default_factory=dict)  # fruitless tries since the last placement
    fresh: bool = False  # a task became active since the last scheduling pass
    judged: dict[Key, str] = field(default_factory=dict)  # key -> the resourceVersion the rules admitted

    def __len__(self) -> int:
        """Tasks in the queue, active or parked."""
        return len(self.active) + len(self.parked)

    def add(self, key: Key, version: str) -> None:
        """The rules found the task at `version` eligible: try it, unless it is parked."""
        self.judged[key] = version
        if key not in self.parked and key not in self.active:
            self.active[key] = None
            self.fresh = True

    def discard(self, key: Key) -> None:
        """The task is no longer eligible (placed, held, final or deleted)."""
        self.active.pop(key, None)
        self._unpark(key)
        self.tries.pop(key, None)
        self.judged.pop(key, None)

    def judged_at(self, key: Key, version: str) -> bool:
        """Whether the rules admitted the task at this very version (not one it has since left behind)."""
        return self.judged.get(key) == version

    def placed(self, key: Key) -> None:
        """The task got an agent."""
        self.discard(key)

    def park(self, key: Key, shape: Shape, reason: Reason, now: float) -> None:
        """The scheduler could not place it for `reason`: wait for an event (or the flush)."""
        tries = self.tries.get(key, 0) + 1
        self.tries[key] = tries
        until = now + min(_LONGEST_WAIT, _FIRST_WAIT * 2 ** min(tries - 1, 8)) * (0.75 + 0.5 * _spread(key, tries))
        parked = self.parked.get(key)
        if parked is not None and parked.shape == shape and parked.reason is reason:
            parked.until, parked.tries = until, tries  # waits again: same groups, new time
        else:
            self.active.pop(key, None)
            self._unpark(key)
            self.parked[key] = Parked(shape, reason, until, tries)
            by_shape = self.groups.setdefault(shape.namespace, {})
            by_shape.setdefault(shape, {}).setdefault(reason, set()).add(key)
        heapq.heappush(self.due, (until, key))

    def wake(self, key: Key) -> None:
        """The task changed: try it again."""
        if self._unpark(key):
            self.active[key] = None
            self.fresh = True

    def _unpark(self, key: Key) -> bool:
        parked = self.parked.pop(key, None)
        if parked is None:
            return False
        by_shape = self.groups[parked.shape.namespace]
        by_reason = by_shape[parked.shape]
        members = by_reason[parked.reason]
        members.discard(key)
        if not members:
            del by_reason[parked.reason]
            if not by_reason:
                del by_shape[parked.shape]
                if not by_shape:
                    del self.groups[parked.shape.namespace]
        return True

    def agent_changed(self, agent: AgentRecord, *, slot_freed_only: bool) -> int:
        """An event on `agent`: wake the parked tasks it could help. Returns how many woke."""
        woken: list[Key] = []
        for shape, by_reason in self.groups.get(agent.namespace, {}).items():
            admits = shape.admits(agent)
            for reason, members in by_reason.items():
                if reason is Reason.OVER_QUOTA or (
                    admits and (not slot_freed_only or reason is Reason.CAPACITY_EXHAUSTED)
                ):
                    woken.extend(members)
        for key in woken:
            self.wake(key)
        return len(woken)

    def wake_all(self) -> None:
        """Something cluster-wide changed (the policy): try everything again."""
        for key in list(self.parked):
            self.wake(key)

    def flush(self, now: float, could_place: Callable[[Shape, Reason], bool]) -> int:
        """Parked tasks whose wait is over: back to active if their shape could be placed now, else wait longer."""
        woken = 0
        verdicts: dict[tuple[Shape, Reason], bool] = {}
        while self.due and self.due[0][0] <= now:
            until, key = heapq.heappop(self.due)
            parked = self.parked.get(key)
            if parked is None or parked.until != until:
                continue  # woken or parked again since
            verdict = verdicts.get((parked.shape, parked.reason))
            if verdict is None:
                verdict = verdicts[(parked.shape, parked.reason)] = could_place(parked.shape, parked.reason)
            if verdict:
                self.wake(key)
                woken += 1
            else:
                self.park(key, parked.shape, parked.reason, now)
        return woken

    def next_flush(self) -> float | None:
        """The earliest flush time, for the loop's timer (may be a stale entry: harmless)."""
        return self.due[0][0] if self.due else None


def _spread(key: Key, tries: int) -> float:
    """A number in [0, 1) per task and try, so parked tasks come back spread out (not for security)."""
    return (hash((key, tries)) & 0xFFFF) / 65536
