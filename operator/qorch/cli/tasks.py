"""`qorch get|describe|submit|wait|cancel|approve|reject`: Tasks from a terminal, in the manner of kubectl.

Tables on a terminal, plain columns when piped, `-o json|yaml` for scripts. Every
failure is one line on stderr that says what to do, and a non-zero exit: 2 for
bad input, 1 for everything the cluster said no to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path  # noqa: TC003 - typer reads the annotations at runtime
from typing import TYPE_CHECKING, Any

import typer
import yaml

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Awaitable, Callable

    from qorch.api.task import HistoryEntry
    from qorch.client import Client, TaskView

__all__ = ["register"]

_OUTPUTS = ("table", "json", "yaml")
KubeconfigOption = typer.Option(None, "--kubeconfig", envvar="KUBECONFIG", help="Kubeconfig file.")
NamespaceOption = typer.Option("default", "--namespace", "-n", envvar="QORCH_NAMESPACE", help="Namespace.")
OutputOption = typer.Option("table", "--output", "-o", help="table, json or yaml.")


def _fail(message: str, code: int = 1) -> typer.Exit:
    sys.stderr.write(f"error: {message}\n")
    return typer.Exit(code)


def _run(kubeconfig: str | None, namespace: str, body: Callable[[Client], Awaitable[Any]]) -> Any:  # noqa: ANN401
    """Connect, run `body`, close; a ClientError becomes one line and exit 1."""
    from qorch.client import Client, ClientError  # noqa: PLC0415 - only commands that talk to a cluster

    async def go() -> Any:  # noqa: ANN401 - whatever the command returns
        async with await Client.connect(kubeconfig, namespace) as client:
            return await body(client)

    try:
        return asyncio.run(go())
    except ClientError as exc:
        raise _fail(str(exc)) from None


def _check_output(output: str) -> None:
    if output not in _OUTPUTS:
        raise _fail(f"--output must be one of {', '.join(_OUTPUTS)}, got {output!r}", 2)


def _task_row(view: TaskView) -> list[str]:
    status = view.status
    agent = status.assignment.agent if status.assignment else ""
    reason = status.conditions[0].reason if status.conditions else ""
    return [view.name, str(status.phase or ""), agent, str(view.spec.priority), str(status.attempts), reason]


def _task_doc(view: TaskView) -> dict[str, Any]:
    return {
        "name": view.name,
        "namespace": view.namespace,
        "spec": view.spec.model_dump(mode="json", by_alias=True, exclude_defaults=True),
        "status": view.status.model_dump(mode="json", by_alias=True, exclude_defaults=True),
    }


def _emit(output: str, header: list[str], rows: list[list[str]], docs: list[dict[str, Any]]) -> None:
    if output == "json":
        typer.echo(json.dumps(docs if len(docs) != 1 else docs[0], indent=2))
        return
    if output == "yaml":
        typer.echo(yaml.safe_dump(docs if len(docs) != 1 else docs[0], sort_keys=False).rstrip())
        return
    if sys.stdout.isatty():
        from rich.console import Console  # noqa: PLC0415 - only a terminal needs it
        from rich.table import Table  # noqa: PLC0415

        table = Table(*header, box=None, header_style="bold")
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    for row in [header, *rows]:
        typer.echo("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


_TASK_HEADER = ["NAME", "PHASE", "AGENT", "PRIORITY", "ATTEMPTS", "REASON"]
_AGENT_HEADER = ["NAME", "PHASE", "CAPACITY", "ACTIVE"]
_WATCH_WIDTHS = (40, 16, 24, 8, 8, 0)  # a watch cannot size columns to rows it has not seen yet


def _agent_row(body: dict[str, Any]) -> list[str]:
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    return [body["metadata"]["name"], str(status.get("phase", "")), str(spec.get("capacity", 1)),
            str(status.get("activeTasks", 0))]  # fmt: skip


def _follow(plural: str, name: str | None, output: str, namespace: str, kubeconfig: str | None) -> None:
    """`get -w`: a line per change (the listed objects first), until Ctrl-C."""
    from qorch.client import TaskView  # noqa: PLC0415

    header = _TASK_HEADER if plural == "tasks" else _AGENT_HEADER

    def line(cells: list[str]) -> str:
        return " ".join(c.ljust(w) for c, w in zip(cells, _WATCH_WIDTHS, strict=False)).rstrip()

    async def follow(client: Client) -> None:
        if output == "table":
            typer.echo(line(header))
        async for _, body in client.watch(plural):
            if name and body["metadata"]["name"] != name:
                continue
            if output != "table":
                doc = _task_doc(TaskView.of(body)) if plural == "tasks" else body
                typer.echo(json.dumps(doc) if output == "json" else "---\n" + yaml.safe_dump(doc).rstrip())
            else:
                typer.echo(line(_task_row(TaskView.of(body)) if plural == "tasks" else _agent_row(body)))

    with contextlib.suppress(KeyboardInterrupt):
        _run(kubeconfig, namespace, follow)


def get(
    kind: str = typer.Argument(..., help="tasks or agents"),
    name: str | None = typer.Argument(None, help="One object's name."),
    namespace: str = NamespaceOption,
    output: str = OutputOption,
    watch: bool = typer.Option(False, "--watch", "-w", help="After listing, print a line per change."),
    kubeconfig: str | None = KubeconfigOption,
) -> None:
    """List tasks (NAME PHASE AGENT PRIORITY ATTEMPTS REASON) or agents (NAME PHASE CAPACITY ACTIVE)."""
    _check_output(output)
    plural = {"task": "tasks", "tasks": "tasks", "qtask": "tasks", "agent": "agents", "agents": "agents"}.get(kind)
    if plural is None:
        raise _fail(f"unknown kind {kind!r}: use tasks or agents", 2)
    if watch:
        _follow(plural, name, output, namespace, kubeconfig)
        return
    if plural == "tasks":

        async def tasks(client: Client) -> list[TaskView]:
            return [await client.get(name)] if name else await client.list()

        views: list[TaskView] = _run(kubeconfig, namespace, tasks)
        _emit(output, _TASK_HEADER, [_task_row(v) for v in views], [_task_doc(v) for v in views])
        return

    async def agents(client: Client) -> list[dict[str, Any]]:
        found = await client.agents()
        return [a for a in found if not name or a["metadata"]["name"] == name]

    bodies: list[dict[str, Any]] = _run(kubeconfig, namespace, agents)
    if name and not bodies:
        raise _fail(f"agent {name!r} in {namespace}: not found (check the name and the namespace)")
    docs = [{"name": b["metadata"]["name"], "spec": b["spec"], "status": b.get("status") or {}} for b in bodies]
    _emit(output, _AGENT_HEADER, [_agent_row(b) for b in bodies], docs)


def describe(
    name: str = typer.Argument(..., help="The task's name."),
    namespace: str = NamespaceOption,
    output: str = typer.Option("text", "--output", "-o", help="text, json or yaml."),
    kubeconfig: str | None = KubeconfigOption,
) -> None:
    """A task's phase, assignment, explanation, execution, history and place in its DAG."""
    if output not in ("text", "json", "yaml"):
        raise _fail(f"--output must be one of text, json, yaml, got {output!r}", 2)

    async def one(client: Client) -> tuple[TaskView, list[TaskView]]:
        view = await client.get(name)
        return view, await client.list()  # where it stands in its DAG: what it needs, what needs it

    view, others = _run(kubeconfig, namespace, one)
    from qorch.cli.dag import neighbours  # noqa: PLC0415 - dag builds on this module's helpers

    needs, needed_by = neighbours([*(o for o in others if o.name != view.name), view], view.name)
    if output != "text":
        doc = {**_task_doc(view), "dag": {"needs": needs, "neededBy": needed_by}}
        typer.echo(json.dumps(doc, indent=2) if output == "json" else yaml.safe_dump(doc, sort_keys=False).rstrip())
        return
    typer.echo("\n".join(_described(view, needs, needed_by)))


