"""The operator under 10,000 junk-but-valid tasks: probes stay green, and well-formed tasks keep their latency.

Run:  .venv/bin/python bench/junk_load.py [--quick] [--junk N] [--repeat R] [--write docs/benchmarks.md]

Issue 14 (hostile input): a tenant may fill its namespace with tasks the API accepts
but nothing can ever run. Six kinds, in equal parts, all in the same namespace as the
real work (so every one of them is in the operator's store, its queue or its gate):

- requires a capability no agent has (Queued for ever: in every scheduling batch);
- an agentSelector no agent matches (Queued for ever, the same);
- dependsOn a task that never exists (Blocked);
- approval required and never given (AwaitingApproval);
- a 4 KiB input and an impossible capability (the store carries the bytes);
- a deadline already past and an impossible capability (DeadlineMissed, Queued).

Each round offers well-formed tasks of many classes at 50/s to 200 agents and
measures create→Assigned through a client watch (bench/e2e.py's latency run), first
with no junk present, then again with the junk created and settled (every junk task
has a phase written by the operator). The junk is then deleted, and the next round
starts. A poller reads `/healthz` and `/readyz` of the operator every 0.5 s for the
whole run. A first 5 s of tasks warms the operator up, unmeasured. The figure is the
median of the rounds' p95 ratios (junk ÷ normal).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import statistics
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import report
from e2e import GROUP, TASKS, VERSION, latency_run, live_fleet, peak_rss_mib, prepared, start_operator
from measure import bounded, progress
from qorch.controller.kube import KubeApi
from qorch.devcluster import ControlPlane, _ports

if TYPE_CHECKING:
    from kubernetes_asyncio import client

BEGIN, END = "<!-- junk-load:begin -->", "<!-- junk-load:end -->"
NS = "tenant"
JUNK_LABEL = "qorch.bench/junk"
RATE = 50.0
KINDS = ("capability", "selector", "dependency", "approval", "payload", "deadline")
Row = tuple[str, str, str, str]


def junk_task(i: int) -> dict[str, Any]:
    """One valid task that can never run, of kind `KINDS[i % 6]`."""
    kind = KINDS[i % len(KINDS)]
    spec: dict[str, Any] = {"goal": f"junk {i}", "requires": ["nobody-has-this"], "priority": (i * 7) % 1000}
    if kind == "selector":
        spec["requires"] = ["code"]
        spec["agentSelector"] = {"matchLabels": {"zone": "nowhere"}}
    elif kind == "dependency":
        spec["requires"] = ["code"]
        spec["dependsOn"] = [f"never-{i}"]
    elif kind == "approval":
        spec["requires"] = ["code"]
        spec["approval"] = {"required": True}
    elif kind == "payload":
        spec["input"] = {"blob": "x" * 4096, "index": str(i)}
    elif kind == "deadline":
        spec["deadline"] = "2020-01-01T00:00:00Z"
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Task",
        "metadata": {"name": f"junk-{i}", "labels": {JUNK_LABEL: "true"}},
        "spec": spec,
    }


@dataclass
class Probes:
    """Every probe answer seen: how many, and the failures with what they said."""

    port: int
    seen: int = 0
    failed: list[str] = field(default_factory=list)

    def once(self) -> None:
        """Read both probes once."""
        for path in ("/healthz", "/readyz"):
            self.seen += 1
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as resp:
                    if resp.status != 200:
                        self.failed.append(f"{path} {resp.status}")
            except (urllib.error.URLError, OSError) as exc:
                self.failed.append(f"{path} {exc}")

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set."""
        while not stop.is_set():
            await asyncio.to_thread(self.once)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)


