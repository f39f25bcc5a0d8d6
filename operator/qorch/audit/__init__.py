"""qorch.audit: a tamper-evident log of the operator's decisions.

Canonical JSON lines, each carrying the SHA-256 of the previous line and an
Ed25519 signature; anchors kept outside the log pin its head so truncation is
seen. Sits beside the layers: imports only qorch.api (and here, not even that).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qorch.audit.chain import KINDS, ZERO_HASH, Anchor, Problem, Verdict, canonical, entry_hash, parse_anchor, verify
from qorch.audit.keys import AuditKeyError, generate_keypair, key_id, load_private_key, load_public_key
from qorch.audit.log import AuditError, AuditLog
from qorch.audit.replay import replay
from qorch.audit.segments import ChainVerdict, Segment, read_segments, verify_segments

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "KINDS",
    "ZERO_HASH",
    "Anchor",
    "AuditError",
    "AuditKeyError",
    "AuditLog",
    "ChainVerdict",
    "Problem",
    "Segment",
    "Verdict",
    "canonical",
    "entry_hash",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "parse_anchor",
    "read_lines",
    "read_segments",
    "replay",
    "verify",
    "verify_file",
    "verify_segments",
]


def read_lines(path: Path | str) -> list[bytes]:
    """A log file's lines without newlines; a last line with no newline is kept (and will not verify)."""
    data = Path(path).read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        lines[-1] += b"\x00"  # an incomplete last line: never valid JSON, so verify names it
    return lines


def verify_file(
    path: Path | str,
    public_keys: Ed25519PublicKey | Sequence[Ed25519PublicKey],
    anchors: Iterable[Anchor | tuple[int, str] | Mapping[str, Any]] = (),
) -> Verdict:
    """verify() over a log file."""
    return verify(read_lines(path), public_keys, anchors)
