"""Property: 1,000 random tamperings of random logs, every one detected; untouched logs always verify.

Logs of 2 to 8 entries, signed by a chain of keys (some rotate mid-way), with
the operator's anchor at a random seq. Tamperings: modify a field, flip a byte,
delete an entry, insert a forged entry (attacker-signed, a copy, or a forged key
rotation), reorder two, truncate below the anchor, re-sign an entry with
another key. Deleting the newest entries above the newest anchor is not
detectable by design (it is a truncation nobody pinned), so a deletion of the
last entry is drawn only when the anchor is at the head.

Run with -s to see the tally: pytest -q -s -p no:cacheprovider tests/unit/audit/test_tampering.py
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from qorch.audit import KINDS, ZERO_HASH, Anchor, Problem, canonical, entry_hash, verify
from qorch.audit.chain import sign_entry
from qorch.audit.keys import key_id, raw_public_key

KEYS = [Ed25519PrivateKey.from_private_bytes(bytes([i]) * 32) for i in range(1, 4)]
EVIL = Ed25519PrivateKey.from_private_bytes(bytes([66]) * 32)
TRUSTED = KEYS[0].public_key()
PROBLEMS = {v for k, v in vars(Problem).items() if k.isupper()}
TALLY: Counter[str] = Counter()
NAMED: Counter[str] = Counter()

ORDINARY = sorted(KINDS - {"key-rotation"})
TAMPERINGS = ["modify", "flip-byte", "delete", "insert", "reorder", "truncate", "resign"]


def _entry(seq: int, prev: str, kind: str, n: int) -> dict[str, Any]:
    return {
        "seq": seq,
        "time": f"2026-12-03T07:{seq:02d}:00.000000Z",
        "kind": kind,
        "subject": {"task": f"ns/t{n}", "uid": f"uid-{n}"},
        "data": {"agent": f"agent-{n % 3}", "n": n},
        "prev": prev,
    }


def build(kinds: list[str], rotations: list[bool]) -> list[bytes]:
    """A valid log: one line per kind; after a True in `rotations` the next entry rotates to the next key."""
    lines: list[bytes] = []
    prev, signer = ZERO_HASH, 0
    for seq, (kind, rotate) in enumerate(zip(kinds, rotations, strict=True)):
        if rotate and signer + 1 < len(KEYS):
            new = KEYS[signer + 1].public_key()
            unsigned = _entry(seq, prev, "key-rotation", seq)
            unsigned["subject"], unsigned["data"] = {}, {"public_key": raw_public_key(new).hex(), "key": key_id(new)}
            line = canonical(sign_entry(unsigned, KEYS[signer]))
            signer += 1
        else:
            line = canonical(sign_entry(_entry(seq, prev, kind, seq), KEYS[signer]))
        lines.append(line)
        prev = entry_hash(line)
    return lines


@st.composite
def logs(draw: st.DrawFn) -> tuple[list[bytes], Anchor]:
    """A valid log of 2 to 8 entries and the anchor of a random entry in it."""
    n = draw(st.integers(2, 8))
    kinds = draw(st.lists(st.sampled_from(ORDINARY), min_size=n, max_size=n))
    rotations = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    lines = build(kinds, rotations)
    at = draw(st.integers(0, n - 1))
    return lines, Anchor(at, entry_hash(lines[at]))


def _different(draw: st.DrawFn, old: object, new: st.SearchStrategy[Any]) -> object:
    return draw(new.filter(lambda v: v != old))


def _modify(draw: st.DrawFn, entry: dict[str, Any]) -> dict[str, Any]:
    field = draw(st.sampled_from(sorted(entry)))
    old = entry[field]
    hex_digits = st.text("0123456789abcdef", min_size=len(old), max_size=len(old)) if isinstance(old, str) else None
    new: object
    if field == "seq":
        new = _different(draw, old, st.integers(-2, 20))
    elif field == "time":
        new = _different(draw, old, st.text(max_size=30))
    elif field == "kind":
        new = _different(draw, old, st.sampled_from(sorted(KINDS)))
    elif field in {"subject", "data"}:
        new = _different(draw, old, st.dictionaries(st.text(max_size=5), st.text(max_size=5) | st.integers()))
    else:  # prev, key, sig: other hex of the same length, or another type
        assert hex_digits is not None
        new = _different(draw, old, hex_digits | st.none() | st.integers())
    return {**entry, field: new}


@st.composite
def tampered(draw: st.DrawFn) -> tuple[list[bytes], list[bytes], Anchor, str]:  # noqa: C901, PLR0912, PLR0915
    """A log, its tampered copy, the anchor, and the kind of tampering."""
    lines, anchor = draw(logs())
    n = len(lines)
    how = draw(st.sampled_from(TAMPERINGS))
    out = list(lines)
    if how == "modify":
        i = draw(st.integers(0, n - 1))
        out[i] = canonical(_modify(draw, json.loads(lines[i])))
    elif how == "flip-byte":
        i = draw(st.integers(0, n - 1))
        j = draw(st.integers(0, len(lines[i]) - 1))
        bit = draw(st.integers(0, 7))
        flipped = bytearray(lines[i])
        flipped[j] ^= 1 << bit
        out[i] = bytes(flipped)
    elif how == "delete":
        i = draw(st.integers(0, n - 1 if anchor.seq == n - 1 else n - 2))
        del out[i]
    elif how == "insert":
        i = draw(st.integers(0, n))
        variant = draw(st.sampled_from(["attacker", "copy", "rotation", "random-sig"]))
        prev = entry_hash(lines[i - 1]) if i > 0 else ZERO_HASH
        forged = _entry(i, prev, draw(st.sampled_from(ORDINARY)), 99)
        if variant == "attacker":
            line = canonical(sign_entry(forged, EVIL))
        elif variant == "copy":
            line = lines[draw(st.integers(0, n - 1))]
        elif variant == "rotation":
            new = EVIL.public_key()
            forged["kind"], forged["data"] = (
                "key-rotation",
                {"public_key": raw_public_key(new).hex(), "key": key_id(new)},
            )
            line = canonical(sign_entry(forged, EVIL))
        else:
            signed = sign_entry(forged, KEYS[0])
            signed["sig"] = draw(st.binary(min_size=64, max_size=64)).hex()
            line = canonical(signed)
        out.insert(i, line)
    elif how == "reorder":
        i, j = draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
        out[i], out[j] = out[j], out[i]
    elif how == "truncate":
        out = out[: draw(st.integers(0, anchor.seq))]
    else:  # resign: change (or keep) the data, sign with a key other than the entry's, claiming either id
        i = draw(st.integers(0, n - 1))
        entry = json.loads(lines[i])
        others = [k for k in [EVIL, *KEYS] if key_id(k.public_key()) != entry["key"]]  # outsiders, retired, future
        signer = draw(st.sampled_from(others))
        if draw(st.booleans()):
            entry["data"] = {**entry["data"], "agent": "mallory"}
        forged = sign_entry(entry, signer)
        if signer is EVIL and draw(st.booleans()):
            forged["key"] = entry["key"]
        out[i] = canonical(forged)
    return lines, out, anchor, how


@settings(max_examples=1000, deadline=None)
@given(tampered())
def test_every_tampering_is_detected(case: tuple[list[bytes], list[bytes], Anchor, str]) -> None:
    """The untouched log verifies; the tampered one does not, and the verdict names a known problem."""
    lines, out, anchor, how = case
    assert verify(lines, TRUSTED, [anchor]).ok
    assert out != lines
    verdict = verify(out, TRUSTED, [anchor])
    TALLY[how] += 1
    assert not verdict.ok, (how, verdict)
    assert verdict.problem is not None
    assert verdict.problem in PROBLEMS
    assert verdict.seq is not None
    assert verdict.line == verdict.seq + 1
    NAMED[verdict.problem] += 1


@settings(max_examples=300, deadline=None)
@given(logs())
def test_untouched_logs_always_verify(log: tuple[list[bytes], Anchor]) -> None:
    """Any log the writer's format produces verifies, with its anchor, to its head."""
    lines, anchor = log
    verdict = verify(lines, TRUSTED, [anchor])
    assert verdict.ok
    assert (verdict.entries, verdict.head_hash) == (len(lines), entry_hash(lines[-1]))


def teardown_module() -> None:
    """Print the tally (visible with -s): how many tamperings of each kind, all detected."""
    made = sum(TALLY.values())
    print(f"\ntamperings: {made} made, {sum(NAMED.values())} detected; by kind {dict(sorted(TALLY.items()))}")  # noqa: T201
    print(f"named as {dict(sorted(NAMED.items()))}")  # noqa: T201
