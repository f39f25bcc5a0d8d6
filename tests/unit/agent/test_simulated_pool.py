"""The simulated pool (`qorch dev agents`): its Lease renewals keep up with hundreds of agents."""

from __future__ import annotations

import asyncio
from typing import Any

from qorch.agent.simulated import PoolSettings, SimulatedPool


class SlowApi:
    """An apiserver that answers each Lease PATCH after `delay` seconds, counting how many are in flight."""

    def __init__(self, agents: int, delay: float) -> None:
        """Serve `agents` Agents."""
        self.agents, self.delay = agents, delay
        self.in_flight = self.most = self.renewed = 0

    async def call(self, method: str, _path: str, **_: Any) -> dict[str, Any]:
        """The Agent list for a GET; any other request is a renewal."""
        if method == "GET":
            return {"items": [{"metadata": {"name": f"a-{i}"}, "spec": {"capacity": 1}} for i in range(self.agents)]}
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(self.delay)
        self.in_flight -= 1
        self.renewed += 1
        return {}


def test_a_round_of_renewals_overlaps_and_stays_bounded() -> None:
    """Full-size cold start: 500 Leases renewed one after another at 100 ms each took 50 s, near a 61 s Lease.

    Renewed a few at a time, a round takes a fraction of that, and never floods the apiserver.
    """
    api = SlowApi(agents=80, delay=0.01)
    pool = SimulatedPool(api, PoolSettings(namespace="ns"))  # type: ignore[arg-type]
    asyncio.run(pool.renew())
    assert api.renewed == 80
    assert 1 < api.most <= 8
