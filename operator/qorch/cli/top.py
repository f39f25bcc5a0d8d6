"""`qorch top`: a live view of agent load, queue depth and the scheduler's observables.

On a terminal it redraws every `--interval` seconds until Ctrl-C (or `-n`
refreshes); piped, or with `-o json|yaml`, it prints one snapshot and ends, like
`top -b -n 1`. The observables are the ones the leading operator published in
the SchedulingPolicy's status: top shows what the operator measured, and says
so when nothing has been published (or the user may not read the policy).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

import typer
import yaml

from qorch.cli.tasks import KubeconfigOption, NamespaceOption, OutputOption, _check_output, _fail

if TYPE_CHECKING:
    from rich.console import Group

    from qorch.client import Client

__all__ = ["command", "render", "snapshot"]

#: Phases that wait for a slot: the queue's depth.
WAITING = ("Pending", "Queued", "Retrying")
ACTIVE = ("Assigned", "Running")


async def snapshot(client: Client) -> dict[str, Any]:
    """Agents with their load, tasks by phase, and what the scheduler published."""
    from qorch.client import ClientError  # noqa: PLC0415

    agents = await client.agents()
    tasks = await client.list()
    try:
        policy = await client.policy()
        readable = True
    except ClientError:  # a user with only namespace roles may not read the cluster-scoped policy
        policy, readable = {}, False
    phases = Counter(str(t.phase or "Pending") for t in tasks)
    status = policy.get("status") or {}
    rows = []
    for body in sorted(agents, key=lambda b: b["metadata"]["name"]):
        agent_status = body.get("status") or {}
        rows.append(
            {
                "name": body["metadata"]["name"],
                "phase": agent_status.get("phase", ""),
                "active": int(agent_status.get("activeTasks", 0)),
                "capacity": int((body.get("spec") or {}).get("capacity", 1)),
                "breaker": (agent_status.get("breaker") or {}).get("state", "Closed"),
            }
        )
    return {
        "namespace": client.namespace,
        "agents": rows,
        "tasks": {
            "total": len(tasks),
            "waiting": sum(phases[p] for p in WAITING),
            "active": sum(phases[p] for p in ACTIVE),
            "byPhase": dict(sorted(phases.items())),
        },
        "scheduler": {
            "readable": readable,
            "leader": status.get("leader", ""),
            "lastCycleAt": status.get("lastCycleAt", ""),
            "batch": status.get("batch"),
            "observables": status.get("observables"),
        },
    }


def _bar(active: int, capacity: int, width: int = 20) -> str:
    filled = round(width * min(active, capacity) / capacity) if capacity else 0
    return "█" * filled + "·" * (width - filled)


def plain(snap: dict[str, Any]) -> str:
    """The snapshot as text, for pipes and logs."""
    tasks, scheduler = snap["tasks"], snap["scheduler"]
    out = [
        f"namespace {snap['namespace']}: {tasks['total']} tasks, {tasks['waiting']} waiting, {tasks['active']} active",
        "phases: " + ", ".join(f"{p}={n}" for p, n in tasks["byPhase"].items()) if tasks["byPhase"] else "phases: -",
    ]
    out.append(_scheduler_line(scheduler))
    out.append(f"{'AGENT':<24} {'PHASE':<9} {'ACTIVE':>11}  {'LOAD':<20}  BREAKER")
    for a in snap["agents"]:
        load = f"{a['active']}/{a['capacity']}"
        out.append(f"{a['name']:<24} {a['phase']:<9} {load:>11}  {_bar(a['active'], a['capacity'])}  {a['breaker']}")
    return "\n".join(out)


def _scheduler_line(scheduler: dict[str, Any]) -> str:
    if not scheduler["readable"]:
        return "scheduler: the SchedulingPolicy is not readable with these credentials (RBAC)"
    observables = scheduler["observables"]
    if not observables:
        return "scheduler: nothing published yet (no operator leading, or no pass since it started)"
    values = ", ".join(f"{k} {v:.3f}" for k, v in observables.items() if isinstance(v, int | float))
    when = f"leader {scheduler['leader']} at {scheduler['lastCycleAt']}"
    return f"scheduler: {values}; batch {scheduler['batch']}; {when}"


def render(snap: dict[str, Any]) -> Group:
    """The snapshot for a terminal: a summary and a table of agents with load bars."""
    from rich.console import Group  # noqa: PLC0415 - only a terminal needs rich
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    tasks = snap["tasks"]
    head = Text.assemble(
        ("qorch top", "bold"),
        f"  namespace {snap['namespace']}  ",
        (f"{tasks['waiting']} waiting", "yellow"),
        "  ",
        (f"{tasks['active']} active", "cyan"),
        f"  {tasks['total']} tasks",
    )
    phases = Text("  ".join(f"{p} {n}" for p, n in tasks["byPhase"].items()) or "no tasks", style="dim")
    table = Table("AGENT", "PHASE", "ACTIVE", "LOAD", "BREAKER", box=None, header_style="bold")
    for a in snap["agents"]:
        style = "green" if a["phase"] == "Ready" else "red"
        table.add_row(
            a["name"], Text(a["phase"], style=style), f"{a['active']}/{a['capacity']}",
            _bar(a["active"], a["capacity"]), a["breaker"],
        )  # fmt: skip
    return Group(head, phases, Text(_scheduler_line(snap["scheduler"])), table)


def command(
    namespace: str = NamespaceOption,
    output: str = OutputOption,
    interval: float = typer.Option(2.0, "--interval", min=0.2, help="Seconds between refreshes."),
    count: int = typer.Option(0, "--count", "-n", min=0, help="Refreshes before ending (0: until Ctrl-C)."),
    kubeconfig: str | None = KubeconfigOption,
) -> None:
    """Agent load, queue depth and the scheduler's observables; live on a terminal."""
    _check_output(output)
    from qorch.client import Client, ClientError  # noqa: PLC0415 - only commands that talk to a cluster

    live = output == "table" and sys.stdout.isatty()

    async def go() -> dict[str, Any]:
        async with await Client.connect(kubeconfig, namespace) as client:
            snap = await snapshot(client)
            if not live:
                return snap
            from rich.live import Live  # noqa: PLC0415

            shown = 1
            with Live(render(snap), auto_refresh=False) as screen:
                while count == 0 or shown < count:
                    await asyncio.sleep(interval)
                    snap = await snapshot(client)
                    screen.update(render(snap), refresh=True)
                    shown += 1
            return snap

    try:
        snap = asyncio.run(go())
    except ClientError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        return
    if output == "json":
        typer.echo(json.dumps(snap, indent=2))
    elif output == "yaml":
        typer.echo(yaml.safe_dump(snap, sort_keys=False).rstrip())
    elif not live:
        typer.echo(plain(snap))
