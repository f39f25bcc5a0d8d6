"""A real local Kubernetes control plane: etcd + kube-apiserver, started like envtest.

Why: every qorch test that touches the API runs against a real kube-apiserver
(validation, CEL, status subresources, RBAC and resourceVersion conflicts are
the behaviours we depend on, and no fake has them all).

What it must never do: leave processes or temp dirs behind. Children are tied
to this process with PR_SET_PDEATHSIG, `stop()` runs on exit and on Ctrl-C,
and a dir whose owner died anyway is collected by the next start.
There is no kube-controller-manager: deleted namespaces stay Terminating and
no garbage collection runs. Tests must not depend on either.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Self

from qorch.devcluster import _assets, _kubeconfig, _pki, _ports

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

__all__ = ["ADMIN_USER", "ControlPlane", "ControlPlaneError", "collect_stale"]

log = logging.getLogger(__name__)

ADMIN_USER = "qorch-admin"
_PREFIX = "qorch-devcluster-"
_OWNER_FILE = "owner.pid"
_START_ATTEMPTS = 3


class ControlPlaneError(RuntimeError):
    """The control plane could not start; the message carries the server's last log lines."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Have the kernel SIGKILL the child if the process that started it dies."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def collect_stale(base: Path) -> list[Path]:
    """Remove control-plane dirs in `base` whose owner process is gone; return them."""
    removed: list[Path] = []
    if not base.is_dir():
        return removed
    for workdir in base.glob(f"{_PREFIX}*"):
        owner = workdir / _OWNER_FILE
        try:
            pid = int(owner.read_text().strip())
        except (OSError, ValueError):
            # No readable owner: only collect it once it is clearly abandoned.
            if time.time() - workdir.stat().st_mtime < 60:  # noqa: PLR2004
                continue
            pid = -1
        if pid > 0 and _alive(pid):
            continue
        for child in workdir.glob("*.pid"):
            if child.name == _OWNER_FILE:
                continue
            with contextlib.suppress(OSError, ValueError):
                cpid = int(child.read_text().strip())
                cmdline = Path(f"/proc/{cpid}/cmdline").read_bytes()
                if str(workdir).encode() in cmdline:
                    os.kill(cpid, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)
        log.warning("removed stale control-plane dir %s (owner pid %s is gone)", workdir, pid)
        removed.append(workdir)
    return removed


