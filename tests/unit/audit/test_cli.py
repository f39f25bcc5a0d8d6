"""`qorch audit verify|keygen`: one line out, exit 0/1, and clear errors (exit 2, no traceback) for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from qorch.audit import AuditLog, entry_hash, load_private_key, read_lines
from qorch.cli.main import app


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """A key pair made by `qorch audit keygen`."""
    private, public = tmp_path / "audit.key", tmp_path / "audit.pub"
    result = CliRunner().invoke(app, ["audit", "keygen", "--private", str(private), "--public", str(public)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("key ")
    return private, public


@pytest.fixture
def log(tmp_path: Path, keys: tuple[Path, Path]) -> Path:
    """A three-entry log signed by the keygen key."""
    path = tmp_path / "audit.log"
    writer = AuditLog(path, load_private_key(keys[0]))
    for i in range(3):
        writer.append("assign", {"task": f"ns/t{i}"}, {"agent": "a"})
    return path


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["audit", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_verify_ok(log: Path, keys: tuple[Path, Path]) -> None:
    """An untouched log: OK, its size and head, exit 0; anchors that match are accepted."""
    head = entry_hash(read_lines(log)[-1])
    code, out, _ = _run("verify", str(log), "--public-key", str(keys[1]), "--anchor", f"2:{head}")
    assert (code, out) == (0, f"OK: 3 entries, head 2 {head}\n")


def test_verify_tampered(log: Path, keys: tuple[Path, Path]) -> None:
    """A modified entry: TAMPERED naming the entry and line, exit 1."""
    log.write_bytes(log.read_bytes().replace(b'"ns/t1"', b'"ns/t9"'))
    code, out, _ = _run("verify", str(log), "--public-key", str(keys[1]))
    assert code == 1
    assert out.startswith("TAMPERED at entry 1 (line 2): bad signature")


def test_verify_truncated_below_anchor(log: Path, keys: tuple[Path, Path]) -> None:
    """A log cut below an anchor: TAMPERED, exit 1."""
    head = entry_hash(read_lines(log)[-1])
    log.write_bytes(b"".join(line + b"\n" for line in read_lines(log)[:1]))
    code, out, _ = _run("verify", str(log), "--public-key", str(keys[1]), "--anchor", f"2:{head}")
    assert code == 1
    assert out.startswith("TAMPERED at entry 1 (line 2): truncated below an anchor")


@pytest.mark.parametrize("what", ["missing-log", "missing-key", "bad-key", "bad-anchor"])
def test_bad_input_is_one_line(tmp_path: Path, log: Path, keys: tuple[Path, Path], what: str) -> None:
    """A missing file, a key that is not one, a malformed anchor: `error: ...` on stderr, exit 2."""
    args = {
        "missing-log": [str(tmp_path / "nope.log"), "--public-key", str(keys[1])],
        "missing-key": [str(log), "--public-key", str(tmp_path / "nope.pub")],
        "bad-key": [str(log), "--public-key", str(log)],
        "bad-anchor": [str(log), "--public-key", str(keys[1]), "--anchor", "two:abc"],
    }[what]
    code, out, err = _run("verify", *args)
    assert code == 2
    assert out == ""
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_keygen_refuses_to_overwrite(keys: tuple[Path, Path]) -> None:
    """An existing private key is never overwritten."""
    before = keys[0].read_bytes()
    code, _, err = _run("keygen", "--private", str(keys[0]), "--public", str(keys[1]))
    assert code == 2
    assert "already exists" in err
    assert keys[0].read_bytes() == before
