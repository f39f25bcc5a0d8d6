"""`qorch dlq list|redrive`: the dead-letter queue, tasks whose attempts ran out.

`list` is `kubectl get qtask --field-selector status.phase=DeadLettered` with each
task's attempts and last error; `redrive` raises `spec.redrive`, and the operator
queues the task again with a fresh attempt budget, recorded in its history.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from qorch.cli.tasks import KubeconfigOption, NamespaceOption, OutputOption, _check_output, _emit, _run, _task_doc

if TYPE_CHECKING:
    from qorch.client import Client, TaskView

__all__ = ["app"]

app = typer.Typer(help="The dead-letter queue: tasks whose attempts ran out.", no_args_is_help=True)


def _row(view: TaskView) -> list[str]:
    error = view.status.execution.error if view.status.execution else ""
    return [view.name, str(view.status.attempts), str(view.status.redrives), error[:100]]


@app.command("list")
def list_(
    namespace: str = NamespaceOption,
    output: str = OutputOption,
    kubeconfig: str | None = KubeconfigOption,
) -> None:
    """Dead-lettered tasks: NAME ATTEMPTS REDRIVES LAST-ERROR."""
    _check_output(output)

    async def dead(client: Client) -> list[TaskView]:
        return list(await client.dead_letters())

    views: list[TaskView] = _run(kubeconfig, namespace, dead)
    _emit(
        output, ["NAME", "ATTEMPTS", "REDRIVES", "LAST-ERROR"], [_row(v) for v in views], [_task_doc(v) for v in views]
    )


@app.command("redrive")
def redrive(
    names: list[str] = typer.Argument(..., help="Dead-lettered task names."),
    namespace: str = NamespaceOption,
    kubeconfig: str | None = KubeconfigOption,
) -> None:
    """Give dead-lettered tasks a fresh attempt budget; the operator queues them again."""

    async def again(client: Client) -> list[TaskView]:
        return [await client.redrive(name) for name in names]

    for view in _run(kubeconfig, namespace, again):
        typer.echo(f"task.qorch.io/{view.name} redrive {view.spec.redrive} requested")
