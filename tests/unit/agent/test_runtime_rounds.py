"""One agent runtime's rounds against an in-memory apiserver: concurrency, memory and writes per attempt.

Each test failed before its fix: claims went out one round trip at a time, ended
tasks stayed in memory and in every round's scan, a refusal was written again on
every round, and every finish read the task before writing it (or, on the watch's
stale body, was refused and read it then).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from qorch.agent import runtime as runtime_module
from qorch.agent.runtime import AgentRuntime, Handlers, RuntimeSettings
from qorch.controller.kube import ApiError
from support.fakeapi import FakeApi, once

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


# ---------------------------------------------------------------------------------------------- review findings
def test_an_answer_about_a_deleted_task_never_overwrites_its_recreated_namesake() -> None:
    """Finding 1: a late answer for uid-1 must not replace the held uid-2 body (which would never be claimed)."""

    async def scenario() -> str:
        api = FakeApi()
        agent = runtime(api, capacity=1)
        old = assigned(api, "t1")
        recreated = api.put("tasks", {**old, "metadata": {**old["metadata"], "uid": "uid-new"}})
        agent.mine.upsert(recreated)
        late = {**old, "metadata": {**old["metadata"], "resourceVersion": "99999999"}}
        agent.mine.own(late)
        return str(agent.mine.tasks["t1"]["metadata"]["uid"])

    assert asyncio.run(scenario()) == "uid-new"


def test_a_claim_the_apiserver_refused_is_offered_again_by_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 2: after a failed claim a round is asked for (in a fleet nothing else would ask)."""
    monkeypatch.setattr(runtime_module, "_RETRY_SECONDS", 0.01)

    async def scenario() -> tuple[bool, int]:
        api = FakeApi()
        api.before.append(once("PATCH", "tasks", ApiError(401, "Unauthorized", "token expired")))
        agent = runtime(api, capacity=1)
        agent.mine.upsert(assigned(api, "t1"))
        await agent.round()
        await asyncio.gather(*agent.offers.values())
        agent.mine.changed.clear()
        await asyncio.sleep(0.05)
        asked = agent.mine.changed.is_set()
        await agent.round()  # the retry claims it
        await asyncio.gather(*agent.offers.values())
        return asked, sum(1 for method, _ in api.calls if method == "PATCH")

    assert asyncio.run(scenario()) == (True, 2)


def test_a_cancelled_sync_handler_keeps_its_slot_until_its_thread_returns() -> None:
    """Finding 3: the thread cannot be stopped, so capacity counts it until it returns; `stop` tells it."""
    release = threading.Event()
    seen_stop: list[bool] = []

    def blocking(task: Any) -> str:
        release.wait(5)
        seen_stop.append(task.stop.is_set())
        return "late"

    async def scenario() -> tuple[int, int]:
        api = FakeApi()
        handlers = Handlers()
        handlers.on("code")(blocking)
        agent = AgentRuntime(api, RuntimeSettings(name="a", namespace=NS, capacity=1), handlers)  # type: ignore[arg-type]
        agent.mine.upsert(assigned(api, "t1"))
        await agent.round()
        await asyncio.gather(*agent.offers.values())
        (running,) = agent.running.values()
        running.job.cancel("withdrawn")
        for _ in range(100):
            if not agent.running and not agent.reports:
                break
            await asyncio.sleep(0.01)
        during = agent.load
        release.set()
        for _ in range(100):
            if not agent.lingering:
                break
            await asyncio.sleep(0.01)
        return during, agent.load

    assert asyncio.run(scenario()) == (1, 0)
    assert seen_stop == [True]


def test_a_claim_that_lands_after_the_drain_is_reported_failed_not_started() -> None:
    """Finding 4: once drained, a late claim goes straight to the owed reports."""

    async def scenario() -> tuple[int, list[str]]:
        api = FakeApi()
        agent = runtime(api, capacity=1)
        body = assigned(api, "t1")
        agent.mine.upsert(body)
        await agent.drain()
        claim = await agent.attempts.claim(body, "a")
        assert claim is not None
        agent._start(claim, body)
        return len(agent.running), [error for _, _, error in agent.owed.values()]

    assert asyncio.run(scenario()) == (0, ["the agent shut down before the attempt finished"])


def test_recover_leaves_a_claim_on_its_way_alone() -> None:
    """Finding 5: an attempt whose claim answer is still coming is ours and alive, not an orphan."""

    async def scenario() -> int:
        api = FakeApi()
        agent = runtime(api, capacity=1)
        body = assigned(api, "t1")
        claimed = await agent.attempts.claim(body, "a")
        assert claimed is not None
        agent.mine.upsert(api.get("tasks", NS, "t1"))
        agent.offers[claimed.attempt] = asyncio.get_running_loop().create_future()  # type: ignore[assignment]
        await agent.recover()
        return len(agent.owed)

    assert asyncio.run(scenario()) == 0
