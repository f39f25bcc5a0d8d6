"""The tasks of one cycle, as arrays, grouped into classes of identical constraints.

Tasks that need the same capabilities at the same classification, with the
same selector, group and budget, have exactly the same feasible agents. A
`TaskClass` is such a group: filtering, scoring and amplitudes are computed
once per class instead of once per task, which is what lets a 100,000-task
batch run in well under a second. Classes are formed here and never split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from qorch.scheduler.snapshot import Snapshot

__all__ = ["Selector", "TaskBatch", "TaskClass"]

IntArray = npt.NDArray[np.int32]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Selector:
    """A label selector in canonical form (hashable, so it can key a class)."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    @classmethod
    def of(cls, raw: Mapping[str, object] | None) -> Selector:
        """From `{"zone": "a"}` (matchLabels shorthand) or a full label selector."""
        if not raw:
            return cls()
        if "matchLabels" in raw or "matchExpressions" in raw:
            labels = raw.get("matchLabels") or {}
            exprs = raw.get("matchExpressions") or []
            return cls(
                tuple(sorted((str(k), str(v)) for k, v in dict(labels).items())),  # type: ignore[call-overload]
                tuple(
                    sorted(
                        (str(e["key"]), str(e["operator"]), tuple(sorted(map(str, e.get("values", [])))))
                        for e in exprs  # type: ignore[attr-defined]
                    )
                ),
            )
        return cls(tuple(sorted((str(k), str(v)) for k, v in raw.items())))

    def __bool__(self) -> bool:
        """Whether it constrains anything."""
        return bool(self.match_labels or self.match_expressions)

    def mask(self, snapshot: Snapshot, rows: IntArray) -> npt.NDArray[np.bool_]:
        """Which of `rows` (agent indices) match, vectorised over label columns."""
        ok = np.ones(len(rows), dtype=np.bool_)
        vocab = snapshot.label_vocab
        for key, value in self.match_labels:
            column = snapshot.labels.get(key)
            vid = vocab.get(value)
            if column is None or vid is None:
                return np.zeros(len(rows), dtype=np.bool_)
            ok &= column[rows] == vid
        for key, op, values in self.match_expressions:
            column = snapshot.labels.get(key)
            present = column[rows] >= 0 if column is not None else np.zeros(len(rows), dtype=np.bool_)
            if op == "Exists":
                ok &= present
            elif op == "DoesNotExist":
                ok &= ~present
            else:
                ids = [i for v in values if (i := vocab.get(v)) is not None]
                member = np.isin(column[rows], ids) if column is not None else np.zeros(len(rows), dtype=np.bool_)
                ok &= member if op == "In" else ~member
        return ok

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether one agent's labels match (the scalar twin of `mask`)."""
        if any(labels.get(key) != value for key, value in self.match_labels):
            return False
        for key, op, values in self.match_expressions:
            present = key in labels
            if op == "Exists":
                ok = present
            elif op == "DoesNotExist":
                ok = not present
            else:
                member = present and labels[key] in values
                ok = member if op == "In" else not member
            if not ok:
                return False
        return True

    def describe(self) -> str:
        """Human form, for explanations."""
        parts = [f"{k}={v}" for k, v in self.match_labels]
        parts += [f"{k} {op} ({','.join(vs)})" if vs else f"{op} {k}" for k, op, vs in self.match_expressions]
        return ", ".join(parts)


@dataclass(slots=True)
class TaskClass:
    """Tasks with identical constraints; `members` are task indices in the batch."""

    id: int
    requires: tuple[str, ...]
    classification: int
    selector: Selector
    group: int  # entanglement group (affinity), -1 for none
    avoid_group: int  # failure domain of the last failed attempt, -1 for none
    max_cost: float  # inf when unbounded
    members: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    avoid_agent: int = -1  # row of the agent that failed the last attempt (a last resort), -1 for none


