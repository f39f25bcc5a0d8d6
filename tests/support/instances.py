"""Helpers to build small scheduling instances from the offline contract (shared by test tiers)."""

from __future__ import annotations

from typing import Any

from qorch.scheduler import Result, parse, schedule


def run(agents: list[dict[str, Any]], tasks: list[dict[str, Any]], **policy: Any) -> Result:
    """Schedule an offline-contract instance."""
    inst = parse({"agents": agents, "tasks": tasks, "policy": policy})
    return schedule(inst.snapshot, inst.tasks, inst.policy)


def placed(result: Result) -> dict[str, str]:
    """task name -> agent name for assigned tasks."""
    names = result.snapshot.names
    return {result.tasks.names[t]: names[a] for t, a in enumerate(result.agent_of.tolist()) if a >= 0}


def value(result: Result) -> int:
    """Priority-weighted assigned value."""
    return int(result.tasks.priority[result.agent_of >= 0].sum())
