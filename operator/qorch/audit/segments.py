"""A chain written in segments: one file per leader term, each continuing from the head anchored before it.

Two operator replicas each keep their own files, so no replica can append to the
other's. A leader term therefore writes a segment of its own: its first entry
has seq N + 1 and prev H, where (N, H) is the anchor the term found on the
leader Lease when it took over (a first segment starts the chain at 0). The
segments of all replicas together form a tree that is almost always a line:

- a segment must link to an entry some other segment holds (else one is missing);
- the main chain runs from the genesis entry to the end of the *tip* segment, the
  one of the latest term (its first entry is a `leader` entry naming the term);
- entries a leader wrote after its last anchor, before a new leader took over from
  that anchor, are not on the main chain: they are reported (never silently
  dropped), as are whole segments of terms that anchored nothing of their own.
  They are verified decisions whose writes landed, so `decisions` (what replay
  reads) merges them into the main chain by time; no anchor protects them.

Every segment is verified like a whole log (`chain.verify` with `start`); a
segment's first entry must be signed by the key the chain had at the entry it
continues, or by one of the keys the verifier trusts. Anchors must lie on the
main chain, which must reach them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qorch.audit.chain import KEY_ROTATION, ZERO_HASH, Anchor, Problem, entry_hash, verify
from qorch.audit.keys import key_id, public_key_from_hex

if TYPE_CHECKING:
    from collections.abc import Iterable

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["ChainVerdict", "Segment", "read_segments", "verify_segments"]

UNLINKED = "unlinked segment"


@dataclass(frozen=True)
class Segment:
    """One file of the chain: its name (for messages) and its lines."""

    name: str
    lines: list[bytes]


@dataclass(frozen=True)
class ChainVerdict:
    """The outcome of verifying a set of segments; `chain` holds the main chain's entries when ok."""

    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    segments: int
    notes: tuple[str, ...] = ()
    segment: str | None = None
    seq: int | None = None
    line: int | None = None
    problem: str | None = None
    reason: str | None = None
    chain: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    orphans: tuple[dict[str, Any], ...] = field(default=(), repr=False)

    @property
    def decisions(self) -> list[dict[str, Any]]:
        """The main chain with the entries off it merged in by time (stable: the main chain first on a tie)."""
        merged = [(e["time"], 0, i, e) for i, e in enumerate(self.chain)]
        merged += [(e["time"], 1, i, e) for i, e in enumerate(self.orphans)]
        return [e for *_, e in sorted(merged, key=lambda m: m[:3])]

    def __str__(self) -> str:
        """What `qorch audit verify` prints: one verdict line, then a line per note."""
        if self.ok:
            head = f"OK: {self.entries} entries in {self.segments} segments, head {self.head_seq} {self.head_hash}"
            return "\n".join([head, *self.notes])
        where = f" at entry {self.seq} (line {self.line})" if self.seq is not None else ""
        return f"TAMPERED in {self.segment}{where}: {self.reason}"


@dataclass
class _Verified:
    segment: Segment
    entries: list[dict[str, Any]]
    hashes: list[str]
    start: Anchor | None
    parent: tuple[str, int] | None  # (segment name, index in it) of the entry this one continues

    @property
    def term(self) -> int:
        first = self.entries[0] if self.entries else {}
        term = (first.get("data") or {}).get("term") if first.get("kind") == "leader" else None
        return term if isinstance(term, int) else -1


def read_segments(paths: Iterable[Path | str]) -> list[Segment]:
    """Segments from files and directories (every `*.log` file in a directory, sorted by name)."""
    from qorch.audit import read_lines  # noqa: PLC0415 - the package's helper, defined after this module loads

    files: list[Path] = []
    for path in map(Path, paths):
        files += sorted(path.glob("*.log")) if path.is_dir() else [path]
    return [Segment(str(f), read_lines(f)) for f in files]


def _first(segment: Segment) -> tuple[int, str] | None:
    """(seq, prev) of a segment's first entry, None if it cannot be read (verify then names the damage)."""
    try:
        entry = json.loads(segment.lines[0].decode())
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(entry, dict) or type(entry.get("seq")) is not int or not isinstance(entry.get("prev"), str):
        return None
    return entry["seq"], entry["prev"]


def _fail(
    segment: str, problem: str, reason: str, *, count: int, seq: int | None = None, line: int | None = None
) -> ChainVerdict:
    return ChainVerdict(
        ok=False,
        entries=0,
        head_seq=-1,
        head_hash=ZERO_HASH,
        segments=count,
        segment=segment,
        seq=seq,
        line=line,
        problem=problem,
        reason=reason,
    )


