"""`qorch audit verify|replay|keygen`: check a tamper-evident audit log; rebuild task outcomes from it; make keys.

`verify` checks the hash chain, every signature (following key rotations from
the trusted first key) and the anchors, and names the first bad entry:
"OK: N entries, head SEQ HASH" and exit 0, or "TAMPERED at entry N (line L): why"
and exit 1. Bad input (a missing file, a bad key or anchor) is one line on
stderr and exit 2.

The operator writes one segment per leader term into its audit directory;
give `verify` every replica's directory (or segment files): it links them into
one chain ("OK: N entries in S segments, ...", and a note per entry not on the
main chain). `--lease NAMESPACE/NAME` reads the anchor the leader keeps on its
Lease, so a log cut short below it is caught.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path  # noqa: TC003 - typer reads the annotations at runtime
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from qorch.audit import Anchor, ChainVerdict

__all__ = ["app"]

app = typer.Typer(help="The tamper-evident audit log: verify it, replay it, make its keys.", no_args_is_help=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    sys.stderr.write(f"error: {message}\n")
    return typer.Exit(code)


def _lease_anchor(lease: str, kubeconfig: str | None) -> Anchor | None:
    """The anchor on a leader Lease (`NAMESPACE/NAME`); None when it carries none."""
    import asyncio  # noqa: PLC0415

    from qorch.api import constants  # noqa: PLC0415
    from qorch.audit import parse_anchor  # noqa: PLC0415
    from qorch.client import Client, ClientError  # noqa: PLC0415

    namespace, sep, name = lease.partition("/")
    if not sep or not namespace or not name:
        raise _fail(f"--lease {lease!r}: expected NAMESPACE/NAME (e.g. qorch-system/qorch-operator)")

    async def read() -> dict[str, str]:
        async with await Client.connect(kubeconfig, namespace) as client:
            return await client.lease_annotations(namespace, name)

    try:
        annotations = asyncio.run(read())
    except ClientError as exc:
        raise _fail(str(exc)) from None
    text = annotations.get(constants.AUDIT_ANCHOR_ANNOTATION)
    if not text:
        sys.stderr.write(f"warning: Lease {lease} carries no audit anchor\n")
        return None
    try:
        return parse_anchor(text)
    except ValueError as exc:
        raise _fail(f"Lease {lease}: {exc}") from None


def _chain(logs: list[Path], public_key: list[Path], anchors: list[Anchor]) -> ChainVerdict:
    from qorch.audit import AuditKeyError, load_public_key, read_segments, verify_segments  # noqa: PLC0415

    try:
        keys = [load_public_key(p) for p in public_key]
    except AuditKeyError as e:
        raise _fail(str(e)) from None
    for path in logs:
        if not path.exists():
            raise _fail(f"log {path}: no such file or directory")
    try:
        return verify_segments(read_segments(logs), keys, anchors)
    except OSError as e:
        raise _fail(f"log: {e.strerror or e}") from None


LeaseOption = typer.Option(
    None,
    "--lease",
    help="NAMESPACE/NAME of the leader Lease whose audit anchor must be reached (read from the cluster).",
)
KubeconfigOption = typer.Option(None, "--kubeconfig", envvar="KUBECONFIG", help="Kubeconfig for --lease.")


@app.command("verify")
def verify(
    log: list[Path] = typer.Argument(..., help="The audit log: a file, or segment files and directories of them."),
    public_key: list[Path] = typer.Option(
        ..., "--public-key", help="PEM public key the chain began with (repeatable)."
    ),
    anchor: list[str] = typer.Option([], "--anchor", help="SEQ:HASH of a head recorded outside the log (repeatable)."),
    lease: str | None = LeaseOption,
    kubeconfig: str | None = KubeconfigOption,
) -> None:
    """Check the chain, the signatures and the anchors; name the first bad entry."""
    from qorch.audit import AuditKeyError, load_public_key, parse_anchor, verify_file  # noqa: PLC0415

    try:
        anchors = [parse_anchor(a) for a in anchor]
    except ValueError as e:
        raise _fail(str(e)) from None
    if lease:
        found = _lease_anchor(lease, kubeconfig)
        anchors += [found] if found is not None else []
    if len(log) > 1 or log[0].is_dir():
        chained = _chain(log, public_key, anchors)
        typer.echo(str(chained))
        if not chained.ok:
            raise typer.Exit(1)
        return
    try:
        keys = [load_public_key(p) for p in public_key]
    except AuditKeyError as e:
        raise _fail(str(e)) from None
    try:
        verdict = verify_file(log[0], keys, anchors)
    except FileNotFoundError:
        raise _fail(f"log {log[0]}: no such file") from None
    except OSError as e:
        raise _fail(f"log {log[0]}: {e.strerror or e}") from None
    typer.echo(str(verdict))
    if not verdict.ok:
        raise typer.Exit(1)


@app.command("replay")
def replay(
    log: list[Path] = typer.Argument(..., help="The audit log: a file, or segment files and directories of them."),
    public_key: list[Path] = typer.Option(
        ..., "--public-key", help="PEM public key the chain began with (repeatable)."
    ),
    lease: str | None = LeaseOption,
    kubeconfig: str | None = KubeconfigOption,
) -> None:
    """Verify, then print each task's final agent and outcome as the log has it (JSON: task -> [agent, outcome]).

    Entries off the main chain (a replaced leader's last, unanchored ones) are merged in by time.
    """
    from qorch.audit import replay as replay_entries  # noqa: PLC0415

    anchors = []
    if lease:
        found = _lease_anchor(lease, kubeconfig)
        anchors += [found] if found is not None else []
    chained = _chain(log, public_key, anchors)
    if not chained.ok:
        sys.stderr.write(f"{chained}\n")
        raise typer.Exit(1)
    typer.echo(json.dumps(replay_entries(chained.decisions), indent=2, sort_keys=True))


@app.command("keygen")
def keygen(
    private: Path = typer.Option(..., "--private", help="Where to write the private key (PEM, mode 0600)."),
    public: Path = typer.Option(..., "--public", help="Where to write the public key (PEM)."),
) -> None:
    """Make an Ed25519 key pair for signing the audit log (mount the private key from a Secret)."""
    from qorch.audit import AuditKeyError, generate_keypair, key_id  # noqa: PLC0415

    try:
        key = generate_keypair(private, public)
    except AuditKeyError as e:
        raise _fail(str(e)) from None
    typer.echo(f"key {key_id(key.public_key())}: private {private}, public {public}")
