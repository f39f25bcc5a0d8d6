"""The elector's term is counted from when a renewal was sent, not from when its answer came (finding 4)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from qorch.controller.kube import KubeError
from qorch.controller.leader import LeaderElector, LeaseTimings
from support.fakeapi import FakeApi


class SlowAnswers(FakeApi):
    """A fake apiserver whose answer to the first write takes `delay` seconds of the elector's clock."""

    def __init__(self, clock: list[float], delay: float) -> None:
        """Share the test's clock."""
        super().__init__()
        self.clock = clock
        self.delay = delay

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Apply at once; the answer arrives `delay` later."""
        answer = await super().call(method, path, **kwargs)
        if method in ("PUT", "POST"):
            self.clock[0] += self.delay
            self.delay = 0.0
        return answer


def test_a_slow_answer_does_not_stretch_the_term() -> None:
    """The write landed at t=0 (followers' lease age starts there); its answer came 6 s later."""
    clock = [0.0]
    api = SlowAnswers(clock, delay=6.0)
    timings = LeaseTimings(lease_duration=15.0, renew_deadline=10.0, retry_period=2.0)
    elector = LeaderElector(api, namespace="ns", name="op", identity="me", timings=timings, clock=lambda: clock[0])

    async def scenario() -> None:
        runner = asyncio.create_task(elector.run())
        await asyncio.wait_for(elector.leading.wait(), 5)
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, KubeError):
            await runner

    asyncio.run(scenario())
    assert clock[0] == 6.0
    clock[0] = 10.5  # 10.5 s after the write landed: past the renew deadline as followers count it
    assert not elector.may_write()
