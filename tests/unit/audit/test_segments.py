"""A chain in segments (one per leader term, each replica its own files): linked, forks reported, cuts caught."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from qorch.audit import (
    Anchor,
    AuditLog,
    Problem,
    Segment,
    read_lines,
    read_segments,
    replay,
    verify_segments,
)
from qorch.audit.segments import UNLINKED
from qorch.cli.main import app


def term(
    path: Path, key: Ed25519PrivateKey, number: int, start: Anchor | None, tasks: list[tuple[str, str]]
) -> AuditLog:
    """A leader term's segment: the leader entry, then an assign per (task, agent)."""
    log = AuditLog(path, key, start=start)
    log.append(
        "leader", {"lease": "operator"}, {"event": "acquired", "term": number, "from": str(start) if start else None}
    )
    for task, agent in tasks:
        log.append("assign", {"task": f"ns/{task}", "uid": task}, {"agent": agent})
    return log


def segments(*paths: Path) -> list[Segment]:
    """The files as segments."""
    return [Segment(str(p), read_lines(p)) for p in paths]


@pytest.fixture
def key() -> Ed25519PrivateKey:
    """The chain's first key."""
    return Ed25519PrivateKey.generate()


def test_two_terms_link_into_one_chain(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Term 1 continues from term 0's anchored head: one chain, replayed across both."""
    (tmp_path / "a").mkdir()
    first = term(tmp_path / "a" / "term-0.log", key, 0, None, [("t1", "x"), ("t2", "x")])
    anchor = first.head()
    (tmp_path / "b").mkdir()
    second = term(tmp_path / "b" / "term-1.log", key, 1, anchor, [("t2", "y")])
    verdict = verify_segments(read_segments([tmp_path / "b", tmp_path / "a"]), key.public_key(), [second.head()])
    assert verdict.ok, verdict
    assert (verdict.entries, verdict.segments, verdict.head_seq, verdict.notes) == (5, 2, 4, ())
    assert [e["seq"] for e in verdict.chain] == [0, 1, 2, 3, 4]
    assert replay(verdict.chain) == {"ns/t1": ("x", "Assigned"), "ns/t2": ("y", "Assigned")}
    assert str(verdict).startswith("OK: 5 entries in 2 segments, head 4 ")


def test_a_tail_written_after_the_last_anchor_is_reported_not_replayed(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """The old leader wrote on after its last anchor; the new term starts from the anchor: a note, not a failure."""
    old = term(tmp_path / "term-0.log", key, 0, None, [("t1", "x")])
    anchor = old.head()
    old.append("assign", {"task": "ns/t2", "uid": "t2"}, {"agent": "x"})  # never anchored
    new = term(tmp_path / "term-1.log", key, 1, anchor, [("t2", "y")])
    verdict = verify_segments(
        segments(tmp_path / "term-0.log", tmp_path / "term-1.log"), [key.public_key()], [new.head()]
    )
    assert verdict.ok, verdict
    assert len(verdict.notes) == 1
    assert "entries 2..2 are not on the main chain" in verdict.notes[0]
    assert replay(verdict.chain)["ns/t2"] == ("y", "Assigned")
    assert [e["seq"] for e in verdict.orphans] == [2]
    assert [e["seq"] for e in verdict.decisions] == [0, 1, 2, 2, 3]  # merged by time


def test_a_missing_segment_is_caught(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Term 1's segment without term 0's: it continues an entry nobody holds."""
    old = term(tmp_path / "term-0.log", key, 0, None, [("t1", "x")])
    term(tmp_path / "term-1.log", key, 1, old.head(), [("t2", "y")])
    verdict = verify_segments(segments(tmp_path / "term-1.log"), key.public_key())
    assert not verdict.ok
    assert verdict.problem == UNLINKED


def test_cutting_the_newest_segment_below_the_lease_anchor_is_caught(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """The Lease's anchor pins the head; cutting entries off the newest term's segment is TAMPERED."""
    old = term(tmp_path / "term-0.log", key, 0, None, [("t1", "x")])
    new = term(tmp_path / "term-1.log", key, 1, old.head(), [("t2", "y"), ("t3", "y")])
    anchor = new.head()
    path = tmp_path / "term-1.log"
    path.write_bytes(b"".join(line + b"\n" for line in read_lines(path)[:-1]))
    verdict = verify_segments(read_segments([tmp_path]), key.public_key(), [anchor])
    assert not verdict.ok
    assert verdict.problem == Problem.TRUNCATED
    # Deleting the whole newest segment is caught the same way.
    path.unlink()
    assert verify_segments(read_segments([tmp_path]), key.public_key(), [anchor]).problem == Problem.TRUNCATED


def test_an_edit_inside_a_segment_names_it(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """A changed entry in a later segment: TAMPERED naming the segment and the entry."""
    old = term(tmp_path / "term-0.log", key, 0, None, [("t1", "x")])
    term(tmp_path / "term-1.log", key, 1, old.head(), [("t2", "y")])
    path = tmp_path / "term-1.log"
    path.write_bytes(path.read_bytes().replace(b'"agent":"y"', b'"agent":"z"'))
    verdict = verify_segments(read_segments([tmp_path]), key.public_key())
    assert not verdict.ok
    assert (verdict.segment, verdict.seq, verdict.line, verdict.problem) == (str(path), 3, 2, Problem.BAD_SIGNATURE)


def test_a_term_signs_with_the_key_the_chain_rotated_to(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Term 0 rotates to a new key; term 1 signs with it and verifies from the first key alone.

    A term signing with a key the chain never rotated to needs that key trusted explicitly.
    """
    new_key, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    old = term(tmp_path / "term-0.log", key, 0, None, [("t1", "x")])
    old.rotate(new_key)
    term(tmp_path / "term-1.log", new_key, 1, old.head(), [("t2", "y")])
    assert verify_segments(read_segments([tmp_path]), key.public_key()).ok
    (tmp_path / "term-1.log").unlink()
    term(tmp_path / "term-1.log", stranger, 1, old.head(), [("t2", "y")])
    verdict = verify_segments(read_segments([tmp_path]), key.public_key())
    assert verdict.problem == Problem.UNKNOWN_KEY
    assert verify_segments(read_segments([tmp_path]), [key.public_key(), stranger.public_key()]).ok


def test_the_cli_verifies_and_replays_directories(tmp_path: Path) -> None:
    """`qorch audit verify DIR DIR` and `qorch audit replay DIR DIR`, with an anchor."""
    private, public = tmp_path / "k", tmp_path / "k.pub"
    runner = CliRunner()
    assert runner.invoke(app, ["audit", "keygen", "--private", str(private), "--public", str(public)]).exit_code == 0
    from qorch.audit import load_private_key  # noqa: PLC0415

    key = load_private_key(private)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    old = term(tmp_path / "a" / "term-0.log", key, 0, None, [("t1", "x")])
    new = term(tmp_path / "b" / "term-1.log", key, 1, old.head(), [("t1", "y")])
    dirs = [str(tmp_path / "a"), str(tmp_path / "b")]
    result = runner.invoke(app, ["audit", "verify", *dirs, "--public-key", str(public), "--anchor", str(new.head())])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK: 4 entries in 2 segments")
    result = runner.invoke(app, ["audit", "replay", *dirs, "--public-key", str(public)])
    assert result.exit_code == 0, result.output
    assert '"ns/t1": [\n    "y",\n    "Assigned"\n  ]' in result.output
    result = runner.invoke(app, ["audit", "verify", dirs[1], "--public-key", str(public)])
    assert result.exit_code == 1
    assert UNLINKED in result.output
