"""Invariant replay: each task's final agent and outcome, from the log alone.

A pure function over entries (dicts, as the log holds them). A task is keyed by
its subject's `task` (namespace/name); an entry with another `uid` than the one
seen before starts the task afresh (a task deleted and created again).

- assign (data.agent): agent = data.agent, outcome "Assigned"
- start: the agent claimed it, outcome "Running"
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
        step = _step(str(kind), data, state.get(task, (None, "Pending")))
        if step is not None:
            state[task] = step
    return state


def _step(kind: str, data: Mapping[str, Any], now: tuple[str | None, str]) -> tuple[str | None, str] | None:  # noqa: PLR0911
    """A task's (agent, outcome) after one entry of `kind`; None when the entry does not change it."""
    agent, _ = now
    if kind == "assign":
        return data.get("agent"), "Assigned"
    if kind == "start":
        return data.get("agent", agent), "Running"
    if kind in {"requeue", "retry"}:
        return None, "Pending"
    if kind == "finish":
        return data.get("agent", agent), str(data.get("phase", "Finished"))
    if kind == "dead-letter":
        return None, "DeadLettered"
    if kind == "reject":
        return agent, "Rejected"
    return None