def _described(view: TaskView, needs: list[str], needed_by: list[str]) -> list[str]:
    """`qorch describe` as text lines."""
    status = view.status
    lines = [f"Name:       {view.name}", f"Namespace:  {view.namespace}", f"Goal:       {view.spec.goal}"]
    lines += [f"Requires:   {', '.join(view.spec.requires) or '-'}", f"Priority:   {view.spec.priority}"]
    if needs:
        lines.append(f"Needs:      {', '.join(needs)}")
    if needed_by:
        lines.append(f"Needed by:  {', '.join(needed_by)}")
    lines += [f"Phase:      {status.phase or 'new'}", f"Attempts:   {status.attempts}"]
    if status.assignment:
        a = status.assignment
        lines.append(
            f"Assigned:   {a.agent} (attempt {a.attempt}, score {a.score:.3f}, probability {a.probability:.3g})"
        )
    if status.explanation and status.explanation.summary:
        lines.append(f"Why:        {status.explanation.summary}")
    if status.execution:
        e = status.execution
        if e.result:
            lines.append(f"Result:     {e.result}")
        if e.error:
            lines.append(f"Error:      {e.error}")
    if status.history:
        shown, total = len(status.history), max(status.history_total, len(status.history))
        lines.append(f"History (showing {shown} of {total}):" if total > shown else "History:")
        lines += [_history_line(h) for h in status.history]
    return lines


