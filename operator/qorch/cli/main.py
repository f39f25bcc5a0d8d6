"""The `qorch` command: one Typer app, a sub-app per area.

Every error a user can cause ends here as one line on stderr and an exit code
(2 for bad input, 1 for an environment problem), never a traceback.
"""

from __future__ import annotations

import typer

from qorch.cli import agent, audit, crds, dag, dev, dlq, operator, schedule, tasks, top

__all__ = ["app", "run"]

app = typer.Typer(
    name="qorch",
    help="qorch: schedule work for fleets of AI agents on Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(dev.app, name="dev")
app.add_typer(crds.app, name="crds")
app.command("schedule")(schedule.command)
app.add_typer(operator.app, name="operator")
app.add_typer(agent.app, name="agent")
tasks.register(app)
app.add_typer(dag.app, name="dag")
app.add_typer(dlq.app, name="dlq")
app.command("top")(top.command)
app.add_typer(audit.app, name="audit")


def run() -> None:
    """Console-script entry point."""
    app()