@dataclass(slots=True)
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; always reaped."""
        if self.popen.poll() is None:
            self.popen.terminate()
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=grace)

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass(slots=True)
class _State:
    workdir: Path
    ca: _pki.CertificateAuthority
    server: str
    etcd_url: str
    processes: list[_Process] = field(default_factory=list)
    apiserver_argv: list[str] = field(default_factory=list)


class ControlPlane:
    """etcd + kube-apiserver on loopback, with an admin kubeconfig and per-user ones.

    Use as a context manager, or call `start()` and `stop()`.
    """

    def __init__(
        self,
        *,
        binaries: _assets.Binaries | None = None,
        base_dir: Path | None = None,
        secure_port: int | None = None,
        etcd_port: int | None = None,
        start_timeout: float = 90.0,
        apiserver_args: Sequence[str] = (),
    ) -> None:
        """Configure; nothing starts until `start()`. `apiserver_args` are extra flags, last (so they win)."""
        self._binaries = binaries
        self._apiserver_args = tuple(apiserver_args)
        self._base = base_dir or Path(tempfile.gettempdir())
        self._want_secure_port = secure_port
        self._want_etcd_port = etcd_port
        self._timeout = start_timeout
        self._state: _State | None = None

    # ------------------------------------------------------------ public API
    @property
    def running(self) -> bool:
        """Whether `start()` succeeded and `stop()` has not run."""
        return self._state is not None

    @property
    def server(self) -> str:
        """The API server URL, `https://127.0.0.1:<port>`."""
        return self._require().server

    @property
    def workdir(self) -> Path:
        """The temp dir holding data, certificates, logs and kubeconfigs."""
        return self._require().workdir

    @property
    def pids(self) -> list[int]:
        """Process ids of etcd and kube-apiserver."""
        return [p.popen.pid for p in self._require().processes]

    @property
    def binaries(self) -> _assets.Binaries:
        """The binaries in use (kubectl among them)."""
        if self._binaries is None:
            self._binaries = _assets.find()
        return self._binaries

    @property
    def admin_kubeconfig(self) -> Path:
        """A kubeconfig for a `system:masters` user."""
        return self._require().workdir / "kubeconfigs" / f"{ADMIN_USER}.yaml"

    def kubeconfig_for(self, user: str, groups: Sequence[str] = ()) -> Path:
        """Mint a client certificate for `user` in `groups` and write its kubeconfig."""
        state = self._require()
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in user)
        path = state.workdir / "kubeconfigs" / f"{safe}.yaml"
        creds = state.ca.client(user, groups)
        return _kubeconfig.write(path, server=state.server, ca_pem=state.ca.cert_pem, user=user, creds=creds)

    def start(self) -> Self:
        """Start etcd and kube-apiserver; return once `default` namespace exists."""
        if self._state is not None:
            return self
        binaries = self.binaries
        collect_stale(self._base)
        self._base.mkdir(parents=True, exist_ok=True)
        last_error: ControlPlaneError | None = None
        for attempt in range(1, _START_ATTEMPTS + 1):
            workdir = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=self._base))
            (workdir / _OWNER_FILE).write_text(str(os.getpid()))
            self._state = _State(
                workdir=workdir,
                ca=_pki.CertificateAuthority("qorch-dev-ca"),
                server="",
                etcd_url="",
            )
            atexit.register(self.stop)
            try:
                self._launch(binaries, fresh_ports=attempt > 1)
            except ControlPlaneError as exc:
                last_error = exc
                self.stop()
                if "address already in use" not in str(exc):
                    raise
                log.warning("port taken during start (attempt %d), retrying on fresh ports", attempt)
            except BaseException:
                self.stop()
                raise
            else:
                return self
        assert last_error is not None  # noqa: S101 - loop ran at least once
        raise last_error

    def stop(self) -> None:
        """Stop both processes (TERM, then KILL) and delete the temp dir. Idempotent."""
        state, self._state = self._state, None
        if state is None:
            return
        atexit.unregister(self.stop)
        # One at a time, apiserver first: an apiserver whose etcd is gone hangs in shutdown.
        for proc in reversed(state.processes):
            proc.stop()
        shutil.rmtree(state.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        """Start on entering the block."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop on leaving it, however it is left."""
        self.stop()

    # ------------------------------------------------------------ internals
    def _require(self) -> _State:
        if self._state is None:
            raise ControlPlaneError("the control plane is not running; call start() first")
        return self._state

    def _spawn(self, name: str, argv: list[str]) -> _Process:
        state = self._require()
        log_path = state.workdir / f"{name}.log"
        with log_path.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads run kube binaries
                cwd=state.workdir,
            )
        (state.workdir / f"{name}.pid").write_text(str(popen.pid))
        proc = _Process(name, popen, log_path)
        state.processes.append(proc)
        return proc

    def _launch(self, binaries: _assets.Binaries, *, fresh_ports: bool) -> None:
        state = self._require()
        wd = state.workdir
        etcd_port = _ports.free_port(None if fresh_ports else self._want_etcd_port)
        peer_port = _ports.free_port()
        api_port = _ports.free_port(None if fresh_ports else self._want_secure_port)
        if self._want_secure_port and api_port != self._want_secure_port:
            log.warning(
                "port %d is in use; the API server takes %d instead",
                self._want_secure_port,
                api_port,
            )
        state.etcd_url = f"http://127.0.0.1:{etcd_port}"
        state.server = f"https://127.0.0.1:{api_port}"

        pki = wd / "pki"
        pki.mkdir()
        serving = state.ca.serving(["127.0.0.1", "localhost", "::1"])
        sa = _pki.service_account_keys()
        files = {
            "ca.crt": state.ca.cert_pem,
            "apiserver.crt": serving.cert_pem,
            "apiserver.key": serving.key_pem,
            "sa.pub": sa.cert_pem,
            "sa.key": sa.key_pem,
        }
        for fname, data in files.items():
            (pki / fname).write_bytes(data)
            (pki / fname).chmod(0o600)

        etcd = self._spawn(
            "etcd",
            [
                str(binaries.etcd),
                "--name=qorch",
                f"--data-dir={wd / 'etcd'}",
                f"--listen-client-urls={state.etcd_url}",
                f"--advertise-client-urls={state.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=qorch=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self._wait(etcd, f"{state.etcd_url}/health", context=None)

        state.apiserver_argv = [
            str(binaries.kube_apiserver),
            f"--etcd-servers={state.etcd_url}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--secure-port={api_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--authorization-mode=RBAC",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-issuer={state.server}/",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--disable-admission-plugins=ServiceAccount",
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            *self._apiserver_args,
        ]
        apiserver = self._spawn("kube-apiserver", state.apiserver_argv)
        admin = state.ca.client(ADMIN_USER, ["system:masters"])
        (pki / "admin.crt").write_bytes(admin.cert_pem)
        (pki / "admin.key").write_bytes(admin.key_pem)
        _kubeconfig.write(
            self.admin_kubeconfig,
            server=state.server,
            ca_pem=state.ca.cert_pem,
            user=ADMIN_USER,
            creds=admin,
        )
        self._wait_ready(apiserver)

    def restart_apiserver(self, downtime: float = 0.0) -> None:
        """Stop kube-apiserver, wait `downtime` seconds, start it again on the same port and etcd.

        For fault tests: clients see connection errors, then the same cluster again.
        """
        state = self._require()
        old = next(p for p in state.processes if p.name == "kube-apiserver")
        old.stop()
        state.processes.remove(old)
        time.sleep(downtime)
        self._wait_ready(self._spawn("kube-apiserver", state.apiserver_argv))

    def restart_etcd(self, downtime: float = 0.0) -> None:
        """Stop etcd, wait `downtime` seconds, start it again on the same port and data directory.

        For fault tests: the apiserver stays up and answers errors (or waits) until etcd is back.
        """
        state = self._require()
        old = next(p for p in state.processes if p.name == "etcd")
        argv = [str(arg) for arg in old.popen.args]  # type: ignore[union-attr]
        old.stop()
        state.processes.remove(old)
        time.sleep(downtime)
        etcd = self._spawn("etcd", argv)
        state.processes.remove(etcd)
        state.processes.insert(0, etcd)  # stop() stops the apiserver before etcd
        self._wait(etcd, f"{state.etcd_url}/health", context=None)

    @property
    def etcd_url(self) -> str:
        """The client URL of etcd (plain HTTP on loopback), e.g. for compacting it in a test."""
        return self._require().etcd_url

    def _wait_ready(self, apiserver: _Process) -> None:
        state = self._require()
        pki = state.workdir / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self._wait(apiserver, f"{state.server}/readyz", context=ctx)
        self._wait(apiserver, f"{state.server}/api/v1/namespaces/default", context=ctx)

    def _wait(self, proc: _Process, url: str, *, context: ssl.SSLContext | None) -> None:
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise ControlPlaneError(
                    f"{proc.name} exited with code {proc.popen.returncode} during start-up. "
                    f"Last log lines:\n{proc.tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as resp:  # noqa: S310
                    if resp.status == 200:  # noqa: PLR2004
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise ControlPlaneError(
            f"{proc.name} did not answer {url} within {self._timeout:.0f}s. Last log lines:\n{proc.tail()}"
        )