def _clock(when: dt.datetime) -> str:
    """Time of day to the millisecond (attempts often last less than a second)."""
    return when.strftime("%H:%M:%S.%f")[:-3]


def _history_line(entry: HistoryEntry) -> str:
    """One history entry: time, phase, reason, the attempt (how it ended, when its handler ran), message."""
    what = f"attempt {entry.attempt} on {entry.agent}" if entry.agent and entry.attempt else ""
    if entry.outcome is not None:
        what += f": {entry.outcome}"
        started, finished = entry.started_at, entry.finished_at
        if started is not None and finished is not None:
            took = (finished - started).total_seconds()
            what += f" (ran {_clock(started)} to {_clock(finished)}, {took:.3g}s)"
        elif started is not None:
            what += f" (started {_clock(started)})"
    detail = " | ".join(part for part in (what, entry.message) if part)
    return f"  {entry.time:%H:%M:%S}  {entry.phase!s:<16} {entry.reason:<20} {detail}".rstrip()


def submit(
    goal: str | None = typer.Argument(None, help="What the agent should achieve."),
    file: Path | None = typer.Option(None, "--file", "-f", help="A Task spec as YAML (goal, requires, ...)."),
    name: str | None = typer.Option(None, "--name", help="The Task's name (default: generated)."),
    requires: list[str] = typer.Option([], "--requires", "-r", help="A capability (repeatable)."),
    priority: int | None = typer.Option(None, "--priority", "-p", help="0 to 1000."),
    namespace: str = NamespaceOption,
    kubeconfig: str | None = KubeconfigOption,
) -> None:
    """Create a Task from flags or a file; prints its name."""
    spec: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = yaml.safe_load(file.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise _fail(f"cannot read {file}: {exc}", 2) from None
        if not isinstance(loaded, dict):
            raise _fail(f"{file} must hold a Task spec (a mapping with goal, requires, ...)", 2)
        spec = dict(loaded.get("spec", loaded))
    goal = goal or spec.pop("goal", None)
    spec.pop("goal", None)
    if not goal:
        raise _fail("a goal is needed: qorch submit 'what to do' --requires code, or -f task.yaml", 2)
    if requires:
        spec["requires"] = requires
    if priority is not None:
        spec["priority"] = priority

    async def create(client: Client) -> str:
        return await client.submit(goal, name=name, **spec)

    typer.echo(_run(kubeconfig, namespace, create))


def wait(
    names: list[str] = typer.Argument(..., help="Task names."),
    timeout: float = typer.Option(300.0, "--timeout", help="Seconds before giving up."),
    namespace: str = NamespaceOption,
    kubeconfig: str | None = KubeconfigOption,
) -> None:
    """Wait until the tasks end; exit 0 if all succeeded, 1 otherwise."""
    from qorch.api.enums import TaskPhase  # noqa: PLC0415

    bar = _ProgressBar(len(names)) if sys.stderr.isatty() else None

    def progress(views: dict[str, TaskView]) -> None:
        if bar is not None:
            bar.show(views)

    async def until_done(client: Client) -> dict[str, TaskView]:
        return await client.wait(names, timeout=timeout, progress=progress)

    try:
        views: dict[str, TaskView] = _run(kubeconfig, namespace, until_done)
    finally:
        if bar is not None:
            bar.close()
    for view in views.values():
        typer.echo(f"{view.name}\t{view.phase}")
    if any(v.phase != TaskPhase.SUCCEEDED for v in views.values()):
        raise typer.Exit(1)


class _ProgressBar:
    """`qorch wait` on a terminal: a bar of tasks done, and how many are in each phase."""

    def __init__(self, total: int) -> None:
        from rich.console import Console  # noqa: PLC0415 - only a terminal needs rich
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

        self._progress = Progress(
            TextColumn("waiting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.description}"), console=Console(stderr=True), transient=False,
        )  # fmt: skip
        self._task = self._progress.add_task("", total=total)
        self._progress.start()

    def show(self, views: dict[str, TaskView]) -> None:
        counts: dict[str, int] = {}
        for view in views.values():
            phase = str(view.phase or "new")
            counts[phase] = counts.get(phase, 0) + 1
        done = sum(1 for v in views.values() if v.done)
        description = "  ".join(f"{p} {n}" for p, n in sorted(counts.items()))
        self._progress.update(self._task, completed=done, description=description)

    def close(self) -> None:
        self._progress.stop()


def _decide(decision: str) -> Callable[..., None]:
    """`qorch approve` or `qorch reject`: one Approval in the caller's own name."""

    def command(
        task: str = typer.Argument(..., help="The task awaiting approval."),
        reason: str = typer.Option("", "--reason", help="Why; shown in the task's history."),
        namespace: str = NamespaceOption,
        kubeconfig: str | None = KubeconfigOption,
    ) -> None:
        async def decide(client: Client) -> str:
            act = client.approve if decision == "approve" else client.reject
            return await act(task, reason=reason)

        typer.echo(f"approval.qorch.io/{_run(kubeconfig, namespace, decide)} created")

    command.__doc__ = f"{decision.capitalize()} a task in your own name."
    return command


def cancel(
    names: list[str] = typer.Argument(..., help="Task names."),
    namespace: str = NamespaceOption,
    kubeconfig: str | None = KubeconfigOption,
) -> None:
    """Stop tasks in any phase: a queued one never runs, a running handler is cancelled."""

    async def stop(client: Client) -> list[TaskView]:
        return [await client.cancel(name) for name in names]

    for view in _run(kubeconfig, namespace, stop):
        ended = view.done and view.phase is not None and view.phase.value != "Cancelled"
        note = f" (it had ended already: {view.phase})" if ended else ""
        typer.echo(f"task.qorch.io/{view.name} cancel requested{note}")


def register(app: typer.Typer) -> None:
    """Add the commands to the top-level app."""
    for command in (get, describe, submit, wait, cancel):
        app.command(command.__name__)(command)
    for decision in ("approve", "reject"):
        app.command(decision)(_decide(decision))
