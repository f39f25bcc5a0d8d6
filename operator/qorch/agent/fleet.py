"""Many agents served from one process: one watch, one renewal loop, the runtime's protocol code.

`qorch agent run` serves one Agent with a watch and a Lease loop of its own. A
process that serves a thousand Agents (the SDK's UnifiedQuantumOrchestrator)
must not open a thousand watches and a thousand renewal loops, so `AgentFleet`
keeps one `AgentRuntime` per Agent for its state and protocol steps (claim,
admission, run, report, drain, release: `runtime.py` and `attempts.py`,
unchanged) and shares the I/O:

- one Task informer over the namespace; each event goes to the runtime its
  `status.assignment.agent` names (and leaves the one it named before), which
  is what each runtime's field-selected watch would have seen;
- one renewal loop: every `renew_seconds` all Leases are renewed, at most
  `concurrency` at once; an Agent just added gets its first renewal at once;
- one work loop: a runtime whose tasks changed (or whose slot freed) gets a
  `round()`, at most `concurrency` at once, and all of them every
  `poll_seconds` as a safety net under the watch.

Leases are longer than the runtime's (30 s, renewed every 10 s): a thousand
agents cost about 100 small writes a second, not 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qorch.agent.attempts import TASKS
from qorch.agent.runtime import AgentRuntime, Handlers, RuntimeSettings
from qorch.controller.informer import Informer
from qorch.controller.kube import KubeError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping

    from qorch.controller.kube import KubeApi
    from qorch.controller.store import Sink

__all__ = ["AgentFleet", "FleetSettings"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FleetSettings:
    """How the fleet behaves; the Lease timings hold for every agent it serves."""

    namespace: str
    lease_seconds: int = 30
    renew_seconds: float = 10.0
    grace_seconds: float = 10.0
    poll_seconds: float = 5.0
    concurrency: int = 16


class AgentFleet:
    """Serves the Agents added to it until `stop()`. Also an informer sink for the namespace's Tasks."""

    def __init__(self, api: KubeApi, settings: FleetSettings) -> None:
        """Nothing talks to the apiserver until `start()`."""
        self.api = api
        self.settings = settings
        self.runtimes: dict[str, AgentRuntime] = {}
        self.wake = asyncio.Event()
        self._where: dict[str, str] = {}  # task name -> the served agent it is assigned to
        self._fresh_renewal = asyncio.Event()
        self._unrenewed: set[str] = set()  # agents whose Lease was never renewed by this process
        self._settled = asyncio.Event()
        self._settled.set()
        self._gate = asyncio.Semaphore(settings.concurrency)
        self._stop = asyncio.Event()
        self._renewing = asyncio.Event()  # set after the drain: renewals go on while work is handed back
        self._jobs: list[asyncio.Task[None]] = []
        self._synced = asyncio.Event()
        self._recovering: set[asyncio.Task[None]] = set()
        self.informer: Informer | None = None

    # ------------------------------------------------------------------ the Task sink
    def upsert(self, body: Mapping[str, Any], *, listed: bool = False) -> None:
        """A Task as the watch sees it: hand it to the runtime of the agent it is assigned to."""
        name = str(body["metadata"]["name"])
        agent = str(((body.get("status") or {}).get("assignment") or {}).get("agent") or "")
        before = self._where.get(name)
        if before is not None and before != agent and before in self.runtimes:
            self.runtimes[before].mine.delete(body)  # what its field-selected watch would say
        runtime = self.runtimes.get(agent)
        if runtime is None:
            self._where.pop(name, None)
            return
        runtime.mine.upsert(body, listed=listed)
        if name in runtime.mine.tasks:
            self._where[name] = agent
        else:  # the runtime keeps no task that ended
            self._where.pop(name, None)

    def delete(self, body: Mapping[str, Any]) -> None:
        """A Task is gone."""
        agent = self._where.pop(str(body["metadata"]["name"]), None)
        if agent is not None and agent in self.runtimes:
            self.runtimes[agent].mine.delete(body)

    def begin_list(self, namespace: str | None) -> None:
        """A full list starts: each runtime drops, at its end, what the list did not show."""
        for runtime in self.runtimes.values():
            runtime.mine.begin_list(namespace)

    def end_list(self, namespace: str | None) -> None:
        """The list is complete."""
        for runtime in self.runtimes.values():
            runtime.mine.end_list(namespace)
        self._where = {task: agent for task, agent in self._where.items() if task in self._mine_of(agent)}

    def _mine_of(self, agent: str) -> Mapping[str, Any]:
        runtime = self.runtimes.get(agent)
        return runtime.mine.tasks if runtime is not None else {}

    # ------------------------------------------------------------------ agents
    def add(
        self, name: str, handlers: Handlers, *, capacity: int, capabilities: Iterable[str] = (), fresh: bool
    ) -> None:
        """Serve Agent `name` (which exists). `fresh`: this process just created it, so no work can be waiting."""
        if self._stop.is_set():
            raise RuntimeError("the agent fleet is stopping")
        if name in self.runtimes:
            return
        settings = RuntimeSettings(
            name=name,
            namespace=self.settings.namespace,
            capabilities=tuple(capabilities),
            capacity=capacity,
            lease_seconds=self.settings.lease_seconds,
            renew_seconds=self.settings.renew_seconds,
            grace_seconds=self.settings.grace_seconds,
            poll_seconds=self.settings.poll_seconds,
        )
        runtime = AgentRuntime(self.api, settings, handlers, wake=self.wake)
        self.runtimes[name] = runtime
        self._unrenewed.add(name)
        self._settled.clear()
        self._fresh_renewal.set()
        if not fresh:  # attached to an Agent that existed: its tasks and its orphaned claims
            job = asyncio.create_task(self._adopt(runtime))
            self._recovering.add(job)
            job.add_done_callback(self._recovering.discard)

    async def _adopt(self, runtime: AgentRuntime) -> None:
        """An existing Agent: wait while another live process holds its Lease, load its tasks, recover claims."""
        name = runtime.settings.name
        try:
            await runtime.wait_for_lease(self._stop)
            await self._synced.wait()
            page = await self.api.call(
                "GET",
                TASKS.path(self.settings.namespace),
                query={"fieldSelector": f"status.assignment.agent={name}"},
            )
            for item in page.get("items") or ():
                self.upsert(item)
            await runtime.recover()
            runtime.mine.touch()
        except KubeError as exc:
            log.warning("agent %s: could not look for its earlier work: %s", name, exc)

    async def settled(self, timeout: float) -> bool:  # noqa: ASYNC109 - a bounded wait, reported to the caller
        """Wait until every agent added so far has had its first Lease renewal; False on timeout."""
        try:
            await asyncio.wait_for(self._settled.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # ------------------------------------------------------------------ running
    async def start(self, sink: Sink | None = None) -> None:
        """Start the watch, the renewals and the work loop; returns once the watch has listed.

        `sink`: what the Task watch feeds, if not the fleet alone (one that also feeds the fleet
        shares the watch with someone else).
        """
        self.informer = Informer(self.api, TASKS, sink or self, namespace=self.settings.namespace)
        self._jobs = [
            asyncio.create_task(self.informer.run(), name="fleet informer"),
            asyncio.create_task(self._renewals(), name="fleet renewals"),
            asyncio.create_task(self._work(), name="fleet work"),
        ]
        await self.informer.synced.wait()
        self._synced.set()

    async def _limited(self, step: Callable[[], Awaitable[None]], what: str) -> bool:
        async with self._gate:
            try:
                await step()
            except KubeError as exc:
                log.warning("%s: %s", what, exc)
                return False
            except Exception:
                log.exception("%s failed", what)
                return False
        return True

    async def _renew(self, names: Iterable[str]) -> None:
        chosen = [n for n in names if n in self.runtimes]
        done = await asyncio.gather(
            *(self._limited(self.runtimes[n].renew, f"lease renewal of {n}") for n in chosen),
        )
        for name, ok in zip(chosen, done, strict=True):
            if ok:
                self._unrenewed.discard(name)
        if not self._unrenewed:
            self._settled.set()

    async def _renewals(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while not self._renewing.is_set():
            self._fresh_renewal.clear()
            if loop.time() >= due:
                due = loop.time() + self.settings.renew_seconds
                await self._renew(list(self.runtimes))
            elif self._unrenewed:
                await self._renew(list(self._unrenewed))
            wait = max(0.0, due - loop.time())
            if self._unrenewed:
                wait = min(wait, 0.5)  # a failed first renewal is tried again soon
            stopped = asyncio.ensure_future(self._renewing.wait())
            fresh = asyncio.ensure_future(self._fresh_renewal.wait())
            await asyncio.wait([stopped, fresh], timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            fresh.cancel()

    async def _work(self) -> None:
        await self._synced.wait()
        for runtime in list(self.runtimes.values()):
            await runtime.recover()  # agents added before the first list: their orphaned claims
        loop = asyncio.get_running_loop()
        swept = float("-inf")
        while not self._stop.is_set():
            self.wake.clear()
            runtimes = list(self.runtimes.values())
            # Every agent once per poll period, however busy the others keep the loop: a quiet agent's
            # owed reports, doubtful claims and retries must not wait for news of its own.
            sweep = loop.time() - swept >= self.settings.poll_seconds
            if sweep:
                swept = loop.time()
            due = runtimes if sweep else [r for r in runtimes if r.mine.changed.is_set()]
            for runtime in due:
                runtime.mine.changed.clear()
            await asyncio.gather(*(self._limited(r.round, f"round of {r.settings.name}") for r in due))
            stopped = asyncio.ensure_future(self._stop.wait())
            woken = asyncio.ensure_future(self.wake.wait())
            await asyncio.wait(
                [stopped, woken], timeout=self.settings.poll_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            stopped.cancel()
            woken.cancel()

    async def stop(self) -> None:
        """Stop taking work, drain every agent within the grace, stop renewing, release every Lease. Idempotent."""
        if self._stop.is_set() and not self._jobs:
            return
        self._stop.set()
        for job in list(self._recovering):
            job.cancel()
        runtimes = list(self.runtimes.values())
        if self._jobs:
            work = self._jobs[-1]  # the work loop ends after its current round: drains never race it
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(work), 30)
            await asyncio.gather(*(r.drain() for r in runtimes), return_exceptions=True)
        self._renewing.set()
        for job in self._jobs:
            job.cancel()
        await asyncio.gather(*self._jobs, *self._recovering, return_exceptions=True)
        self._jobs = []
        released = await asyncio.gather(
            *(self._limited(r.release, f"release of the Lease of {r.settings.name}") for r in runtimes)
        )
        if not all(released):
            log.warning("%d Lease(s) were not released; they lapse on their own", released.count(False))