async def settled(kube: KubeApi, count: int, within: float) -> float:
    """Seconds until every junk task has a phase written by the operator."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        phased, token = 0, None
        while True:
            query = {"labelSelector": f"{JUNK_LABEL}=true", "limit": 2000, "continue": token}
            page = await kube.call("GET", TASKS.path(NS), query=query, timeout=120)
            phased += sum(1 for t in page["items"] if (t.get("status") or {}).get("phase"))
            token = page["metadata"].get("continue") or None
            if token is None:
                break
        if phased >= count:
            return time.monotonic() - started
        progress(f"  {phased}/{count} junk tasks have a phase")
        await asyncio.sleep(3)
    raise TimeoutError(f"junk not settled in {within:.0f} s")


async def drop(kube: KubeApi, selector: str) -> None:
    """Delete a collection of tasks and wait until it is gone."""
    await kube.call("DELETE", TASKS.path(NS), query={"labelSelector": selector} if selector else None, timeout=300)
    while (await kube.call("GET", TASKS.path(NS), query={"limit": 1, "labelSelector": selector}))["items"]:  # noqa: ASYNC110 - a poll of the apiserver
        await asyncio.sleep(1)


def p95(values: list[float]) -> float:
    """The 95th percentile, nearest rank."""
    return sorted(values)[int(0.95 * (len(values) - 1))]


async def one_round(api: client.ApiClient, kube: KubeApi, r: int, junk: int, seconds: float) -> tuple[float, float]:
    """(p95 normal, p95 with the junk present), seconds; the junk and the live tasks are gone after it."""
    progress(f"round {r}: {RATE:.0f}/s of well-formed tasks, no junk")
    normal, _, offered = await latency_run(api, NS, RATE, seconds, prefix=f"ok{r}")
    if len(normal) < offered // 2:
        raise RuntimeError(f"only {len(normal)} of {offered} well-formed tasks were assigned")
    await drop(kube, "!" + JUNK_LABEL)
    progress(f"round {r}: creating {junk:,} junk tasks")
    await bounded([kube.call("POST", TASKS.path(NS), body=junk_task(i)) for i in range(junk)], 32)
    took = await settled(kube, junk, within=900)
    progress(f"round {r}: junk settled {took:.0f} s after the last create; {RATE:.0f}/s of well-formed tasks again")
    loaded, _, offered_j = await latency_run(api, NS, RATE, seconds, prefix=f"jk{r}")
    if len(loaded) < offered_j // 2:
        raise RuntimeError(f"only {len(loaded)} of {offered_j} well-formed tasks were assigned under junk")
    await drop(kube, "")
    return p95(normal), p95(loaded)


async def run(junk: int, repeat: int, seconds: float) -> tuple[list[Row], str]:
    with tempfile.TemporaryDirectory() as tmp, ControlPlane() as plane:
        api = await prepared(plane)
        profiles = await live_fleet(api, NS, 200)
        health = _ports.free_port()
        op = start_operator(plane.admin_kubeconfig, Path(tmp), _ports.free_port(), NS, health_port=health)
        probes, stop = Probes(health), asyncio.Event()
        await asyncio.sleep(8)  # leader elected, caches synced
        poller = asyncio.create_task(probes.run(stop))
        kube = KubeApi(api, connections=40)
        try:
            progress("warm-up: 5 s of well-formed tasks, not measured")
            await latency_run(api, NS, RATE, 5, prefix="warm")
            await drop(kube, "")
            rounds = [await one_round(api, kube, r, junk, seconds) for r in range(repeat)]
        finally:
            stop.set()
            await poller
            rss = peak_rss_mib(op.pid)
            op.terminate()
            op.wait(timeout=30)
            await kube.close()
            await api.close()
    ratios = [j / n for n, j in rounds]
    ratio = statistics.median(ratios)
    normal_ms = statistics.median(n for n, _ in rounds) * 1000
    junk_ms = statistics.median(j for _, j in rounds) * 1000
    offered = int(RATE * seconds)
    rows: list[Row] = [
        (
            (
                f"p95 create→Assigned of well-formed tasks ({offered} per run at {RATE:.0f}/s, 200 agents of "
                f"{profiles} profiles) with {junk:,} junk-but-valid tasks present ÷ with none; median of {repeat} "
                f"rounds (spread {min(ratios):.2f}–{max(ratios):.2f})"
            ),
            f"{junk_ms:.0f} ms ÷ {normal_ms:.0f} ms (median p95s); median of the rounds' ratios {ratio:.2f}",
            "≤ 2",
            "met" if ratio <= 2 else "MISSED",
        ),
        (
            "operator probes (/healthz, /readyz every 0.5 s) during the whole run",
            f"{probes.seen - len(probes.failed)} of {probes.seen} green"
            + (f"; first failure: {probes.failed[0]}" if probes.failed else ""),
            "all green",
            "met" if not probes.failed else "MISSED",
        ),
        (f"operator peak RSS (VmHWM) over the run, {junk:,} junk tasks at a time", f"{rss:.0f} MiB", "—", "—"),
    ]
    return rows, f"junk kinds, equal parts: {', '.join(KINDS)}"


def main() -> None:
    """Run and print (and optionally write) the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2,000 junk tasks, 2 rounds of 10 s")
    parser.add_argument("--junk", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    junk, repeat, seconds = (2_000, 2, 10.0) if args.quick else (args.junk, args.repeat, 20.0)
    started = time.perf_counter()
    rows, kinds = asyncio.run(run(junk, repeat, seconds))
    options = " --quick" if args.quick else ""
    options += f" --junk {args.junk}" if not args.quick and args.junk != 10_000 else ""
    options += f" --repeat {args.repeat}" if not args.quick and args.repeat != 3 else ""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    text = report.render(
        BEGIN,
        END,
        f"Command: `.venv/bin/python bench/junk_load.py{options} --write docs/benchmarks.md` ({when}, "
        f"{time.perf_counter() - started:.0f} s in all, one operator replica, admin identity, one local "
        f"kube-apiserver + etcd on the same 2 cores; {kinds}).",
        rows,
    )
    print(text)
    if args.write:
        report.write_section(args.write, BEGIN, END, "Junk load (issue 14: hostile input)", text)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
