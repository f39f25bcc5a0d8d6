"""The leader's observables publisher: what it writes into the policy's status, when, and when not."""

from __future__ import annotations

import asyncio

import pytest

from qorch.controller.kube import ApiError
from qorch.controller.publish import ObservablesPublisher
from qorch.controller.store import ClusterState
from qorch.scheduler.observables import Observables
from support.fakeapi import FakeApi

POLICY = {"apiVersion": "qorch.io/v1alpha1", "kind": "SchedulingPolicy", "metadata": {"name": "default"}, "spec": {}}


def _setup(*, leading: bool = True) -> tuple[FakeApi, ObservablesPublisher, list[bool]]:
    api = FakeApi()
    api.put("schedulingpolicies", POLICY)
    lead = [leading]
    publisher = ObservablesPublisher(
        api,  # type: ignore[arg-type]
        identity="op-1",
        may_write=lambda: lead[0],
        version=lambda: api.get("schedulingpolicies", "", "default")["metadata"]["resourceVersion"],
    )
    return api, publisher, lead


def _status(api: FakeApi) -> dict:
    return api.get("schedulingpolicies", "", "default").get("status") or {}


def test_writes_the_pass_observables_with_the_leader_and_rounds_them() -> None:
    """Observables, batch, leader and the pass's time land in status; float noise above 1 is clamped."""
    api, publisher, _ = _setup()
    publisher.observe(Observables(entropy=1.23456789, coherence=1.0000000002, fidelity=0.5), 7, 1_700_000_000.0)
    assert asyncio.run(publisher.publish()) is True
    status = _status(api)
    assert status["observables"] == {"entropy": 1.234568, "coherence": 1.0, "fidelity": 0.5}
    assert status["batch"] == 7
    assert status["leader"] == "op-1"
    assert status["lastCycleAt"] == "2023-11-14T22:13:20.000000Z"
    assert status["publishedAt"].endswith("Z")


def test_writes_only_when_something_changed() -> None:
    """A later pass with the same values costs no write; a changed value does."""
    api, publisher, _ = _setup()
    publisher.observe(Observables(0.5, 0.9, 0.8), 3, 1.0)
    assert asyncio.run(publisher.publish()) is True
    publisher.observe(Observables(0.5, 0.9, 0.8), 3, 2.0)  # a later pass, same values
    assert asyncio.run(publisher.publish()) is False
    publisher.observe(Observables(0.5, 0.4, 0.8), 3, 3.0)
    assert asyncio.run(publisher.publish()) is True
    assert _status(api)["observables"]["coherence"] == 0.4
    assert publisher.writes == 2


def test_a_follower_writes_nothing_and_a_new_term_announces_itself() -> None:
    """Only the leader writes; a replica that leads again writes again."""
    api, publisher, lead = _setup(leading=False)
    publisher.observe(Observables(0.5, 0.9, 0.8), 3, 1.0)
    assert asyncio.run(publisher.publish()) is False
    assert "status" not in api.get("schedulingpolicies", "", "default")
    lead[0] = True
    assert asyncio.run(publisher.publish()) is True
    lead[0] = False
    assert asyncio.run(publisher.publish()) is False
    lead[0] = True  # leading again: the same values are written again (someone else may have led meanwhile)
    assert asyncio.run(publisher.publish()) is True


def test_a_stale_version_conflicts_and_nothing_is_written() -> None:
    """Compare-and-set on the store's version: a stale one writes nothing."""
    api, publisher, _ = _setup()
    publisher._version = lambda: "1"  # the store is behind
    publisher.observe(Observables(0.5, 0.9, 0.8), 3, 1.0)
    assert asyncio.run(publisher.publish()) is False
    assert "status" not in api.get("schedulingpolicies", "", "default")


def test_no_policy_no_write_and_no_error() -> None:
    """Without a policy object there is nothing to write into, and no request is made."""
    api = FakeApi()
    publisher = ObservablesPublisher(api, identity="op-1", may_write=lambda: True, version=lambda: "")  # type: ignore[arg-type]
    publisher.observe(Observables(0.5, 0.9, 0.8), 3, 1.0)
    assert asyncio.run(publisher.publish()) is False
    assert api.calls == []


def test_a_server_error_is_raised_for_run_to_back_off() -> None:
    """A 5xx reaches run(), which backs off a full interval."""
    api, publisher, _ = _setup()
    api.before.append(lambda method, _: ApiError(500, "InternalError", "etcd") if method == "PATCH" else None)
    publisher.observe(Observables(0.5, 0.9, 0.8), 3, 1.0)
    with pytest.raises(ApiError, match="500"):
        asyncio.run(publisher.publish())


def test_a_status_write_does_not_wake_every_parked_task() -> None:
    """A policy event that changes only the version (a status write) is no policy change for the loop."""
    state = ClusterState()
    state.upsert_policy({"metadata": {"name": "default", "resourceVersion": "10"}, "spec": {"temperature": 0.1}})
    assert state.feed.drain().policy is True
    body = {"metadata": {"name": "default", "resourceVersion": "11"}, "spec": {"temperature": 0.1}, "status": {}}
    state.upsert_policy(body)
    assert state.feed.drain().policy is False
    assert state.policy.resource_version == "11"  # the next write compares against the fresh version
    state.upsert_policy({"metadata": {"name": "default", "resourceVersion": "12"}, "spec": {"temperature": 0.2}})
    assert state.feed.drain().policy is True