@dataclass(slots=True)
class TaskBatch:
    """The tasks considered this cycle. Row i is task `names[i]`."""

    names: list[str]
    priority: IntArray
    deadline_s: FloatArray  # seconds until the deadline; inf for none
    waited_s: FloatArray  # seconds since the task was queued
    namespace: IntArray  # namespace id
    namespaces: list[str]
    key: list[str]  # sticky key for consistent hashing (defaults to the name)
    class_of: IntArray  # class id per task
    classes: list[TaskClass]

    def __len__(self) -> int:
        """Number of tasks."""
        return len(self.names)

    @classmethod
    def build(
        cls,
        snapshot: Snapshot,
        *,
        names: Sequence[str],
        requires: Sequence[Sequence[str]] | None = None,
        priority: npt.ArrayLike | None = None,
        classification: Sequence[int] | None = None,
        deadline_s: npt.ArrayLike | None = None,
        waited_s: npt.ArrayLike | None = None,
        namespaces: Sequence[str] | None = None,
        selectors: Sequence[Mapping[str, object] | None] | None = None,
        groups: Sequence[str] | None = None,
        avoid_groups: Sequence[str] | None = None,
        max_cost: Sequence[float | None] | None = None,
        keys: Sequence[str] | None = None,
        avoid_agents: Sequence[str] | None = None,
    ) -> TaskBatch:
        """Group tasks into classes; omitted columns take the CRD defaults.

        `avoid_agents` names, per task, the agent (as in `snapshot.names`) that failed its
        last attempt: the task's class ranks it last, so the task goes there only when no
        other candidate has a free slot. An unknown or empty name avoids nothing.
        """
        n = len(names)
        ns_ids: dict[str, int] = {}
        namespace = np.zeros(n, dtype=np.int32)
        if namespaces is not None:
            for i, ns in enumerate(namespaces):
                namespace[i] = ns_ids.setdefault(ns, len(ns_ids))
        else:
            ns_ids["default"] = 0
        class_ids: dict[tuple[object, ...], int] = {}
        classes: list[TaskClass] = []
        class_of = np.empty(n, dtype=np.int32)
        selector_cache: dict[str, Selector] = {}
        for i in range(n):
            req = tuple(sorted(requires[i])) if requires is not None else ()
            clearance = classification[i] if classification is not None else 1
            raw_sel = selectors[i] if selectors is not None else None
            if raw_sel:
                sel_key = json.dumps(raw_sel, sort_keys=True)
                sel = selector_cache.get(sel_key)
                if sel is None:
                    sel = selector_cache[sel_key] = Selector.of(raw_sel)
            else:
                sel = Selector()
            grp = snapshot.group_vocab.get(groups[i]) if groups is not None and groups[i] else None
            group_id = -2 if (groups is not None and groups[i] and grp is None) else (grp if grp is not None else -1)
            avoid = snapshot.group_vocab.get(avoid_groups[i]) if avoid_groups is not None and avoid_groups[i] else None
            raw_budget = max_cost[i] if max_cost is not None else None
            budget = float("inf") if raw_budget is None else float(raw_budget)
            shun = snapshot.row_of(avoid_agents[i]) if avoid_agents is not None and avoid_agents[i] else -1
            key = (req, clearance, sel, group_id, -1 if avoid is None else avoid, budget, shun)
            cid = class_ids.get(key)
            if cid is None:
                cid = class_ids[key] = len(classes)
                classes.append(
                    TaskClass(
                        cid, req, clearance, sel, group_id, -1 if avoid is None else avoid, budget, avoid_agent=shun
                    )
                )
            class_of[i] = cid
        order = np.argsort(class_of, kind="stable")
        bounds = np.searchsorted(class_of[order], np.arange(len(classes) + 1))
        for c in classes:
            c.members = order[bounds[c.id] : bounds[c.id + 1]].astype(np.int32)
        return cls(
            names=list(names),
            priority=np.asarray(priority if priority is not None else np.full(n, 500), dtype=np.int32),
            deadline_s=np.asarray(deadline_s if deadline_s is not None else np.full(n, np.inf), dtype=np.float64),
            waited_s=np.asarray(waited_s if waited_s is not None else np.zeros(n), dtype=np.float64),
            namespace=namespace,
            namespaces=list(ns_ids),
            key=list(keys) if keys is not None else list(names),
            class_of=class_of,
            classes=classes,
        )

    def subset(self, rows: IntArray) -> TaskBatch:
        """The tasks at `rows` as a batch of their own (classes kept, members remapped)."""
        remap = np.full(len(self), -1, dtype=np.int32)
        remap[rows] = np.arange(len(rows), dtype=np.int32)
        classes: list[TaskClass] = []
        new_id = np.full(len(self.classes), -1, dtype=np.int32)
        for c in self.classes:
            members = remap[c.members]
            members = members[members >= 0]
            if len(members):
                new_id[c.id] = len(classes)
                classes.append(
                    TaskClass(
                        len(classes),
                        c.requires,
                        c.classification,
                        c.selector,
                        c.group,
                        c.avoid_group,
                        c.max_cost,
                        np.sort(members),
                        c.avoid_agent,
                    )
                )
        return TaskBatch(
            names=[self.names[i] for i in rows.tolist()],
            priority=self.priority[rows],
            deadline_s=self.deadline_s[rows],
            waited_s=self.waited_s[rows],
            namespace=self.namespace[rows],
            namespaces=self.namespaces,
            key=[self.key[i] for i in rows.tolist()],
            class_of=new_id[self.class_of[rows]],
            classes=classes,
        )
