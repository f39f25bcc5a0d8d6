"""`qorch audit verify|keygen`: check a tamper-evident audit log; make its signing keys.

`verify` checks the hash chain, every signature (following key rotations from
the trusted first key) and the anchors, and names the first bad entry:
"OK: N entries, head SEQ HASH" and exit 0, or "TAMPERED at entry N (line L): why"
and exit 1. Bad input (a missing file, a bad key or anchor) is one line on
stderr and exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path  # noqa: TC003 - typer reads the annotations at runtime

import typer

__all__ = ["app"]

app = typer.Typer(help="The tamper-evident audit log: verify it, make its keys.", no_args_is_help=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    sys.stderr.write(f"error: {message}\n")
    return typer.Exit(code)


@app.command("verify")
def verify(
    log: Path = typer.Argument(..., help="The audit log file (one JSON entry per line)."),
    public_key: list[Path] = typer.Option(
        ..., "--public-key", help="PEM public key the chain began with (repeatable)."
    ),
    anchor: list[str] = typer.Option([], "--anchor", help="SEQ:HASH of a head recorded outside the log (repeatable)."),
) -> None:
    """Check the chain, the signatures and the anchors; name the first bad entry."""
    from qorch.audit import AuditKeyError, load_public_key, parse_anchor, verify_file  # noqa: PLC0415

    try:
        keys = [load_public_key(p) for p in public_key]
        anchors = [parse_anchor(a) for a in anchor]
    except (AuditKeyError, ValueError) as e:
        raise _fail(str(e)) from None
    try:
        verdict = verify_file(log, keys, anchors)
    except FileNotFoundError:
        raise _fail(f"log {log}: no such file") from None
    except OSError as e:
        raise _fail(f"log {log}: {e.strerror or e}") from None
    typer.echo(str(verdict))
    if not verdict.ok:
        raise typer.Exit(1)


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
