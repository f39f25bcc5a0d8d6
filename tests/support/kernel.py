"""A kernel wired to an in-memory apiserver: the real store, ledger, writer and loop, with a hand-driven clock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from qorch.controller import writer as writer_module
from qorch.controller.loop import AGENT_RESOURCE, APPROVAL_RESOURCE, TASK_RESOURCE, Kernel
from qorch.controller.store import AGENTS, APPROVALS, LEASES, POLICIES, TASKS, ClusterState
from qorch.controller.writer import StatusWriter
from support.fakeapi import FakeApi

WALL0 = 1_800_000_000.0


@dataclass
class Posted:
    """Events the kernel posted."""

    events: list[dict[str, Any]] = field(default_factory=list)

    def post(self, **event: Any) -> None:
        """Record an Event instead of posting it."""
        self.events.append(event)

    def reasons(self) -> list[str]:
        """The reasons of the Events posted, in order."""
        return [e["reason"] for e in self.events]


@dataclass
class Harness:
    """Drive the kernel cycle by cycle."""

    api: FakeApi
    store: ClusterState
    writer: StatusWriter
    kernel: Kernel
    events: Posted
    now: list[float]  # [monotonic seconds]
    wall: list[float]  # [wall-clock offset, seconds]: steps of the machine's clock

    def step_wall_clock(self, seconds: float) -> None:
        """The wall clock jumps (NTP, a VM restore); the monotonic clock does not."""
        self.wall[0] += seconds

    def advance(self, seconds: float) -> None:
        """Move the monotonic (and wall) clock on."""
        self.now[0] += seconds

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        """A client creates an object and the watch delivers it."""
        stored = self.api.put(plural, body)
        self.store.sink(plural).upsert(stored)
        return stored

    def sync(self) -> None:
        """The watch catches up with everything in the apiserver."""
        for (plural, _, _), body in list(self.api.objects.items()):
            if plural in (TASKS, AGENTS, LEASES, APPROVALS, POLICIES):
                self.store.sink(plural).upsert(body)

    def task(self, name: str, namespace: str = "ns") -> dict[str, Any]:
        """A Task as the apiserver holds it."""
        return self.api.get(TASKS, namespace, name)

    def status(self, name: str, namespace: str = "ns") -> dict[str, Any]:
        """A Task's status as the apiserver holds it."""
        return self.task(name, namespace).get("status") or {}

    def renew(self, agent: str, namespace: str = "ns", duration: int = 10) -> None:
        """The agent renews its Lease."""
        from support import bodies  # noqa: PLC0415

        self.create(LEASES, bodies.lease(agent, namespace=namespace, duration=duration))

    async def cycle(self, *, echo: bool = True) -> None:
        """One cycle, then every write it decided is sent (and, with `echo`, the watch brings them back)."""
        await self.kernel.cycle()
        await self.writer.drained()
        if echo:
            self.sync()

    async def read_backs(self) -> None:
        """Let the Lease read-backs the last cycle started finish."""
        while self.kernel._confirming:
            await asyncio.gather(*self.kernel._confirming, return_exceptions=True)

    async def settle(self) -> None:
        """Let due ledger entries be checked with a GET."""
        await self.writer.settle_due()


@contextlib.asynccontextmanager
async def harness(api: FakeApi | None = None) -> AsyncIterator[Harness]:
    """A kernel on `api`, with the writer's workers running, at monotonic time 100."""
    api = api or FakeApi()
    now = [100.0]
    wall = [0.0]
    store = ClusterState(clock=lambda: now[0])
    writer = StatusWriter(api, store, may_write=lambda: True, concurrency=4, clock=lambda: now[0])  # type: ignore[arg-type]
    for resource in (TASK_RESOURCE, AGENT_RESOURCE, APPROVAL_RESOURCE):
        writer_module.register(resource)
    events = Posted()
    kernel = Kernel(
        store,
        writer,
        leading=lambda: True,
        epoch=lambda: 1,
        events=events,  # type: ignore[arg-type]
        wall=lambda: WALL0 + wall[0] + (now[0] - 100.0),
        mono=lambda: now[0],
    )
    kernel.watching_since = now[0]
    runner = asyncio.create_task(writer.run())
    try:
        yield Harness(api, store, writer, kernel, events, now, wall)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
