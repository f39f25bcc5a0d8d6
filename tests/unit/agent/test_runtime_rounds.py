"""One agent runtime's rounds against an in-memory apiserver: concurrency, memory and writes per attempt.

Each test failed before its fix: claims went out one round trip at a time, ended
tasks stayed in memory and in every round's scan, a refusal was written again on
every round, and every finish read the task before writing it (or, on the watch's
stale body, was refused and read it then).
"""

from __future__ import annotations

import asyncio
from typing import Any

from qorch.agent.runtime import AgentRuntime, Handlers, RuntimeSettings
from support.fakeapi import FakeApi

NS = "ns"


class SlowApi(FakeApi):
    """PATCHes wait for `gate`; `peak` is the most ever in flight at once."""

    def __init__(self) -> None:
        """Closed gate, nothing in flight."""
        super().__init__()
        self.gate = asyncio.Event()
        self.flying = 0
        self.peak = 0

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Hold PATCHes at the gate, counting them."""
        if method == "PATCH":
            self.flying += 1
            self.peak = max(self.peak, self.flying)
            await self.gate.wait()
            self.flying -= 1
        return await super().call(method, path, **kwargs)


def assigned(api: FakeApi, name: str, *, agent: str = "a", phase: str = "Assigned") -> dict[str, Any]:
    """A task assigned to `agent` as attempt 1, stored and returned."""
    return api.put(
        "tasks",
        {
            "apiVersion": "qorch.io/v1alpha1",
            "kind": "Task",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
            "spec": {"goal": name, "requires": ["code"]},
            "status": {"phase": phase, "assignment": {"agent": agent, "attempt": 1}},
        },
    )


def runtime(api: FakeApi, capacity: int) -> AgentRuntime:
    """A runtime with a no-op `code` handler."""
    handlers = Handlers()

    @handlers.on("code")
    async def noop(task: Any) -> str:
        del task
        return "ok"

    return AgentRuntime(api, RuntimeSettings(name="a", namespace=NS, capacity=capacity), handlers)  # type: ignore[arg-type]


def test_claims_go_out_together_not_one_round_trip_at_a_time() -> None:
    """Three tasks offered in one round: three claims in flight at once, within capacity."""

    async def scenario() -> int:
        api = SlowApi()
        agent = runtime(api, capacity=3)
        for name in ("t1", "t2", "t3"):
            agent.mine.upsert(assigned(api, name))
        round_done = asyncio.create_task(agent.round())
        await asyncio.sleep(0.05)
        peak = api.peak
        api.gate.set()
        await round_done
        await asyncio.gather(*agent.offers.values())
        return peak

    assert asyncio.run(scenario()) == 3


def test_ended_tasks_are_not_kept() -> None:
    """A task that reached a final phase leaves the runtime's memory (and every later round's scan)."""

    async def scenario() -> dict[str, Any]:
        agent = runtime(FakeApi(), capacity=1)
        agent.mine.upsert(assigned(FakeApi(), "done", phase="Succeeded"))
        agent.mine.upsert(assigned(FakeApi(), "live"))
        return agent.mine.tasks

    assert set(asyncio.run(scenario())) == {"live"}


def test_a_refusal_for_want_of_a_slot_is_written_once() -> None:
    """Over capacity: one refusal write, not one per round, until a slot frees."""

    async def scenario() -> int:
        api = SlowApi()
        api.gate.set()
        agent = runtime(api, capacity=1)
        agent.claiming = 1  # the one slot is taken
        agent.mine.upsert(assigned(api, "t1"))
        for _ in range(3):
            await agent.round()
            await asyncio.gather(*agent.offers.values())
            agent.mine.upsert(api.get("tasks", NS, "t1"))  # the watch brings our own refusal back
        return sum(1 for method, _ in api.calls if method == "PATCH")

    assert asyncio.run(scenario()) == 1


def test_a_finish_needs_no_read_when_the_claims_answer_is_fresh() -> None:
    """Claim, run, finish: two PATCHes and no GET, even before the watch brings the claim back."""

    async def scenario() -> tuple[list[str], dict[str, Any]]:
        api = FakeApi()
        agent = runtime(api, capacity=1)
        agent.mine.upsert(assigned(api, "t1"))
        await agent.round()
        await asyncio.gather(*agent.offers.values())
        # No watch event here: the claim's own answer is what the finish is written on.
        for _ in range(100):  # the handler runs and its report is sent on tasks of their own
            if not (agent.running or agent.reports):
                break
            await asyncio.sleep(0.01)
        return [method for method, _ in api.calls], api.get("tasks", NS, "t1")["status"]["execution"]

    methods, execution = asyncio.run(scenario())
    assert methods == ["PATCH", "PATCH"]
    assert execution["result"] == "ok"
    assert execution["finishedAt"]
