"""Step 6 of a cycle: collapse amplitudes into a capacity-respecting assignment.

The quantum collapse maximises the priority of what gets assigned first (exactly)
and the match quality of where it goes second (by local moves, within a measured
bound; docs/scheduler.md):

1. Tasks are taken in queue order (effective priority, then fair share).
2. Each takes the most probable candidate that still has a free slot (or, with
   sampling on, one drawn from its Born distribution among those with a slot).
3. A task whose candidates are all full searches for an augmenting path: a chain
   of already-placed tasks that can each move to another of their candidates,
   ending at a free slot. Moving a versatile agent's task elsewhere frees it for
   a task only it can do.
4. `improve` then raises total match quality by moves that keep every placed
   task placed (strategy `quantum` without sampling).

Why this is exact for the priority objective: the sets of tasks that can be
placed together form a transversal matroid, and step 3 is an exact independence
test, so processing tasks by decreasing priority is the matroid greedy
algorithm, which maximises the total priority of assigned tasks. When a search
fails, every agent it reached is full and stays full for the rest of the cycle
(no later, lower-priority task can free it), so those agents are marked dead and
never searched again: failed searches cost O(edges) in all, not per task.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from qorch.scheduler.views import AVOIDED

if TYPE_CHECKING:
    from collections.abc import Sequence

    from qorch.scheduler.views import ClassView

__all__ = ["Ledger", "augment", "collapse", "improve"]

IntArray = npt.NDArray[np.int32]


@dataclass(slots=True)
class Ledger:
    """Who holds which slot during a cycle (plain lists: this is the hot loop)."""

    free: list[int]
    agent_of: list[int]
    holders: dict[int, list[int]] = field(default_factory=dict)
    dead_agents: set[int] = field(default_factory=set)
    dead_classes: set[int] = field(default_factory=set)
    augmented: int = 0

    @classmethod
    def start(cls, free: IntArray, tasks: int) -> Ledger:
        """A ledger over the snapshot's free slots with nothing assigned."""
        return cls(free=free.tolist(), agent_of=[-1] * tasks)

    def assign(self, task: int, agent: int) -> None:
        """Give `agent`'s free slot to `task`."""
        self.free[agent] -= 1
        self.agent_of[task] = agent
        held = self.holders.get(agent)
        if held is None:
            self.holders[agent] = [task]
        else:
            held.append(task)

    def move(self, task: int, to: int) -> None:
        """Move a placed task to another agent with a free slot."""
        old = self.agent_of[task]
        self.holders[old].remove(task)
        self.free[old] += 1
        self.assign(task, to)

    def assignments(self) -> IntArray:
        """Agent row per task, -1 where unassigned."""
        return np.asarray(self.agent_of, dtype=np.int32)


def augment(task: int, views: Sequence[ClassView], class_of: Sequence[int], ledger: Ledger) -> bool:
    """Place `task` by shifting placed tasks along an augmenting path; False if none exists."""
    root = class_of[task]
    if root in ledger.dead_classes:
        return False
    while True:
        found, parent, seen_classes = _search(task, views, class_of, ledger)
        if found >= 0:
            _shift(found, parent, ledger)
            ledger.augmented += 1
            return True
        incomplete = [views[c] for c in seen_classes if not views[c].complete]
        if not incomplete:
            ledger.dead_agents.update(parent)
            ledger.dead_classes.update(seen_classes)
            return False
        for view in incomplete:  # the path may run through agents not gathered yet
            view.gather_all()


def _search(
    task: int, views: Sequence[ClassView], class_of: Sequence[int], ledger: Ledger
) -> tuple[int, dict[int, tuple[int, int]], set[int]]:
    """Breadth-first search over alternating paths from `task` to an agent with a free slot.

    Returns (free agent or -1, parent links agent -> (task moved into it, agent it left),
    classes whose candidates were expanded). A class is expanded once: its tasks share
    candidates, so a second task of the same class reaches nothing new.
    """
    root = class_of[task]
    parent: dict[int, tuple[int, int]] = {}
    seen_classes = {root}
    dead = ledger.dead_agents
    queue: deque[int] = deque()
    for a in views[root].ranked:
        if a not in parent and a not in dead:
            parent[a] = (task, -1)
            queue.append(a)
    while queue:
        a = queue.popleft()
        if ledger.free[a] > 0:
            return a, parent, seen_classes
        for held in ledger.holders.get(a, ()):
            c = class_of[held]
            if c in seen_classes:
                continue
            seen_classes.add(c)
            for b in views[c].ranked:
                if b not in parent and b not in dead:
                    parent[b] = (held, a)
                    queue.append(b)
    return -1, parent, seen_classes


