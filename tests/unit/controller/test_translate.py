"""The fleet snapshot kept across passes equals one built from scratch, after any sequence of events."""

from __future__ import annotations

import random

import numpy as np

from qorch.controller import translate
from qorch.controller.store import AGENTS, ClusterState
from support import bodies

COLUMNS = ("capacity", "active", "clearance", "ready", "success_rate", "cost", "latency_ms", "group")


def test_the_cached_fleet_equals_a_fresh_one_after_any_events() -> None:
    """Random adds, deletes, spec and status changes: every pass's cached snapshot matches a rebuild."""
    rnd = random.Random(11)
    state = ClusterState()
    sink = state.sink(AGENTS)
    cache = translate.FleetCache()
    skills = ["code", "review", "write", "data"]
    for step in range(400):
        name = f"a{rnd.randrange(40)}"
        roll = rnd.random()
        if roll < 0.1:
            sink.delete(bodies.agent(name))
        else:
            body = bodies.agent(
                name,
                capabilities=rnd.sample(skills, 2),
                capacity=rnd.choice([1, 2, 4]) if roll < 0.4 else 2,  # a spec change now and then
                labels={"zone": "eu"},
            )
            body["status"] = {"stats": {"successRate": round(rnd.random(), 2)}}
            sink.upsert(body)
        load = {key: rnd.randrange(3) for key in state.agents}
        alive = {key: rnd.random() < 0.8 for key in state.agents}
        schedulable, busy = (lambda a, alive=alive: alive[a.key]), (lambda k, load=load: load[k])
        cached = cache.fleet(state.agents, state.fleet_version, schedulable=schedulable, load=busy)
        fresh = translate.fleet(list(state.agents.values()), schedulable=schedulable, load=busy)
        assert cached.snapshot.names == fresh.snapshot.names, step
        for column in COLUMNS:
            assert np.array_equal(getattr(cached.snapshot, column), getattr(fresh.snapshot, column)), (step, column)
        assert np.array_equal(cached.snapshot.capabilities, fresh.snapshot.capabilities), step
        assert cached.load == fresh.load, step
    assert state.fleet_version > 20  # the sequence did change the fleet, many times
