"""`qorch dag show NAME`: where a task stands in its DAG, as a tree.

Upward, what it needs (`spec.dependsOn`, recursively); downward, what needs it.
Each node carries its phase. A dependency that does not exist yet is shown as
missing, and a cycle is cut where it closes and named, so the command always
ends, whatever the graph.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import typer
import yaml

from qorch.cli.tasks import KubeconfigOption, NamespaceOption, OutputOption, _check_output, _fail, _run

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from qorch.client import Client, TaskView

__all__ = ["app", "graph", "neighbours", "tree"]

app = typer.Typer(help="Task DAGs.", no_args_is_help=True)

MISSING = "missing"
_STYLES = {"Succeeded": "green", "Failed": "red", "DeadLettered": "red", "Cancelled": "yellow", "Running": "cyan",
           "Assigned": "cyan", MISSING: "magenta"}  # fmt: skip


def graph(views: Sequence[TaskView]) -> tuple[dict[str, str], dict[str, list[str]], dict[str, list[str]]]:
    """(phase by name, needs by name, needed-by by name) of one namespace's tasks."""
    phase = {v.name: str(v.phase or "new") for v in views}
    needs = {v.name: list(v.spec.depends_on) for v in views}
    needed_by: dict[str, list[str]] = {v.name: [] for v in views}
    for name, parents in needs.items():
        for parent in parents:
            needed_by.setdefault(parent, []).append(name)
    return phase, needs, needed_by


def neighbours(views: Sequence[TaskView], name: str) -> tuple[list[str], list[str]]:
    """`name (phase)` of what the task needs and of what needs it, one level each (for `describe`)."""
    phase, needs, needed_by = graph(views)
    up = [f"{p} ({phase.get(p, MISSING)})" for p in needs.get(name, [])]
    down = [f"{c} ({phase[c]})" for c in sorted(needed_by.get(name, []))]
    return up, down


def tree(views: Sequence[TaskView], root: str) -> dict[str, Any]:
    """The task with what it needs (recursively, key `needs`) and what needs it (recursively, `neededBy`)."""
    phase, needs, needed_by = graph(views)

    def walk(name: str, edges: Mapping[str, list[str]], key: str, path: tuple[str, ...]) -> dict[str, Any]:
        node: dict[str, Any] = {"name": name, "phase": phase.get(name, MISSING)}
        if name in path:
            node["cycle"] = True  # cut here: the path above already holds it
            return node
        below = [walk(n, edges, key, (*path, name)) for n in sorted(edges.get(name, []))]
        if below:
            node[key] = below
        return node

    up = walk(root, needs, "needs", ())
    down = walk(root, needed_by, "neededBy", ())
    return {**up, **({"neededBy": down["neededBy"]} if "neededBy" in down else {})}


def _label(node: Mapping[str, Any]) -> str:
    suffix = "  ← cycle" if node.get("cycle") else ""
    return f"{node['name']} ({node['phase']}){suffix}"


def lines(root: Mapping[str, Any]) -> list[str]:
    """The tree as text: the task, then what it needs, then what needs it."""
    out = [_label(root)]

    def branch(nodes: Sequence[Mapping[str, Any]], key: str, prefix: str) -> None:
        for i, node in enumerate(nodes):
            last = i == len(nodes) - 1
            out.append(f"{prefix}{'└── ' if last else '├── '}{_label(node)}")
            branch(node.get(key, []), key, prefix + ("    " if last else "│   "))

    for key, title in (("needs", "needs"), ("neededBy", "needed by")):
        if root.get(key):
            out.append(f"{title}:")
            branch(root[key], key, "")
    return out


@app.command("show")
def show(
    name: str = typer.Argument(..., help="The task's name."),
    namespace: str = NamespaceOption,
    output: str = OutputOption,
    kubeconfig: str | None = KubeconfigOption,
) -> None:
    """The task, what it needs and what needs it, with every task's phase."""
    _check_output(output)

    async def everything(client: Client) -> list[TaskView]:
        return await client.list()

    views: list[TaskView] = _run(kubeconfig, namespace, everything)
    if name not in {v.name for v in views}:
        raise _fail(f"task {name!r} in {namespace}: not found (check the name and the namespace)")
    root = tree(views, name)
    if output == "json":
        typer.echo(json.dumps(root, indent=2))
    elif output == "yaml":
        typer.echo(yaml.safe_dump(root, sort_keys=False).rstrip())
    elif sys.stdout.isatty():
        from rich.console import Console  # noqa: PLC0415 - only a terminal needs it
        from rich.text import Text  # noqa: PLC0415

        console = Console()
        for line in lines(root):
            text = Text(line)
            for phase, style in _STYLES.items():
                text.highlight_words([f"({phase})"], style)
            console.print(text)
    else:
        typer.echo("\n".join(lines(root)))