def _shift(free_agent: int, parent: dict[int, tuple[int, int]], ledger: Ledger) -> None:
    agent = free_agent
    while True:
        task, came_from = parent[agent]
        if came_from < 0:
            ledger.assign(task, agent)
            return
        ledger.move(task, agent)
        agent = came_from


def collapse(
    order: Sequence[int],
    views: Sequence[ClassView],
    class_of: Sequence[int],
    ledger: Ledger,
    *,
    exact: bool = True,
    samples: dict[int, int] | None = None,
) -> Ledger:
    """Place tasks in `order`; `samples` maps a task to a Born-sampled first choice."""
    free = ledger.free
    for t in order:
        view = views[class_of[t]]
        if samples is not None:
            wish = samples.get(t, -1)
            if wish >= 0 and free[wish] > 0:
                ledger.assign(t, wish)
                continue
        agent = view.next_free(free)
        if agent >= 0:
            ledger.assign(t, agent)
        elif exact:
            augment(t, views, class_of, ledger)
    return ledger


_SCAN = 64  # better candidates a task looks at per round
_GAIN = 1e-12  # smaller gains are rounding
_BUDGET_PER_TASK = 16
_SLACK = 1e-4  # stop once total quality is within this share of its upper bound


@dataclass(slots=True)
class _Improver:
    """Local moves that raise total match quality and keep every placed task placed."""

    views: Sequence[ClassView]
    class_of: Sequence[int]
    ledger: Ledger
    budget: int  # other classes left to examine: bounds the pass on contended batches
    quality: dict[int, dict[int, float]] = field(default_factory=dict)
    better: dict[int, list[int]] = field(default_factory=dict)  # candidates by quality, best first
    free_of: dict[int, int] = field(default_factory=dict)  # best free candidate per class, until a move
    classes_on: dict[int, dict[int, int]] = field(default_factory=dict)  # agent -> class -> tasks held
    gained: float = 0.0  # total quality the moves added

    def __post_init__(self) -> None:
        for agent, held in self.ledger.holders.items():
            on = self.classes_on[agent] = {}
            for task in held:
                c = self.class_of[task]
                on[c] = on.get(c, 0) + 1

    def q(self, c: int) -> dict[int, float]:
        """Match quality per candidate of class c: the ranking key s + 2T*bias (the score when T = 0).

        The agent the class avoids is worth `AVOIDED` less at every T: no move ever goes there.
        """
        found = self.quality.get(c)
        if found is None:
            view = self.views[c]
            tilt = 2.0 * view.ranker.temperature
            found = self.quality[c] = {
                a: s + tilt * b for a, s, b in zip(view.ranked, view.scores, view.biases, strict=True)
            }
            shun = view.task_class.avoid_agent
            if shun in found:
                found[shun] -= AVOIDED
            self.better[c] = sorted(found, key=found.__getitem__, reverse=True)[:_SCAN]
        return found

    def bound(self) -> tuple[float, float]:
        """(total quality now, an upper bound on it): each class alone on its best slots.

        Without other classes, the k-th task of a class would get the k-th best slot among
        its candidates; no placement of the same tasks can beat that sum.
        """
        per_class: dict[int, int] = {}
        total = 0.0
        for task, a in enumerate(self.ledger.agent_of):
            if a >= 0:
                c = self.class_of[task]
                per_class[c] = per_class.get(c, 0) + 1
                total += self.q(c)[a]
        slots = {a: self.ledger.free[a] + len(held) for a, held in self.ledger.holders.items()}
        free = self.ledger.free
        bound = 0.0
        for c, count in per_class.items():
            qc = self.q(c)
            left = count
            for a in sorted(qc, key=qc.__getitem__, reverse=True):
                k = min(left, slots.get(a, free[a]))
                bound += k * qc[a]
                left -= k
                if not left:
                    break
        return total, bound

    def worst_first(self) -> list[int]:
        """Placed tasks, those furthest below their class's best agent first (where a move gains most)."""
        agent_of, class_of = self.ledger.agent_of, self.class_of
        shortfall = []
        for task, a in enumerate(agent_of):
            if a >= 0:
                c = class_of[task]
                qc = self.q(c)
                shortfall.append((qc[a] - qc[self.better[c][0]], task))
        shortfall.sort()
        return [task for _, task in shortfall]

    def best_free(self, c: int, besides: int) -> int:
        """Class c's best candidate with a free slot (within the scan), or -1.

        Cached until the next move: checks far outnumber moves, and a move is what frees a slot.
        """
        found = self.free_of.get(c)
        if found is None or found == besides:
            self.q(c)
            free = self.ledger.free
            found = next((a for a in self.better[c] if free[a] > 0 and a != besides), -1)
            if besides < 0 or free[besides] <= 0:
                self.free_of[c] = found
        return found

    def move(self, task: int, to: int) -> None:
        """Move a task (the ledger and the per-agent class counts)."""
        c = self.class_of[task]
        old = self.classes_on[self.ledger.agent_of[task]]
        old[c] -= 1
        if not old[c]:
            del old[c]
        on = self.classes_on.setdefault(to, {})
        on[c] = on.get(c, 0) + 1
        self.ledger.move(task, to)

    def step(self, task: int) -> bool:
        """Move `task` to a better agent if some move gains in total; True if it moved."""
        ledger = self.ledger
        a = ledger.agent_of[task]
        c = self.class_of[task]
        qc = self.q(c)
        here = qc[a]
        for b in self.better[c]:
            gain = qc[b] - here
            if gain <= _GAIN:
                return False  # the rest are no better than where the task is
            if ledger.free[b] > 0:
                self.move(task, b)
                self.gained += gain
            elif not self.displace(task, a, b, gain):
                continue
            self.free_of.clear()
            return True
        return False

    def displace(self, task: int, a: int, b: int, gain: float) -> bool:
        """Take b from a task of another class, which moves to `a` or to its best free agent."""
        c = self.class_of[task]
        for d in self.classes_on.get(b, {}):
            if d == c:
                continue  # tasks of one class are interchangeable
            self.budget -= 1
            qd = self.q(d)
            lost = qd[b]
            swap = qd.get(a)
            if swap is not None and gain + swap - lost > _GAIN:
                other = self.held_by(b, d)
                self.move(task, b)  # b is one over for a moment; the next move evens it
                self.move(other, a)
                self.gained += gain + swap - lost
                return True
            if gain + qd[self.better[d][0]] - lost <= _GAIN:
                continue  # not even its best agent would pay for the move
            f = self.best_free(d, b)
            if f >= 0 and gain + qd[f] - lost > _GAIN:
                self.move(self.held_by(b, d), f)
                self.move(task, b)
                self.gained += gain + qd[f] - lost
                return True
        return False

    def held_by(self, agent: int, c: int) -> int:
        """A task of class c on `agent`."""
        return next(t for t in self.ledger.holders[agent] if self.class_of[t] == c)


