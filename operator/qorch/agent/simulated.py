"""A simulated agent pool: keeps Agents of a namespace alive and "runs" their tasks, by the protocol.

For demos, tests and load benchmarks; named as such. It follows the agent
protocol (docs/protocol.md) exactly as the runtime does: it renews each
agent's Lease, claims an attempt only with compare-and-set and only if the
assignment names the agent, never runs more than an agent's capacity (a claim
over capacity is refused), and reports the end of an attempt only while that
attempt is current. Work takes a time derived from the attempt's identity and
fails with probability `failure_rate`.

With `record`, every claim, refusal, lost race and finish is appended to a JSON-lines
file, so a test can prove that each attempt ran once and no agent ever ran
more than its capacity.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes_asyncio import client, config

from qorch.agent.attempts import TASKS, Attempts, Claim, UnsettledClaimError
from qorch.api import constants, protocol
from qorch.controller.kube import ApiError, KubeApi, KubeError, Resource

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from qorch.api.protocol import AttemptId

__all__ = ["PoolSettings", "SimulatedPool", "run"]

log = logging.getLogger(__name__)
AGENTS = Resource(constants.GROUP, constants.VERSION, "agents")
LEASES = Resource("coordination.k8s.io", "v1", "leases")
_NOT_FOUND = 404
_RENEWALS_IN_FLIGHT = 8
_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Where the pool works and how it behaves."""

    namespace: str
    kubeconfig: str | None = None
    selector: str = ""  # label selector: which Agents of the namespace this pool serves
    renew_seconds: float = 2.0
    lease_seconds: int = 10
    poll_seconds: float = 0.25
    work_seconds: tuple[float, float] = (1.0, 4.0)
    failure_rate: float = 0.0
    claim_delay: float = 0.0  # pause between reading an assignment and claiming it (to race requeues)
    record: str = ""  # JSON-lines file of claims, refusals and finishes


