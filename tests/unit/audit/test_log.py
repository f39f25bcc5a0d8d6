"""The audit log: format, writer, continuation, rotation, anchors, and each failure the verifier names."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from qorch.audit import (
    ZERO_HASH,
    Anchor,
    AuditError,
    AuditKeyError,
    AuditLog,
    Problem,
    canonical,
    entry_hash,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    parse_anchor,
    read_lines,
    replay,
    verify,
    verify_file,
)
from qorch.audit.chain import sign_entry

KEY = Ed25519PrivateKey.from_private_bytes(bytes([1]) * 32)
NEW = Ed25519PrivateKey.from_private_bytes(bytes([2]) * 32)
EVIL = Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32)
PUB = KEY.public_key()


def _clock() -> str:
    return "2026-12-03T07:00:00.000000Z"


def _log(path: Path, n: int = 3, key: Ed25519PrivateKey = KEY) -> AuditLog:
    log = AuditLog(path, key, clock=_clock)
    for i in range(n):
        log.append("assign", {"task": f"ns/t{i}", "uid": f"u{i}"}, {"agent": f"a{i}"})
    return log


def _write(path: Path, entries: list[dict[str, object]]) -> None:
    path.write_bytes(b"".join(canonical(e) + b"\n" for e in entries))


def _entries(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in read_lines(path)]


def test_canonical_is_sorted_compact_utf8() -> None:
    """Sorted keys, no whitespace, UTF-8 (not escapes)."""
    assert canonical({"b": 1, "a": {"z": "é", "y": [1, 2]}}) == '{"a":{"y":[1,2],"z":"é"},"b":1}'.encode()


def test_round_trip(tmp_path: Path) -> None:
    """Entries written verify; the head is the last entry's seq and hash; the fields are as documented."""
    path = tmp_path / "audit.log"
    log = _log(path, 3)
    lines = read_lines(path)
    verdict = verify(lines, PUB)
    assert verdict.ok
    assert (verdict.entries, verdict.head_seq, verdict.head_hash) == (3, 2, entry_hash(lines[-1]))
    assert str(verdict) == f"OK: 3 entries, head 2 {entry_hash(lines[-1])}"
    assert log.anchor() == {"seq": 2, "hash": entry_hash(lines[-1])}
    first = json.loads(lines[0])
    assert set(first) == {"seq", "time", "kind", "subject", "data", "prev", "key", "sig"}
    assert first["prev"] == ZERO_HASH
    assert first["key"] == key_id(PUB) == hashlib.sha256(PUB.public_bytes_raw()).hexdigest()[:16]
    assert json.loads(lines[1])["prev"] == entry_hash(lines[0])
    assert canonical(first) == lines[0]


def test_empty_log(tmp_path: Path) -> None:
    """An empty log verifies with zero entries; its anchor is (-1, zeros)."""
    path = tmp_path / "audit.log"
    log = AuditLog(path, KEY)
    assert log.anchor() == {"seq": -1, "hash": ZERO_HASH}
    assert not path.exists()
    assert str(verify([], PUB)) == f"OK: 0 entries, head -1 {ZERO_HASH}"


def test_continues_an_existing_file(tmp_path: Path) -> None:
    """A new writer (a new leader) reads the tail and continues the chain from it."""
    path = tmp_path / "audit.log"
    first = _log(path, 2)
    second = AuditLog(path, KEY, clock=_clock)
    assert second.anchor() == first.anchor()
    entry = second.append("leader", {"lease": "qorch-system/qorch"}, {"holder": "pod-2"})
    assert entry["seq"] == 2
    assert verify_file(path, PUB).ok
    assert verify_file(path, PUB).entries == 3


def test_continuing_refuses_a_foreign_or_damaged_tail(tmp_path: Path) -> None:
    """Another key, a forged tail, or an incomplete last line stop the writer instead of forking the chain."""
    path = tmp_path / "audit.log"
    _log(path, 2)
    with pytest.raises(AuditError, match="rotate"):
        AuditLog(path, NEW)
    entries = _entries(path)
    entries[-1]["data"] = {"agent": "forged"}
    _write(path, entries)
    with pytest.raises(AuditError, match="signature"):
        AuditLog(path, KEY)
    path.write_bytes(path.read_bytes() + b'{"seq":')
    with pytest.raises(AuditError, match="incomplete"):
        AuditLog(path, KEY)
    path.write_bytes(b"not json\n")
    with pytest.raises(AuditError, match="not JSON"):
        AuditLog(path, KEY)