def improve(views: Sequence[ClassView], class_of: Sequence[int], ledger: Ledger, *, rounds: int = 4) -> int:
    """Raise total match quality without changing which tasks are placed; return the moves made.

    Greedy placement in priority order can give a high-priority task the agent a later
    task valued more. Each placed task looks at the candidates its class values more
    than its agent: it moves into a free slot there, or takes the slot of a task of
    another class that moves to this task's agent or to its own best free agent, when
    the sum gains. Every move keeps each task on a candidate of its class and every
    agent within its free slots, so the priority optimum stands. Tasks of one class on
    one agent are interchangeable, so once one of them cannot move, the rest are skipped
    until the next round.
    """
    improver = _Improver(views, class_of, ledger, budget=_BUDGET_PER_TASK * len(ledger.agent_of))
    start, bound = improver.bound()
    enough = (1.0 - _SLACK) * bound  # within this of the bound, no placement can be much better
    moves = 0
    order = improver.worst_first()
    for _ in range(rounds):
        before = moves
        stuck: set[tuple[int, int]] = set()
        for task in order:
            a = ledger.agent_of[task]
            if improver.budget <= 0 or start + improver.gained >= enough:
                return moves
            if (class_of[task], a) in stuck:
                continue
            if improver.step(task):
                moves += 1
            else:
                stuck.add((class_of[task], a))
        if moves == before:
            break
    return moves
