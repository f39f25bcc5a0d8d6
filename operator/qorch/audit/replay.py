"""Invariant replay: each task's final agent and outcome, from the log alone.

A pure function over entries (dicts, as the log holds them). A task is keyed by
its subject's `task` (namespace/name); an entry with another `uid` than the one
seen before starts the task afresh (a task deleted and created again).

- assign (data.agent): agent = data.agent, outcome "Assigned"
- requeue, retry: agent None, outcome "Pending"
- finish (data.phase, optional data.agent): outcome = data.phase ("Succeeded", "Failed", ...)
- dead-letter: agent None, outcome "DeadLettered"
- reject: outcome "Rejected"
Other kinds do not change a task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["replay"]


def replay(entries: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str | None, str]]:
    """Map each task key to (its final agent or None, its outcome)."""
    state: dict[str, tuple[str | None, str]] = {}
    uids: dict[str, str] = {}
    for entry in entries:
        subject = entry.get("subject") or {}
        task = subject.get("task")
        if not isinstance(task, str):
            continue
        kind, data = entry.get("kind"), entry.get("data") or {}
        uid = subject.get("uid")
        if isinstance(uid, str):
            if uids.get(task, uid) != uid:
                state.pop(task, None)
            uids[task] = uid
        agent, outcome = state.get(task, (None, "Pending"))
        if kind == "assign":
            agent, outcome = data.get("agent"), "Assigned"
        elif kind in {"requeue", "retry"}:
            agent, outcome = None, "Pending"
        elif kind == "finish":
            agent, outcome = data.get("agent", agent), str(data.get("phase", "Finished"))
        elif kind == "dead-letter":
            agent, outcome = None, "DeadLettered"
        elif kind == "reject":
            outcome = "Rejected"
        else:
            continue
        state[task] = (agent, outcome)
    return state
