"""A control plane that outlives the command that started it (`qorch dev cluster up`).

`up()` starts a supervisor process (`python -m qorch.devcluster serve`) in its
own session; the supervisor owns etcd and kube-apiserver (they die with it),
writes `state.json` once the API answers, and stops everything on SIGTERM.
The admin kubeconfig is copied to a stable path, so `export KUBECONFIG=...`
stays valid across restarts. State lives in `<cache>/dev/`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from qorch.devcluster import _assets
from qorch.devcluster.controlplane import ControlPlane, ControlPlaneError, collect_stale

__all__ = ["Status", "down", "kubeconfig_path", "serve", "state_dir", "status", "up"]


def state_dir() -> Path:
    """Where the background control plane keeps its state and kubeconfig."""
    return _assets.cache_root() / "dev"


def kubeconfig_path() -> Path:
    """The stable admin kubeconfig path of the background control plane."""
    return state_dir() / "kubeconfig"


@dataclass(frozen=True, slots=True)
class Status:
    """What `qorch dev cluster status` reports."""

    up: bool
    supervisor_pid: int | None = None
    server: str | None = None
    kubeconfig: str | None = None
    pids: tuple[int, ...] = ()
    detail: str = ""


def _read_state() -> dict[str, object] | None:
    try:
        data = json.loads((state_dir() / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _healthy(kubeconfig: Path, server: str) -> bool:
    import yaml  # noqa: PLC0415 - only status needs it

    try:
        cfg = yaml.safe_load(kubeconfig.read_text())
        import base64  # noqa: PLC0415
        import tempfile  # noqa: PLC0415

        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        with tempfile.TemporaryDirectory() as tmp:
            crt, key = Path(tmp) / "c", Path(tmp) / "k"
            crt.write_bytes(base64.b64decode(user["client-certificate-data"]))
            key.write_bytes(base64.b64decode(user["client-key-data"]))
            ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
            ctx.load_cert_chain(str(crt), str(key))
            with urllib.request.urlopen(f"{server}/healthz", timeout=3, context=ctx) as resp:  # noqa: S310
                return bool(resp.status == 200)  # noqa: PLR2004
    except (OSError, KeyError, ValueError, TypeError):
        return False


def status() -> Status:
    """Whether the background control plane is up and answering."""
    state = _read_state()
    if state is None:
        return Status(up=False, detail="not started (no state file)")
    pid = int(str(state.get("supervisor_pid", 0)))
    server = str(state.get("server", ""))
    kubeconfig = str(state.get("kubeconfig", ""))
    pids = tuple(int(p) for p in state.get("pids", []))  # type: ignore[attr-defined]
    if not _pid_alive(pid):
        return Status(up=False, supervisor_pid=pid, detail="supervisor is gone (stale state)")
    healthy = _healthy(Path(kubeconfig), server)
    return Status(
        up=healthy,
        supervisor_pid=pid,
        server=server,
        kubeconfig=kubeconfig,
        pids=pids,
        detail="healthy" if healthy else "supervisor runs but /healthz does not answer",
    )


def up(*, timeout: float = 180.0) -> Status:
    """Start the background control plane unless it is already up."""
    current = status()
    if current.up:
        return current
    down()  # clears a stale state left by a crash
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "supervisor.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qorch.devcluster", "serve"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            raise ControlPlaneError(f"the control plane did not start:\n{tail}")
        if (directory / "state.json").exists():
            return status()
        time.sleep(0.2)
    proc.terminate()
    raise ControlPlaneError(f"the control plane did not start within {timeout:.0f}s; see {log_path}")


def down(*, timeout: float = 30.0) -> bool:
    """Stop the background control plane; return whether one was running."""
    state = _read_state()
    directory = state_dir()
    was_running = False
    if state is not None:
        pid = int(str(state.get("supervisor_pid", 0)))
        if pid > 0 and _pid_alive(pid):
            was_running = True
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        (directory / "state.json").unlink()
    with contextlib.suppress(FileNotFoundError):
        kubeconfig_path().unlink()
    collect_stale(directory / "runs")
    return was_running


def serve() -> int:
    """Run the control plane in the foreground until SIGTERM/SIGINT (the supervisor)."""
    directory = state_dir()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    try:
        plane = ControlPlane(base_dir=directory / "runs").start()
    except (ControlPlaneError, _assets.AssetsNotFoundError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    try:
        shutil.copyfile(plane.admin_kubeconfig, kubeconfig_path())
        kubeconfig_path().chmod(0o600)
        state = {
            "supervisor_pid": os.getpid(),
            "server": plane.server,
            "kubeconfig": str(kubeconfig_path()),
            "pids": plane.pids,
            "workdir": str(plane.workdir),
        }
        tmp = directory / "state.json.tmp"
        tmp.write_text(json.dumps(state))
        tmp.replace(directory / "state.json")
        sys.stdout.write(f"control plane up at {plane.server}\n")
        sys.stdout.flush()
        while not stop.wait(1.0):
            if any(not _pid_alive(p) for p in plane.pids):
                sys.stderr.write("a control-plane process died; stopping\n")
                return 1
        return 0
    finally:
        plane.stop()
        with contextlib.suppress(FileNotFoundError):
            (directory / "state.json").unlink()


def as_dict(value: Status) -> dict[str, object]:
    """Status as plain data, for `--output json`."""
    return asdict(value)
