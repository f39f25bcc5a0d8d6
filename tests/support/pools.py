"""Simulated agent pools as real processes, their execution records, and the checks made on them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from support.api import Api


@dataclass
class Pool:
    """One `qorch dev agents` process."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    record: Path

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Signal the pool and reap it."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=20)

    def tail(self, lines: int = 20) -> str:
        """The end of its log."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class PoolFleet:
    """Starts pools for one namespace and stops them at teardown."""

    kubeconfig: Path
    workdir: Path
    namespace: str
    started: list[Pool] = field(default_factory=list)

    def start(
        self,
        name: str,
        *,
        selector: str = "",
        work: str = "0.2,0.6",
        failure_rate: float = 0.0,
        lease_seconds: int = 10,
        renew_seconds: float = 1.0,
        poll_seconds: float = 0.1,
        claim_delay: float = 0.0,
        kubeconfig: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Pool:
        """Start `qorch dev agents` serving the Agents that `selector` matches, recording to a file."""
        log = self.workdir / f"pool-{name}.log"
        record = self.workdir / f"pool-{name}.jsonl"
        argv = [
            sys.executable, "-m", "qorch.cli", "dev", "agents",
            f"--namespace={self.namespace}", f"--kubeconfig={kubeconfig or self.kubeconfig}",
            f"--selector={selector}", f"--work-seconds={work}", f"--failure-rate={failure_rate}",
            f"--lease-seconds={lease_seconds}", f"--renew-seconds={renew_seconds}",
            f"--poll-seconds={poll_seconds}", f"--claim-delay={claim_delay}", f"--record={record}",
        ]  # fmt: skip
        with log.open("wb") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        pool = Pool(name, popen, log, record)
        self.started.append(pool)
        return pool

    def records(self) -> list[dict[str, Any]]:
        """Every claim, refusal, finish and abandonment, from every pool, in time order."""
        out: list[dict[str, Any]] = []
        for pool in self.started:
            if pool.record.exists():
                out += [json.loads(line) for line in pool.record.read_text().splitlines() if line.strip()]
        return sorted(out, key=lambda r: r["time"])

    def stop_all(self) -> None:
        """Stop every pool started."""
        for pool in self.started:
            pool.stop()


def claims_per_attempt(records: list[dict[str, Any]]) -> Counter[tuple[str, int]]:
    """How many times each attempt (task uid, attempt number) was claimed, over all pools."""
    return Counter((r["uid"], r["attempt"]) for r in records if r["event"] == "claim")


def peak_running(records: list[dict[str, Any]]) -> dict[str, int]:
    """The most attempts each agent ever ran at once, from claim to finish or abandonment."""
    running: Counter[str] = Counter()
    peak: dict[str, int] = {}
    for r in records:
        if r["event"] == "claim":
            running[r["agent"]] += 1
            peak[r["agent"]] = max(peak.get(r["agent"], 0), running[r["agent"]])
        elif r["event"] in ("finish", "abandon") and not r.get("recovered"):
            running[r["agent"]] -= 1
    return peak


class CapacitySampler:
    """Reads the API every `period` seconds for the whole test: no agent may hold more claims than slots.

    Counted per agent: tasks whose report shows a claim of the *current* attempt by
    that agent, not yet finished. Sampled continuously, not only at the end.
    """

    def __init__(self, api: Api, namespace: str, period: float = 0.3) -> None:
        """Sample `namespace` every `period` seconds once entered."""
        self._api = api
        self._namespace = namespace
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.samples = 0
        self.violations: list[str] = []
        self.peak: dict[str, int] = {}

    def __enter__(self) -> Self:
        """Start sampling."""
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        """Stop sampling (after one last sample in flight)."""
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):  # an apiserver restart during a fault test: try again
                self.sample()
            self._stop.wait(self._period)

    def sample(self) -> None:
        """One look at every agent's claimed, unfinished attempts."""
        capacity = {a["metadata"]["name"]: a["spec"].get("capacity", 1) for a in self._api.agents(self._namespace)}
        held: Counter[str] = Counter()
        names: dict[str, list[str]] = {}
        for task in self._api.tasks(self._namespace):
            status = task.get("status") or {}
            report = status.get("execution") or {}
            assignment = status.get("assignment") or {}
            if (
                status.get("phase") in ("Assigned", "Running")
                and report.get("startedAt")
                and not report.get("finishedAt")
                and report.get("agent") == assignment.get("agent")
                and report.get("attempt") == assignment.get("attempt")
            ):
                held[report["agent"]] += 1
                names.setdefault(report["agent"], []).append(f"{task['metadata']['name']}#{report.get('attempt')}")
        self.samples += 1
        for agent, count in held.items():
            self.peak[agent] = max(self.peak.get(agent, 0), count)
            if count > capacity.get(agent, 0):
                self.violations.append(f"{agent}: {count} running > capacity {capacity.get(agent)}: {names[agent]}")


def wait_for(predicate: Any, timeout: float, period: float = 0.5, what: str = "condition") -> Any:
    """Poll until `predicate()` returns something truthy; return it, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(period)
