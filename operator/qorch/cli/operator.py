"""`qorch operator run`: start one operator replica."""

from __future__ import annotations

import dataclasses
import sys

import typer

__all__ = ["app"]

app = typer.Typer(help="The qorch operator.", no_args_is_help=True)
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@app.command("run")
def run_command(
    kubeconfig: str | None = typer.Option(None, envvar="KUBECONFIG", help="Kubeconfig; in-cluster config if unset."),
    namespace: list[str] = typer.Option(
        [],
        "--namespace",
        "-n",
        envvar="QORCH_NAMESPACES",
        help="Watch only these namespaces (repeatable); default: all.",
    ),
    metrics_port: int = typer.Option(8080, envvar="QORCH_METRICS_PORT", help="Prometheus port; 0 turns it off."),
    health_port: int = typer.Option(8081, envvar="QORCH_HEALTH_PORT", help="/healthz and /readyz port; 0: off."),
    identity: str | None = typer.Option(None, envvar="QORCH_IDENTITY", help="Leader-election identity."),
    lease_duration: float = typer.Option(15.0, envvar="QORCH_LEASE_DURATION", help="Seconds a lease is valid."),
    renew_deadline: float = typer.Option(
        10.0, envvar="QORCH_RENEW_DEADLINE", help="Seconds to renew before giving up."
    ),
    retry_period: float = typer.Option(2.0, envvar="QORCH_RETRY_PERIOD", help="Seconds between lease attempts."),
    lease_name: str = typer.Option("qorch-operator", envvar="QORCH_LEASE_NAME", help="Leader Lease name."),
    lease_namespace: str = typer.Option("qorch-system", envvar="QORCH_LEASE_NAMESPACE", help="Leader Lease namespace."),
    write_concurrency: int = typer.Option(
        32, min=1, max=256, envvar="QORCH_WRITE_CONCURRENCY", help="Status writes in flight at once."
    ),
    events_per_second: float = typer.Option(
        50.0, min=0.1, envvar="QORCH_EVENTS_PER_SECOND", help="Budget of Events (burst 3x; Warnings first)."
    ),
    log_level: str = typer.Option(
        "INFO", envvar="QORCH_LOG_LEVEL", help="Log level of the operator: DEBUG, INFO, WARNING or ERROR."
    ),
    audit_log: str | None = typer.Option(
        None, envvar="QORCH_AUDIT_LOG", help="Directory of the audit log (a segment per leader term); unset: off."
    ),
    audit_key: str | None = typer.Option(
        None, envvar="QORCH_AUDIT_KEY", help="Ed25519 signing key of the audit log (PEM, e.g. a mounted Secret)."
    ),
) -> None:
    """Watch Agents and Tasks and, while holding the leader Lease, schedule them."""
    # Imported here, not at the top: the operator's process loads only what it runs.
    from qorch.controller.leader import LeaseTimings  # noqa: PLC0415
    from qorch.controller.runner import OperatorSettings, run  # noqa: PLC0415

    try:
        timings = LeaseTimings(lease_duration, renew_deadline, retry_period)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise typer.Exit(2) from None
    if bool(audit_log) != bool(audit_key):
        sys.stderr.write("error: --audit-log and --audit-key go together (or neither: no audit log)\n")
        raise typer.Exit(2)
    if audit_key:
        from qorch.audit import AuditKeyError, load_private_key  # noqa: PLC0415

        try:
            load_private_key(audit_key)
        except AuditKeyError as exc:
            sys.stderr.write(f"error: --audit-key: {exc}\n")
            raise typer.Exit(2) from None
    if log_level.upper() not in _LOG_LEVELS:
        sys.stderr.write(f"error: --log-level must be one of {', '.join(_LOG_LEVELS)}, got {log_level!r}\n")
        raise typer.Exit(2)
    settings = OperatorSettings(
        kubeconfig=kubeconfig,
        namespaces=tuple(namespace),
        metrics_port=metrics_port,
        health_port=health_port,
        lease_name=lease_name,
        lease_namespace=lease_namespace,
        timings=timings,
        write_concurrency=write_concurrency,
        events_per_second=events_per_second,
        log_level=log_level.upper(),
        audit_log=audit_log,
        audit_key=audit_key,
    )
    if identity:
        settings = dataclasses.replace(settings, identity=identity)
    raise typer.Exit(run(settings))