def _fraction(text: str) -> float:
    """A stable number in [0, 1) from a name, so runs are reproducible."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "little") / 2**32


@dataclass(slots=True)
class _Run:
    claim: Claim
    due: float
    fails: bool


@dataclass(slots=True)
class SimulatedPool:
    """Renews Leases and executes assigned attempts for the Agents it serves."""

    api: KubeApi
    settings: PoolSettings
    capacity: dict[str, int] = field(default_factory=dict)  # agent -> capacity
    running: dict[AttemptId, _Run] = field(default_factory=dict)
    claiming: dict[str, int] = field(default_factory=dict)  # agent -> claims in flight (they hold a slot)
    # Claims whose outcome the apiserver never told; each holds a slot until settled.
    unsettled: dict[AttemptId, UnsettledClaimError] = field(default_factory=dict)
    recovered: bool = False
    _attempts: Attempts | None = None
    _gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(_CONCURRENCY))

    @property
    def attempts(self) -> Attempts:
        """The protocol client."""
        if self._attempts is None:
            self._attempts = Attempts(self.api, self.settings.namespace)
        return self._attempts

    def _record(self, event: str, attempt: AttemptId, agent: str, task: str, **extra: object) -> None:
        if not self.settings.record:
            return
        line = {
            "event": event,
            "uid": attempt.task_uid,
            "attempt": attempt.attempt,
            "agent": agent,
            "task": task,
            "time": time.time(),
            **extra,
        }
        with Path(self.settings.record).open("a") as out:
            out.write(json.dumps(line) + "\n")

    def load(self, agent: str) -> int:
        """Slots of `agent` taken: attempts running, and claims on their way (which may yet run)."""
        held = [*(run.claim for run in self.running.values()), *(u.claim for u in self.unsettled.values())]
        return self.claiming.get(agent, 0) + sum(1 for claim in held if claim.agent == agent)

    async def renew(self) -> None:
        """Read the served Agents and renew their Leases."""
        ns = self.settings.namespace
        agents = await self.api.call("GET", AGENTS.path(ns), query={"labelSelector": self.settings.selector or None})
        self.capacity = {a["metadata"]["name"]: int(a["spec"].get("capacity", 1)) for a in agents.get("items") or ()}
        # A few renewals in flight at once: one after another, hundreds of Leases on a busy
        # apiserver take longer than a Lease lasts (the full-size cold start lost half its agents).
        gate = asyncio.Semaphore(_RENEWALS_IN_FLIGHT)

        async def renew_one(name: str) -> None:
            async with gate:
                await self._renew(ns, name)

        outcomes = await asyncio.gather(*map(renew_one, self.capacity), return_exceptions=True)
        failures = [f for f in outcomes if isinstance(f, BaseException)]
        if failures:  # every Lease was tried; the first failure is reported (and logged by the caller)
            raise failures[0]

    async def _renew(self, ns: str, name: str) -> None:
        lease = constants.AGENT_LEASE_PREFIX + name
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": self.settings.lease_seconds,
            "renewTime": protocol.timestamp(),
        }
        try:
            await self.api.call(
                "PATCH", LEASES.path(ns, lease), body={"spec": spec}, content_type="application/merge-patch+json"
            )
        except ApiError as exc:
            if exc.status != _NOT_FOUND:
                raise
            await self.api.call("POST", LEASES.path(ns), body={"metadata": {"name": lease}, "spec": spec})

    async def _tasks(self, phase: str) -> list[dict[str, Any]]:
        page = await self.api.call(
            "GET", TASKS.path(self.settings.namespace), query={"fieldSelector": f"status.phase={phase}"}
        )
        return [
            t for t in page.get("items") or () if (t["status"].get("assignment") or {}).get("agent") in self.capacity
        ]

    async def recover(self) -> None:
        """After a restart: attempts claimed by our agents that nobody here runs any more have failed."""
        for task in await self._tasks("Running") + await self._tasks("Assigned"):
            execution = task["status"].get("execution") or {}
            agent = str(execution.get("agent", ""))
            attempt = protocol.current(task, agent)
            if attempt is None or attempt in self.running or execution.get("finishedAt") or execution.get("refused"):
                continue
            if int(execution.get("attempt") or 0) != attempt.attempt or not execution.get("startedAt"):
                continue
            claim = Claim(attempt, agent, task["metadata"]["name"], str(execution["startedAt"]))
            if await self.attempts.finish(claim, error="the agent restarted while running this attempt"):
                self._record("finish", attempt, agent, claim.task, ok=False, recovered=True)
        self.recovered = True

    async def work(self) -> None:
        """Settle doubtful claims, claim what is assigned to our agents (up to capacity), finish what is due."""
        await _all(self._settle(unsettled) for unsettled in list(self.unsettled.values()))
        assigned = await self._tasks("Assigned")
        await _all(self._take(task) for task in assigned)
        now = asyncio.get_running_loop().time()
        due = [run for run in self.running.values() if run.due <= now]
        await _all(self._finish(run) for run in due)

    async def _settle(self, unsettled: UnsettledClaimError) -> None:
        """A claim whose answer was lost: run it if it landed, let it go if it never will."""
        claim = unsettled.claim
        async with self._gate:
            landed = await self.attempts.settle(unsettled)
        if landed is None:
            return  # still unknown: the slot stays held
        del self.unsettled[claim.attempt]
        if landed:
            self._start(claim)
        else:
            self._record("raced", claim.attempt, claim.agent, claim.task)

    def _start(self, claim: Claim) -> None:
        low, high = self.settings.work_seconds
        key = str(claim.attempt)
        self.running[claim.attempt] = _Run(
            claim,
            asyncio.get_running_loop().time() + low + (high - low) * _fraction(key),
            _fraction("fail" + key) < self.settings.failure_rate,
        )
        self._record("claim", claim.attempt, claim.agent, claim.task)

    async def _take(self, task: dict[str, Any]) -> None:
        agent = str(task["status"]["assignment"]["agent"])
        attempt = protocol.claimable(task, agent)
        if attempt is None or attempt in self.running or attempt in self.unsettled:
            return
        async with self._gate:
            if self.settings.claim_delay:
                await asyncio.sleep(self.settings.claim_delay)
            if self.load(agent) >= self.capacity.get(agent, 0):
                message = f"{agent} already runs {self.load(agent)} of {self.capacity.get(agent, 0)} attempts"
                if await self.attempts.refuse(task, agent, reason=protocol.OVER_CAPACITY, message=message):
                    self._record("refuse", attempt, agent, task["metadata"]["name"])
                return
            # The slot is taken before the claim's await and held until it settles: checking
            # room and claiming are one step, or concurrent claims would all see the same free slot.
            self.claiming[agent] = self.claiming.get(agent, 0) + 1
            try:
                claim = await self.attempts.claim(task, agent)
            except UnsettledClaimError as doubt:
                self.unsettled[attempt] = doubt  # holds the slot until settled
                log.warning("%s; settling it later", doubt)
                return
            finally:
                self.claiming[agent] -= 1
            if claim is None:  # the assignment changed under us (requeued, reassigned, deleted): not ours
                self._record("raced", attempt, agent, task["metadata"]["name"])
                return
            self._start(claim)

    async def _finish(self, run: _Run) -> None:
        claim = run.claim
        async with self._gate:
            try:
                if run.fails:
                    landed = await self.attempts.finish(claim, error="simulated failure")
                else:
                    landed = await self.attempts.finish(claim, result=f"simulated: attempt {claim.attempt.attempt}")
            except KubeError as exc:
                log.warning("finish of %s failed, will retry: %s", claim.attempt, exc)
                return
            self.running.pop(claim.attempt, None)
            self._record("finish" if landed else "abandon", claim.attempt, claim.agent, claim.task, ok=not run.fails)


async def _all(steps: Iterable[Awaitable[None]]) -> None:
    """Run steps concurrently; one failing (the API) is logged and does not stop the others."""
    for outcome in await asyncio.gather(*steps, return_exceptions=True):
        if isinstance(outcome, KubeError):
            log.warning("simulated pool: %s", outcome)
        elif isinstance(outcome, BaseException):
            raise outcome


async def _every(seconds: float, stop: asyncio.Event, step: Callable[[], Awaitable[None]]) -> None:
    """Run `step` every `seconds` until `stop`; an API failure is logged and the next round tries again."""
    while not stop.is_set():
        try:
            await step()
        except KubeError as exc:
            log.warning("simulated pool: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


async def _main(settings: PoolSettings) -> None:
    if settings.kubeconfig:
        await config.load_kube_config(config_file=settings.kubeconfig)
    else:
        await config.load_kube_config()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with client.ApiClient() as api_client:
        api = KubeApi(api_client)
        pool = SimulatedPool(api, settings)

        async def work() -> None:
            if not pool.capacity:
                return
            if not pool.recovered:
                await pool.recover()
            await pool.work()

        # Leases are renewed on their own cadence, never behind a slow round of work.
        try:
            await asyncio.gather(
                _every(settings.renew_seconds, stop, pool.renew),
                _every(settings.poll_seconds, stop, work),
            )
        finally:
            await api.close()


def run(settings: PoolSettings) -> None:
    """Run until SIGTERM or Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_main(settings))
