"""`qorch agent run`: serve one Agent with the user's handlers."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

import typer

__all__ = ["app"]

app = typer.Typer(help="Run an agent.", no_args_is_help=True)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MAX_CAPACITY = 100_000
_MAX_NAME = 63
_LABEL = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def _fail(message: str) -> typer.Exit:
    sys.stderr.write(f"error: {message}\n")
    return typer.Exit(2)


def _handlers(target: str) -> Any:  # noqa: ANN401 - a Handlers object, built from the user's module
    """`module:attr` -> Handlers: attr is a Handlers object or one callable for every task."""
    from qorch.agent.runtime import Handlers  # noqa: PLC0415

    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise _fail(f"handler {target!r} must be MODULE:NAME, e.g. myagent:handle")
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _fail(f"cannot import module {module_name!r} for the handler: {exc}") from None
    found = getattr(module, attr, None)
    if isinstance(found, Handlers):
        return found
    if callable(found):
        return Handlers(default=found)
    raise _fail(f"{module_name}.{attr} must be a function taking a TaskContext, or a qorch.agent.Handlers")


@app.command("run")
def run_command(
    handler: str = typer.Argument(..., help="MODULE:NAME of a handler function or a qorch.agent.Handlers."),
    name: str = typer.Option(..., "--name", envvar="QORCH_AGENT_NAME", help="The Agent's name."),
    namespace: str = typer.Option("default", "--namespace", "-n", envvar="QORCH_AGENT_NAMESPACE"),
    capabilities: str = typer.Option("", help="Comma-separated capabilities, used when the Agent does not exist yet."),
    capacity: int = typer.Option(1, help="Attempts at once, used when the Agent does not exist yet."),
    label: list[str] = typer.Option([], help="KEY=VALUE label for a new Agent (repeatable)."),
    kubeconfig: str | None = typer.Option(None, envvar="KUBECONFIG", help="Kubeconfig; in-cluster config if unset."),
    lease_seconds: int = typer.Option(10, min=2, max=3600, help="leaseDurationSeconds of the liveness Lease."),
    renew_seconds: float = typer.Option(2.0, min=0.1, help="Seconds between Lease renewals."),
    grace_seconds: float = typer.Option(10.0, min=0.0, help="On SIGTERM, seconds running handlers may finish."),
) -> None:
    """Serve Agent NAME: claim its assigned tasks, run the handler, report results (docs/protocol.md)."""
    from qorch.agent.runtime import RuntimeSettings, serve  # noqa: PLC0415

    if not _DNS_LABEL.match(name) or len(name) > _MAX_NAME:
        raise _fail(f"--name {name!r} must be a DNS label (lowercase letters, digits and '-')")
    caps = tuple(c.strip() for c in capabilities.split(",") if c.strip())
    bad = [c for c in caps if not _DNS_LABEL.match(c)]
    if bad or len(set(caps)) != len(caps):
        raise _fail(f"--capabilities must be distinct DNS labels, got {capabilities!r}")
    if not 1 <= capacity <= _MAX_CAPACITY:
        raise _fail(f"--capacity must be from 1 to {_MAX_CAPACITY}, got {capacity}")
    if renew_seconds * 3 > lease_seconds:
        raise _fail(
            f"--renew-seconds ({renew_seconds:g}) must be at most a third of --lease-seconds ({lease_seconds}), "
            "so a late renewal or two does not let the Lease lapse"
        )
    labels = dict(item.split("=", 1) for item in label if "=" in item)
    if len(labels) != len(label) or not all(_LABEL.match(k) and _LABEL_VALUE.match(v) for k, v in labels.items()):
        raise _fail("--label must be KEY=VALUE with a Kubernetes label key and value (letters, digits, '-', '_', '.')")
    handlers = _handlers(handler)
    settings = RuntimeSettings(
        name=name,
        namespace=namespace,
        capabilities=caps,
        capacity=capacity,
        labels=labels,
        lease_seconds=lease_seconds,
        renew_seconds=renew_seconds,
        grace_seconds=grace_seconds,
    )
    serve(settings, handlers, kubeconfig)