def test_rotation(tmp_path: Path) -> None:
    """A key-rotation entry signed by the old key names the new one; later entries use it; a restart continues."""
    path = tmp_path / "audit.log"
    log = _log(path, 2)
    rotation = log.rotate(NEW)
    assert rotation["kind"] == "key-rotation"
    assert rotation["key"] == key_id(PUB)
    assert rotation["data"]["key"] == key_id(NEW.public_key())
    AuditLog(path, NEW)  # a writer holding the new key continues right after the rotation
    after = log.append("requeue", {"task": "ns/t0"})
    assert after["key"] == key_id(NEW.public_key())
    assert verify_file(path, PUB).ok
    assert AuditLog(path, NEW).anchor()["seq"] == 3
    with pytest.raises(AuditError):
        AuditLog(path, KEY)
    # The new key alone is not trusted for the chain's start: a key is accepted only through a rotation.
    verdict = verify_file(path, NEW.public_key())
    assert (verdict.ok, verdict.problem, verdict.seq) == (False, Problem.UNKNOWN_KEY, 0)


def test_a_new_key_without_a_rotation_is_unknown(tmp_path: Path) -> None:
    """Switching keys without a rotation entry (even to a key the verifier knows) is named at that entry."""
    path = tmp_path / "audit.log"
    log = _log(path, 2)
    log.append("assign", {"task": "ns/x"}, {"agent": "a"}, key=NEW)
    verdict = verify_file(path, [PUB, NEW.public_key()])
    assert (verdict.ok, verdict.problem, verdict.seq, verdict.line) == (False, Problem.UNKNOWN_KEY, 2, 3)


def test_bad_rotation(tmp_path: Path) -> None:
    """A rotation entry whose data does not name a key (or names the wrong id) is refused."""
    path = tmp_path / "audit.log"
    log = _log(path, 1)
    log.append("key-rotation", {}, {"public_key": "00" * 32, "key": "0" * 16})
    verdict = verify_file(path, PUB)
    assert (verdict.problem, verdict.seq) == (Problem.BAD_ROTATION, 1)


@pytest.mark.parametrize(
    ("damage", "problem", "seq"),
    [
        ("bad-json", Problem.BAD_JSON, 1),
        ("not-canonical", Problem.NOT_CANONICAL, 1),
        ("malformed", Problem.MALFORMED, 1),
        ("modified", Problem.BAD_SIGNATURE, 1),
        ("resigned", Problem.UNKNOWN_KEY, 1),
        ("resigned-same-id", Problem.BAD_SIGNATURE, 1),
        ("deleted", Problem.SEQ_GAP, 1),
        ("swapped", Problem.SEQ_GAP, 1),
        ("relinked", Problem.BROKEN_LINK, 1),
        ("rewritten-below-anchor", Problem.ANCHOR_MISMATCH, 1),
        ("truncated", Problem.TRUNCATED, 2),
    ],
)
def test_each_failure_is_named(tmp_path: Path, damage: str, problem: str, seq: int) -> None:  # noqa: C901
    """Each kind of damage is named at the first bad entry, with its line."""
    path = tmp_path / "audit.log"
    log = _log(path, 4)
    anchors = [Anchor(1, log.head().hash)] if damage == "truncated" else []
    lines = read_lines(path)
    entries = [json.loads(line) for line in lines]
    if damage == "bad-json":
        lines[1] = lines[1][:-1]
    elif damage == "not-canonical":
        lines[1] = json.dumps(entries[1]).encode()
    elif damage == "malformed":
        del entries[1]["time"]
        lines[1] = canonical(entries[1])
    elif damage == "modified":
        entries[1]["data"]["agent"] = "someone-else"
        lines[1] = canonical(entries[1])
    elif damage == "resigned":
        entries[1]["data"]["agent"] = "someone-else"
        lines[1] = canonical(sign_entry(entries[1], EVIL))
    elif damage == "resigned-same-id":
        entries[1]["data"]["agent"] = "someone-else"
        forged = sign_entry(entries[1], EVIL)
        forged["key"] = key_id(PUB)
        lines[1] = canonical(forged)
    elif damage == "deleted":
        del lines[1]
    elif damage == "swapped":
        lines[1], lines[2] = lines[2], lines[1]
    elif damage == "relinked":
        # A forged entry re-signed by the attacker's key cannot be hidden by re-linking: here the link itself.
        entries[1]["prev"] = "f" * 64
        lines[1] = canonical(sign_entry(entries[1], KEY))
    elif damage == "rewritten-below-anchor":
        # Whoever holds the key can rewrite history; an anchor taken before still catches it.
        anchors = [Anchor(1, entry_hash(lines[1]))]
        entries[1]["data"]["agent"] = "rewritten"
        lines[1] = canonical(sign_entry(entries[1], KEY))
    elif damage == "truncated":
        anchors = [Anchor(3, entry_hash(lines[3]))]
        lines = lines[:2]
    verdict = verify(lines, PUB, anchors)
    assert not verdict.ok
    assert (verdict.problem, verdict.seq, verdict.line) == (problem, seq, seq + 1)
    assert str(verdict).startswith(f"TAMPERED at entry {seq} (line {seq + 1}): {problem}")


