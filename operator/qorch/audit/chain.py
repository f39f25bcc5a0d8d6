"""The audit log's format and its verifier: a hash chain of signed canonical JSON lines.

One entry per line, canonical JSON (sorted keys, no whitespace, UTF-8):

    {"data":{...},"key":"<16 hex>","kind":"assign","prev":"<64 hex>","seq":0,
     "sig":"<128 hex>","subject":{...},"time":"2026-...Z"}

`prev` is the SHA-256 of the previous line's bytes (64 zeros for the first),
`sig` is Ed25519 over the canonical bytes of the entry without `sig`, by the key
whose id is `key`. The first entry is signed by a key the verifier trusts; a new
key is accepted only through a `key-rotation` entry signed by the current one.
An anchor (seq, hash) kept outside the log pins the entry at seq, so cutting
the log below it is detected.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature

from qorch.audit.keys import key_id, public_key_from_hex

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "FIELDS",
    "KEY_ROTATION",
    "KINDS",
    "ZERO_HASH",
    "Anchor",
    "Problem",
    "Verdict",
    "canonical",
    "entry_hash",
    "malformed",
    "parse_anchor",
    "sign_entry",
    "verify",
]

ZERO_HASH = "0" * 64
FIELDS = frozenset({"seq", "time", "kind", "subject", "data", "prev", "key", "sig"})
KINDS = frozenset({
    "assign", "start", "requeue", "retry", "finish", "dead-letter", "approve", "reject", "breaker", "leader",
    "refused-report", "refused-assignment", "key-rotation", "anchor",
})  # fmt: skip
KEY_ROTATION = "key-rotation"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
_HEX16 = re.compile(r"[0-9a-f]{16}")


def canonical(obj: object) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def entry_hash(line: bytes) -> str:
    """Hex SHA-256 of an entry's canonical bytes (its line without the newline)."""
    return hashlib.sha256(line).hexdigest()


