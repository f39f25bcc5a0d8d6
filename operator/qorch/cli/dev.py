"""`qorch dev ...`: a local development environment on this machine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from qorch.devcluster import AssetsNotFoundError, ControlPlaneError, background, build_binaries, stack

__all__ = ["app"]

app = typer.Typer(help="Local development environment.", no_args_is_help=True)
cluster = typer.Typer(help="A local Kubernetes control plane (etcd + kube-apiserver).", no_args_is_help=True)
app.add_typer(cluster, name="cluster")


def _fail(message: str, code: int = 1) -> typer.Exit:
    sys.stderr.write(f"error: {message}\n")
    return typer.Exit(code)


@app.command("up")
def dev_up(
    examples: Path = typer.Option(Path("examples"), help="Folder of manifests to apply into the demo namespace."),
    policies: Path = typer.Option(Path("manifests/policies"), help="Admission policies to install (kustomize)."),
) -> None:
    """Start the demo stack in the background: control plane, CRDs, operators, agent pool, examples."""
    try:
        started = stack.up(examples, policies)
    except (AssetsNotFoundError, ControlPlaneError, RuntimeError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(started.overview)
    typer.echo(f"control plane: {started.server}")
    for url in started.metrics:
        typer.echo(f"operator metrics: {url}")
    typer.echo(f"export KUBECONFIG={started.kubeconfig}")
    typer.echo(f"export PATH={started.kubectl.parent}:$PATH   # kubectl {started.kubectl}")
    typer.echo("stop it with: qorch dev down (or make down)")


@app.command("down")
def dev_down() -> None:
    """Stop everything `qorch dev up` started."""
    typer.echo("stopped" if stack.down() else "was not running")


@app.command("agents")
def dev_agents(
    namespace: str = typer.Option("qorch-demo", "--namespace", "-n", help="Namespace whose Agents to simulate."),
    kubeconfig: str | None = typer.Option(None, envvar="KUBECONFIG", help="Kubeconfig of the cluster."),
    selector: str = typer.Option("", "--selector", "-l", help="Serve only the Agents matching this label selector."),
    failure_rate: float = typer.Option(0.0, min=0.0, max=1.0, help="Share of attempts that fail."),
    work_seconds: str = typer.Option("1,4", help="MIN,MAX seconds an attempt takes."),
    lease_seconds: int = typer.Option(10, min=1, help="leaseDurationSeconds written on the agents' Leases."),
    renew_seconds: float = typer.Option(2.0, min=0.05, help="Seconds between Lease renewals."),
    poll_seconds: float = typer.Option(0.25, min=0.01, help="Seconds between looks for assigned attempts."),
    claim_delay: float = typer.Option(0.0, min=0.0, help="Pause before claiming an attempt (to race requeues)."),
    record: str = typer.Option("", help="Append every claim, refusal and finish to this JSON-lines file."),
) -> None:
    """Run a SIMULATED agent pool (protocol-true, no handlers), for tests and load benchmarks.

    `qorch dev up` runs real agent runtimes; this pool only pretends to run tasks.
    """
    try:
        low, high = (float(v) for v in work_seconds.split(","))
    except ValueError:
        raise _fail(f"--work-seconds must be MIN,MAX in seconds, got {work_seconds!r}", 2) from None
    if not 0 <= low <= high:
        raise _fail(f"--work-seconds must satisfy 0 <= MIN <= MAX, got {work_seconds!r}", 2)
    from qorch.agent import simulated  # noqa: PLC0415 - only this command needs the pool

    simulated.run(
        simulated.PoolSettings(
            namespace=namespace,
            kubeconfig=kubeconfig,
            selector=selector,
            failure_rate=failure_rate,
            work_seconds=(low, high),
            lease_seconds=lease_seconds,
            renew_seconds=renew_seconds,
            poll_seconds=poll_seconds,
            claim_delay=claim_delay,
            record=record,
        )
    )


@cluster.command("build")
def cluster_build() -> None:
    """Build kube-apiserver, etcd and kubectl from the Go module proxy (cached)."""
    try:
        binaries = build_binaries()
    except AssetsNotFoundError as exc:
        raise _fail(str(exc)) from None
    typer.echo(binaries.folder)


@cluster.command("up")
def cluster_up() -> None:
    """Start the control plane in the background and print how to use it."""
    try:
        build_binaries()
        state = background.up()
    except (AssetsNotFoundError, ControlPlaneError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"control plane up at {state.server}")
    typer.echo(f"kubeconfig: {state.kubeconfig}")
    typer.echo(f"export KUBECONFIG={state.kubeconfig}")


@cluster.command("down")
def cluster_down() -> None:
    """Stop the background control plane and delete its data."""
    typer.echo("stopped" if background.down() else "was not running")


@cluster.command("status")
def cluster_status(
    output: str = typer.Option("text", "--output", "-o", help="text or json"),
) -> None:
    """Say whether the control plane is up; exit 1 when it is not."""
    state = background.status()
    if output == "json":
        typer.echo(json.dumps(background.as_dict(state)))
    elif state.up:
        typer.echo(f"up: {state.server} (kubeconfig {state.kubeconfig})")
    else:
        typer.echo(f"down: {state.detail}")
    raise typer.Exit(0 if state.up else 1)


@cluster.command("kubeconfig")
def cluster_kubeconfig() -> None:
    """Print the admin kubeconfig path of the running control plane."""
    state = background.status()
    if not state.up:
        raise _fail("the control plane is not running; start it with `qorch dev cluster up`")
    typer.echo(state.kubeconfig)