def test_anchors(tmp_path: Path) -> None:
    """Anchors from the writer match; anchors parse from SEQ:HASH and take dicts and tuples."""
    path = tmp_path / "audit.log"
    log = _log(path, 2)
    a1 = log.anchor()
    log.append("anchor", {}, a1)
    a2 = log.head()
    assert verify_file(path, PUB, [a1, (a2.seq, a2.hash), parse_anchor(str(a2))]).ok
    assert not verify_file(path, PUB, [Anchor(1, "0" * 64)]).ok
    with pytest.raises(ValueError, match="SEQ:HASH"):
        parse_anchor("3:xyz")


def test_an_incomplete_last_line_does_not_verify(tmp_path: Path) -> None:
    """A log cut mid-line is named at that line."""
    path = tmp_path / "audit.log"
    _log(path, 2)
    data = path.read_bytes()
    path.write_bytes(data[:-5])
    verdict = verify_file(path, PUB)
    assert (verdict.problem, verdict.seq) == (Problem.BAD_JSON, 1)


def test_keys(tmp_path: Path) -> None:
    """keygen writes a private key (0600) and its public key; loading a missing or wrong file is an AuditKeyError."""
    private, public = tmp_path / "audit.key", tmp_path / "audit.pub"
    key = generate_keypair(private, public)
    assert private.stat().st_mode & 0o777 == 0o600
    assert key_id(load_private_key(private).public_key()) == key_id(load_public_key(public)) == key_id(key.public_key())
    with pytest.raises(AuditKeyError, match="already exists"):
        generate_keypair(private, public)
    with pytest.raises(AuditKeyError, match="no such file"):
        load_public_key(tmp_path / "missing.pub")
    with pytest.raises(AuditKeyError, match="not a PEM"):
        load_public_key(private)
    with pytest.raises(AuditKeyError):
        load_private_key(public)


def test_replay(tmp_path: Path) -> None:
    """Each task's final agent and outcome, from the log alone."""
    path = tmp_path / "audit.log"
    log = AuditLog(path, KEY)
    a, b, c = ({"task": f"ns/{n}", "uid": f"uid-{n}"} for n in "abc")
    log.append("assign", a, {"agent": "x"})
    log.append("assign", b, {"agent": "y"})
    log.append("requeue", a)
    log.append("assign", a, {"agent": "z"})
    log.append("finish", a, {"phase": "Succeeded"})
    log.append("finish", b, {"phase": "Failed"})
    log.append("retry", b)
    log.append("dead-letter", b)
    log.append("breaker", {"agent": "y"}, {"state": "open"})
    log.append("assign", c, {"agent": "x"})
    log.append("assign", {"task": "ns/c", "uid": "uid-c2"}, {"agent": "w"})  # recreated under the same name
    entries = _entries(path)
    assert replay(entries) == {
        "ns/a": ("z", "Succeeded"),
        "ns/b": (None, "DeadLettered"),
        "ns/c": ("w", "Assigned"),
    }


def test_concurrent_appends_and_a_rotation_keep_one_chain(tmp_path: Path) -> None:
    """Threads appending while the key rotates: one unbroken chain, no entry signed by the wrong key."""
    path = tmp_path / "audit.log"
    log = AuditLog(path, KEY)

    def work(n: int) -> None:
        for i in range(10):
            log.append("assign", {"task": f"ns/t{n}-{i}"}, {"agent": "a"})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    log.rotate(NEW)
    for t in threads:
        t.join()
    verdict = verify_file(path, PUB)
    assert verdict.ok, verdict
    assert verdict.entries == 41


def test_reading_the_head_never_waits_for_a_slow_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review finding B: the Lease renewal reads the head on the event loop while an append sits in fsync."""
    log = _log(tmp_path / "audit.log", n=1)
    before = log.head()
    in_fsync, disk_back = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        in_fsync.set()
        disk_back.wait(30)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    writer = threading.Thread(target=log.append, args=("assign", {"task": "ns/t"}))
    writer.start()
    assert in_fsync.wait(30)
    assert log.head() == before  # answered at once, and not the entry that is not on disk yet
    assert writer.is_alive()  # still in fsync: the read above did not wait for it
    disk_back.set()
    writer.join(30)
    assert log.head().seq == before.seq + 1
