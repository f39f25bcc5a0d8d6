"""Starting and stopping control planes leaves nothing behind, whatever goes wrong."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from qorch.devcluster import ControlPlane
from qorch.devcluster.controlplane import collect_stale

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def test_stop_leaves_no_processes_and_no_temp_dirs(tmp_path: Path) -> None:
    """After stop(), etcd and kube-apiserver are gone (by pid) and the workdir is deleted."""
    plane = ControlPlane(base_dir=tmp_path).start()
    pids, workdir = plane.pids, plane.workdir
    assert all(_alive(p) for p in pids)
    assert workdir.is_dir()
    plane.stop()
    assert _wait_gone(pids, timeout=1) == []
    assert not workdir.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_failing_block_still_stops_everything(tmp_path: Path) -> None:
    """An exception inside `with ControlPlane()` still stops processes and removes dirs."""
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="boom"), ControlPlane(base_dir=tmp_path) as plane:
        pids = plane.pids
        raise RuntimeError("boom")
    assert _wait_gone(pids, timeout=1) == []
    assert list(tmp_path.iterdir()) == []


_HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from qorch.devcluster import ControlPlane
    with ControlPlane(base_dir=Path(sys.argv[1])) as plane:
        print(" ".join(map(str, plane.pids)), flush=True)
        time.sleep(600)
""")


@pytest.mark.parametrize(
    ("sig", "dir_removed"),
    [
        pytest.param(signal.SIGINT, True, id="ctrl-c-cleans-up"),
        pytest.param(signal.SIGKILL, False, id="kill-9-children-die-dir-collected-later"),
    ],
)
def test_owner_death_leaves_no_processes(tmp_path: Path, sig: signal.Signals, dir_removed: bool) -> None:
    """Ctrl-C stops everything; even kill -9 of the owner takes etcd and apiserver with it."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert _wait_gone(pids) == []
    leftovers = list(tmp_path.glob("qorch-devcluster-*"))
    if dir_removed:
        assert leftovers == []
    else:
        assert len(leftovers) == 1  # the owner had no chance to clean; the next start does
        assert collect_stale(tmp_path) == leftovers
        assert list(tmp_path.glob("qorch-devcluster-*")) == []


def test_a_port_in_use_is_replaced_by_a_free_one(tmp_path: Path) -> None:
    """Asking for a busy port starts the API server on another one instead of failing."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        with ControlPlane(base_dir=tmp_path, secure_port=busy, etcd_port=busy) as plane:
            port = int(plane.server.rsplit(":", 1)[1])
            assert port != busy
            assert plane.server.startswith("https://127.0.0.1:")


def test_a_stale_data_dir_is_cleaned_up_on_start(tmp_path: Path) -> None:
    """A dir left by a dead owner (and any process still in it) is removed by the next start."""
    stale = tmp_path / "qorch-devcluster-stale"
    (stale / "etcd").mkdir(parents=True)
    (stale / "etcd" / "member").write_text("old data")
    dead = subprocess.Popen(["true"])
    dead.wait()
    (stale / "owner.pid").write_text(str(dead.pid))
    with ControlPlane(base_dir=tmp_path) as plane:
        assert not stale.exists()
        assert plane.workdir.parent == tmp_path