class _Tree:
    """Verified segments, the entries they hold by hash, and the keys the chain introduced."""

    def __init__(self, trusted: Sequence[Ed25519PublicKey]) -> None:
        self.trusted = {key_id(k): k for k in trusted}
        self.keys = dict(self.trusted)
        self.done: dict[str, _Verified] = {}
        self.at: dict[str, tuple[str, int]] = {}  # entry hash -> (segment, index)
        self.active: dict[str, str] = {}  # entry hash -> the id of the key that signs the entry after it

    def link(self, segment: Segment) -> tuple[Anchor | None, tuple[str, int] | None] | None:
        """Where a segment attaches (its start and the entry it continues), None if it cannot yet."""
        first = _first(segment)
        if first is None or (first[0] == 0 and first[1] == ZERO_HASH):
            return None, None
        found = self.at.get(first[1])
        if found is None:
            return None
        name, index = found
        if self.done[name].entries[index]["seq"] != first[0] - 1:
            return None
        return Anchor(first[0] - 1, first[1]), found

    def add(self, segment: Segment, start: Anchor | None, parent: tuple[str, int] | None) -> ChainVerdict | None:
        """Verify one segment; None when it verified (it is then part of the tree), else why not."""
        keys = dict(self.trusted)
        if start is not None and (active := self.active.get(start.hash)) in self.keys:
            keys[active] = self.keys[active]
        verdict = verify(segment.lines, list(keys.values()), start=start)
        if not verdict.ok:
            return _fail(segment.name, verdict.problem or "", verdict.reason or "", count=len(self.done) + 1,
                         seq=verdict.seq, line=verdict.line)  # fmt: skip
        entries = [json.loads(line.decode()) for line in segment.lines]
        hashes = [entry_hash(line.removesuffix(b"\n")) for line in segment.lines]
        for i, (entry, digest) in enumerate(zip(entries, hashes, strict=True)):
            signer = entry["key"]
            if entry["kind"] == KEY_ROTATION:
                signer = entry["data"]["key"]
                self.keys[signer] = public_key_from_hex(entry["data"]["public_key"])
            self.at[digest] = (segment.name, i)
            self.active[digest] = signer
        self.done[segment.name] = _Verified(segment, entries, hashes, start, parent)
        return None


def verify_segments(
    segments: Sequence[Segment],
    public_keys: Ed25519PublicKey | Sequence[Ed25519PublicKey],
    anchors: Iterable[Anchor] = (),
) -> ChainVerdict:
    """Verify every segment, link them into one chain, check the anchors on its main chain."""
    keys: list[Ed25519PublicKey] = [public_keys] if not isinstance(public_keys, Sequence) else list(public_keys)
    tree = _Tree(keys)
    waiting = [s for s in segments if s.lines]
    while waiting:
        linked = [(s, where) for s in waiting if (where := tree.link(s)) is not None]
        if not linked:
            stray = waiting[0]
            first = _first(stray)
            what = f"entry {first[0] - 1} (hash {first[1]})" if first else "an entry"
            return _fail(stray.name, UNLINKED, f"{UNLINKED}: it continues {what}, which no segment given holds "
                         "(a segment is missing, or was cut below that entry)", count=len(segments))  # fmt: skip
        for segment, (start, parent) in linked:
            bad = tree.add(segment, start, parent)
            if bad is not None:
                return bad
            waiting.remove(segment)
    if not tree.done:
        return ChainVerdict(ok=True, entries=0, head_seq=-1, head_hash=ZERO_HASH, segments=0)
    return _main_chain(tree, list(anchors))


def _main_chain(tree: _Tree, anchors: list[Anchor]) -> ChainVerdict:
    tip = max(tree.done.values(), key=lambda v: (v.term, v.entries[-1]["seq"]))
    chain: list[dict[str, Any]] = []
    hashes: list[str] = []
    on_chain: dict[str, int] = {}  # segment -> how many of its entries are on the main chain
    node: _Verified | None = tip
    upto = len(tip.entries)
    while node is not None:
        chain[:0], hashes[:0] = node.entries[:upto], node.hashes[:upto]
        on_chain[node.segment.name] = upto
        if node.parent is None:
            break
        name, index = node.parent
        node, upto = tree.done[name], index + 1
    notes = []
    orphans: list[dict[str, Any]] = []
    for name, verified in tree.done.items():
        kept = on_chain.get(name, 0)
        if kept < len(verified.entries):
            left = verified.entries[kept:]
            orphans += left
            notes.append(
                f"note: {name}: entries {left[0]['seq']}..{left[-1]['seq']} are not on the main chain "
                "(written after the last anchor by a leader that was replaced)"
            )
    by_seq = {e["seq"]: h for e, h in zip(chain, hashes, strict=True)}
    head_seq = chain[-1]["seq"]
    for anchor in sorted(anchors, key=lambda a: a.seq):
        if anchor.seq > head_seq:
            return _fail(tip.segment.name, Problem.TRUNCATED, f"{Problem.TRUNCATED}: an anchor pins entry "
                         f"{anchor.seq}, but the main chain ends at entry {head_seq}", count=len(tree.done),
                         seq=head_seq + 1)  # fmt: skip
        if by_seq.get(anchor.seq) != anchor.hash:
            return _fail(tip.segment.name, Problem.ANCHOR_MISMATCH, f"{Problem.ANCHOR_MISMATCH}: anchored hash "
                         f"{anchor.hash}, entry hash {by_seq.get(anchor.seq)}", count=len(tree.done),
                         seq=anchor.seq)  # fmt: skip
    return ChainVerdict(
        ok=True,
        entries=len(chain),
        head_seq=head_seq,
        head_hash=hashes[-1],
        segments=len(tree.done),
        notes=tuple(notes),
        chain=tuple(chain),
        orphans=tuple(orphans),
    )
