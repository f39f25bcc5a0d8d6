"""`qorch agent run` refuses bad input with one line naming the flag, before it touches a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from qorch.cli.main import app


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--name=Bad_Name", "m:h"], "--name 'Bad_Name' must be a DNS label"),
        (["--name=a", "--capabilities=code,code", "m:h"], "--capabilities must be distinct DNS labels"),
        (["--name=a", "--capabilities=Code", "m:h"], "--capabilities must be distinct DNS labels"),
        (["--name=a", "--capacity=0", "m:h"], "--capacity must be from 1 to 100000"),
        (
            ["--name=a", "--renew-seconds=4", "m:h"],
            "--renew-seconds (4) must be at most a third of --lease-seconds (10)",
        ),
        (["--name=a", "--label=novalue", "m:h"], "--label must be KEY=VALUE"),
        (["--name=a", "--label=team=a b", "m:h"], "--label must be KEY=VALUE"),
        (["--name=a", "handler_without_colon"], "must be MODULE:NAME"),
        (["--name=a", "no_such_module_here:h"], "cannot import module 'no_such_module_here'"),
        (["--name=a", "handlers_fixture:not_callable"], "must be a function taking a TaskContext"),
    ],
)
def test_bad_flags_are_one_line_errors(
    argv: list[str], says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 2 and one line on stderr that names what to fix; never a traceback."""
    (tmp_path / "handlers_fixture.py").write_text("not_callable = 42\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["agent", "run", *argv])
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert says in err
    assert len(err.splitlines()) == 1
    assert "Traceback" not in result.output