def sign_entry(unsigned: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """The entry with `key` set to the signer's id and `sig` over the canonical bytes without `sig`."""
    body = {k: v for k, v in unsigned.items() if k != "sig"}
    body["key"] = key_id(key.public_key())
    return {**body, "sig": key.sign(canonical(body)).hex()}


@dataclass(frozen=True)
class Anchor:
    """A chain head recorded outside the log: the entry at `seq` has hash `hash`."""

    seq: int
    hash: str

    def as_dict(self) -> dict[str, Any]:
        """The small dict an operator stores in the cluster (e.g. a Lease annotation)."""
        return {"seq": self.seq, "hash": self.hash}

    def __str__(self) -> str:
        """`SEQ:HASH`, as `qorch audit verify --anchor` takes it."""
        return f"{self.seq}:{self.hash}"


def parse_anchor(text: str) -> Anchor:
    """`SEQ:HASH` -> Anchor; ValueError naming what is wrong."""
    seq_text, sep, digest = text.partition(":")
    if not sep or not seq_text.isdigit() or not _HEX64.fullmatch(digest):
        msg = f"anchor {text!r}: expected SEQ:HASH (a number and 64 lowercase hex digits)"
        raise ValueError(msg)
    return Anchor(int(seq_text), digest)


class Problem:
    """Why an entry is bad: the first word of each reason."""

    BAD_JSON = "bad JSON"
    NOT_CANONICAL = "not canonical JSON"
    MALFORMED = "malformed entry"
    SEQ_GAP = "seq gap"
    BROKEN_LINK = "broken prev link"
    UNKNOWN_KEY = "unknown key"
    BAD_SIGNATURE = "bad signature"
    BAD_ROTATION = "bad key rotation"
    ANCHOR_MISMATCH = "anchor mismatch"
    TRUNCATED = "truncated below an anchor"


@dataclass(frozen=True)
class Verdict:
    """The outcome of verifying a log.

    When `ok`, `entries` entries verified and the head is (`head_seq`, `head_hash`).
    Otherwise `seq` is the number of the first bad entry (its position in the
    chain, from 0), `line` its line (from 1), `problem` one of Problem's values
    and `reason` the whole explanation.
    """

    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    seq: int | None = None
    line: int | None = None
    problem: str | None = None
    reason: str | None = None

    def __str__(self) -> str:
        """The one line `qorch audit verify` prints."""
        if self.ok:
            return f"OK: {self.entries} entries, head {self.head_seq} {self.head_hash}"
        return f"TAMPERED at entry {self.seq} (line {self.line}): {self.reason}"


def malformed(entry: Mapping[str, Any]) -> str | None:
    """What is wrong with an entry's fields, or None."""
    if set(entry) != FIELDS:
        missing, extra = sorted(FIELDS - set(entry)), sorted(set(entry) - FIELDS)
        return f"fields missing {missing}, unexpected {extra}"
    checks: list[tuple[str, bool]] = [
        ("seq", type(entry["seq"]) is int),
        ("time", isinstance(entry["time"], str)),
        ("kind", isinstance(entry["kind"], str) and bool(entry["kind"])),
        ("subject", isinstance(entry["subject"], dict)),
        ("data", isinstance(entry["data"], dict)),
        ("prev", isinstance(entry["prev"], str) and bool(_HEX64.fullmatch(entry["prev"]))),
        ("key", isinstance(entry["key"], str) and bool(_HEX16.fullmatch(entry["key"]))),
        ("sig", isinstance(entry["sig"], str) and bool(_HEX128.fullmatch(entry["sig"]))),
    ]
    bad = [name for name, good in checks if not good]
    return f"bad {', '.join(bad)}" if bad else None


def _rotation_key(entry: Mapping[str, Any]) -> tuple[Ed25519PublicKey | None, str]:
    """The new public key a key-rotation entry names, or None and why not."""
    data = entry["data"]
    public_hex, new_id = data.get("public_key"), data.get("key")
    if not isinstance(public_hex, str) or not isinstance(new_id, str):
        return None, "data must name public_key (hex) and key (its id)"
    try:
        new_key = public_key_from_hex(public_hex)
    except ValueError as e:
        return None, f"public_key: {e}"
    if key_id(new_key) != new_id:
        return None, f"key {new_id} is not the id of public_key ({key_id(new_key)})"
    return new_key, ""


def verify(  # noqa: C901, PLR0911, PLR0912 - one linear pass with a named exit per kind of damage
    lines: Iterable[bytes | str],
    public_keys: Ed25519PublicKey | Sequence[Ed25519PublicKey],
    anchors: Iterable[Anchor | tuple[int, str] | Mapping[str, Any]] = (),
    *,
    start: Anchor | None = None,
) -> Verdict:
    """Verify a log given its lines (a trailing newline on each is ignored).

    `public_keys` are trusted for the first entry (normally the one key the
    chain began with); every later key must come from a key-rotation entry.
    Each anchor must match the entry at its seq, and the log must reach it.
    `start` is the entry a segment continues from (its first entry has seq
    start.seq + 1 and prev start.hash); None: the log begins the chain.
    Returns the Verdict naming the first bad entry (`seq` counts from the
    chain's start, `line` from the file's).
    """
    trusted = {key_id(k): k for k in ([public_keys] if not isinstance(public_keys, Sequence) else public_keys)}
    pins: dict[int, str] = {}
    for a in anchors:
        anchor = (
            a if isinstance(a, Anchor) else Anchor(*a) if isinstance(a, tuple) else Anchor(int(a["seq"]), a["hash"])
        )
        if anchor.seq >= 0:
            pins[anchor.seq] = anchor.hash
    active: Ed25519PublicKey | None = None
    active_id = ""
    first = start.seq + 1 if start is not None else 0
    prev = start.hash if start is not None else ZERO_HASH
    count = 0

    def bad(problem: str, detail: str = "") -> Verdict:
        reason = f"{problem}: {detail}" if detail else problem
        return Verdict(
            ok=False,
            entries=count,
            head_seq=first + count - 1,
            head_hash=prev,
            seq=first + count,
            line=count + 1,
            problem=problem,
            reason=reason,
        )

    for raw in lines:
        line = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
        line = line.removesuffix(b"\n")
        try:
            entry = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            return bad(Problem.BAD_JSON, str(e))
        if not isinstance(entry, dict):
            return bad(Problem.BAD_JSON, "not an object")
        try:
            is_canonical = canonical(entry) == line
        except ValueError:
            is_canonical = False
        if not is_canonical:
            return bad(Problem.NOT_CANONICAL, "the line is not the canonical form of its entry")
        if (what := malformed(entry)) is not None:
            return bad(Problem.MALFORMED, what)
        if entry["seq"] != first + count:
            return bad(Problem.SEQ_GAP, f"expected seq {first + count}, found {entry['seq']}")
        if entry["prev"] != prev:
            return bad(Problem.BROKEN_LINK, f"prev {entry['prev']} is not the previous entry's hash {prev}")
        if active is None:
            if entry["key"] not in trusted:
                return bad(Problem.UNKNOWN_KEY, f"{entry['key']} is not a trusted key ({', '.join(sorted(trusted))})")
            active, active_id = trusted[entry["key"]], entry["key"]
        elif entry["key"] != active_id:
            return bad(Problem.UNKNOWN_KEY, f"signed by {entry['key']}, but the chain's key is {active_id}")
        unsigned = {k: v for k, v in entry.items() if k != "sig"}
        try:
            active.verify(bytes.fromhex(entry["sig"]), canonical(unsigned))
        except InvalidSignature:
            return bad(Problem.BAD_SIGNATURE, f"not signed by key {active_id}")
        if entry["kind"] == KEY_ROTATION:
            new_key, why = _rotation_key(entry)
            if new_key is None:
                return bad(Problem.BAD_ROTATION, why)
            active, active_id = new_key, key_id(new_key)
        digest = entry_hash(line)
        if entry["seq"] in pins and pins[entry["seq"]] != digest:
            return bad(Problem.ANCHOR_MISMATCH, f"anchored hash {pins[entry['seq']]}, entry hash {digest}")
        prev = digest
        count += 1
    beyond = [seq for seq in pins if seq >= first + count]
    if beyond:
        last = first + count - 1
        return bad(Problem.TRUNCATED, f"an anchor pins entry {max(beyond)}, but the log ends at entry {last}")
    return Verdict(ok=True, entries=count, head_seq=first + count - 1, head_hash=prev)
