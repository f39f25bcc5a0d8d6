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

Pure: no clock and no I/O; times are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qorch.api.enums import Reason

if TYPE_CHECKING:
    from qorch.controller.records import AgentRecord, Key, TaskRecord
    from qorch.scheduler.tasks import Selector

__all__ = ["Parked", "SchedulingQueue", "Shape"]

_FIRST_WAIT = 30.0
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
    groups: dict[str, dict[Shape, dict[Reason, set[Key]]]] = field(default_factory=dict)  # namespace -> ...
    tries: dict[Key, int] = field(default_factory=dict)  # fruitless tries since the last placement

    def __len__(self) -> int:
        """Tasks in the queue, active or parked."""
        return len(self.active) + len(self.parked)

    def add(self, key: Key) -> None:
        """The task is eligible: try it, unless it is parked."""
        if key not in self.parked:
            self.active[key] = None

    def discard(self, key: Key) -> None:
        """The task is no longer eligible (placed, held, final or deleted)."""
        self.active.pop(key, None)
        self._unpark(key)
        self.tries.pop(key, None)

    def placed(self, key: Key) -> None:
        """The task got an agent."""
        self.discard(key)

    def park(self, key: Key, shape: Shape, reason: Reason, now: float) -> None:
        """The scheduler could not place it for `reason`: wait for an event (or the flush)."""
        self.active.pop(key, None)
        self._unpark(key)
        tries = self.tries.get(key, 0) + 1
        self.tries[key] = tries
        wait = min(_LONGEST_WAIT, _FIRST_WAIT * 2 ** min(tries - 1, 8))
        self.parked[key] = Parked(shape, reason, now + wait, tries)
        by_shape = self.groups.setdefault(shape.namespace, {})
        by_shape.setdefault(shape, {}).setdefault(reason, set()).add(key)

    def wake(self, key: Key) -> None:
        """The task changed: try it again."""
        if self._unpark(key):
            self.active[key] = None

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

    def flush(self, now: float) -> int:
        """Parked tasks whose bounded wait is over go back to active."""
        due = [key for key, parked in self.parked.items() if parked.until <= now]
        for key in due:
            self.wake(key)
        return len(due)

    def next_flush(self) -> float | None:
        """The earliest flush time, for the loop's timer."""
        return min((p.until for p in self.parked.values()), default=None)
