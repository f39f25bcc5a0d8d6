"""Real operator processes for e2e tests: start, read metrics, kill."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qorch.devcluster import _ports


@dataclass
class OperatorProcess:
    """One `qorch operator run` replica; with a supervisor, restarted like a Deployment's pod."""

    identity: str
    popen: subprocess.Popen[bytes]
    log: Path
    metrics_port: int
    argv: list[str] = field(default_factory=list)
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    supervised: bool = False
    health_port: int = 0
    env: dict[str, str] | None = None
    _stopping: bool = False

    def healthz(self) -> int:
        """The /healthz status code (0 when unreachable)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=3) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def wait(self, timeout: float) -> int | None:
        """Wait for the process to exit; its code, or None if it still runs."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def log_text(self) -> str:
        """The whole log."""
        return self.log.read_text(errors="replace")

    def supervise(self) -> None:
        """Restart the process whenever it exits, as a Deployment would (call from a thread)."""
        while not self._stopping:
            code = self.popen.wait()
            if self._stopping:
                return
            self.exit_codes.append(code)
            time.sleep(1.0)  # kubelet-style back-off, first step
            with self.log.open("ab") as out:
                self.popen = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env)
            self.restarts += 1

    def metrics_text(self) -> str:
        """The whole /metrics page ('' when unreachable)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=3) as resp:
                return str(resp.read().decode())
        except OSError:
            return ""

    def metric(self, name: str) -> float:
        """Sum of a Prometheus metric's samples (0 if absent or unreachable)."""
        text = self.metrics_text()
        return sum(float(m) for m in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` and reap the process (and stop supervising it)."""
        self._stopping = True
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=20)

    def tail(self, lines: int = 30) -> str:
        """The end of its log, for assertion messages."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class OperatorFleet:
    """Starts replicas and stops them all at teardown."""

    kubeconfig: Path
    workdir: Path
    namespace: str
    started: list[OperatorProcess] = field(default_factory=list)

    def start(
        self,
        identity: str,
        *,
        lease_name: str = "qorch-operator",
        lease_namespace: str = "qorch-system",
        timings: tuple[float, float, float] = (15, 10, 2),
        supervised: bool = False,
        kubeconfig: Path | None = None,
        health: bool = False,
        also: Sequence[str] = (),
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> OperatorProcess:
        """Start one replica watching only the test's namespace and `also` (restarted on exit if supervised).

        `env` adds to the environment (e.g. a shifted clock, see support.clock).
        """
        environ = {**os.environ, **env} if env else None
        port = _ports.free_port()
        health_port = _ports.free_port() if health else 0
        log = self.workdir / f"operator-{identity}.log"
        argv = [
            sys.executable,
            "-m",
            "qorch.cli",
            "operator",
            "run",
            f"--kubeconfig={kubeconfig or self.kubeconfig}",
            f"--namespace={self.namespace}",
            *(f"--namespace={other}" for other in also),
            f"--metrics-port={port}",
            f"--health-port={health_port}",
            f"--lease-namespace={lease_namespace}",
            f"--identity={identity}",
            f"--lease-name={lease_name}",
            f"--lease-duration={timings[0]}",
            f"--renew-deadline={timings[1]}",
            f"--retry-period={timings[2]}",
            *extra,
        ]
        with log.open("wb") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=environ)
        proc = OperatorProcess(
            identity, popen, log, port, argv=argv, supervised=supervised, health_port=health_port, env=environ
        )
        if supervised:
            threading.Thread(target=proc.supervise, daemon=True).start()
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        """Terminate every replica still running."""
        for proc in self.started:
            proc.kill(signal.SIGTERM)
