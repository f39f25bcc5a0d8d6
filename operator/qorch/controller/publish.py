"""The leader publishes the scheduler's observables into SchedulingPolicy `default`'s status.

Until now they were only Prometheus gauges (`qorch_observable`), which a client
of the cluster cannot read. The scheduling loop hands each pass's observables to
`observe()` (no I/O: it keeps the latest and wakes the publisher); `run()`
writes them, with the pass's batch size, its time and the leader's identity,
through the `status` subresource:

- only while this replica may write as the leader;
- only when the observables (rounded to 6 places), the batch size or the
  leader changed, and at most once every `interval` seconds: a busy cluster
  costs one small write per interval, an idle one none;
- compare-and-set on the policy's resourceVersion as the store last saw it
  (a 409 waits for the next round, with the fresh version);
- never on the hot path of a cycle: a slow or failing apiserver delays the
  status, never a decision.

With no policy object there is nothing to write into (the operator never
creates user objects): it says so once in its log and keeps the latest for
when one appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qorch.api import constants, protocol
from qorch.controller.kube import MERGE_PATCH, ApiError, KubeError, Resource

if TYPE_CHECKING:
    from collections.abc import Callable

    from qorch.controller.kube import KubeApi
    from qorch.scheduler.observables import Observables

__all__ = ["POLICIES", "ObservablesPublisher"]

log = logging.getLogger(__name__)
POLICIES = Resource(constants.GROUP, constants.VERSION, "schedulingpolicies", namespaced=False)
_PLACES = 6
_NOT_FOUND, _CONFLICT = 404, 409


@dataclass(frozen=True, slots=True)
class _Measurement:
    entropy: float
    coherence: float
    fidelity: float
    batch: int
    at: float  # wall-clock seconds of the pass


def _unit(value: float) -> float:
    """Round, and keep a probability-like quantity inside [0, 1] despite float noise."""
    return round(min(1.0, max(0.0, value)), _PLACES)


class ObservablesPublisher:
    """Keeps the latest pass's observables and writes them into the policy's status, rate-limited."""

    def __init__(
        self,
        api: KubeApi,
        *,
        identity: str,
        may_write: Callable[[], bool],
        version: Callable[[], str],
        interval: float = 3.0,
        providers: Callable[[], list[dict[str, Any]]] = list,
    ) -> None:
        """`may_write`: whether this replica leads now; `version`: the policy's resourceVersion in the store.

        `providers`: the LLM providers' breakers to publish (a new leader continues from them).
        """
        self._providers = providers
        self._api = api
        self._identity = identity
        self._may_write = may_write
        self._version = version
        self.interval = interval
        self._latest: _Measurement | None = None
        self._written: dict[str, Any] | None = None  # the last status written, without its timestamps
        self._wake = asyncio.Event()
        self._said_missing = False
        self.writes = 0

    def observe(self, observables: Observables, batch: int, now: float) -> None:
        """A scheduling pass measured these (called by the loop: no I/O, O(1))."""
        self._latest = _Measurement(
            entropy=round(max(0.0, observables.entropy), _PLACES),
            coherence=_unit(observables.coherence),
            fidelity=_unit(observables.fidelity),
            batch=batch,
            at=now,
        )
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """What would be written now, without its timestamps (which alone never cause a write)."""
        body: dict[str, Any] = {"leader": self._identity}
        latest = self._latest
        if latest is not None:
            body["observables"] = {
                "entropy": latest.entropy,
                "coherence": latest.coherence,
                "fidelity": latest.fidelity,
            }
            body["batch"] = latest.batch
        providers = self._providers()
        if providers or (self._written or {}).get("providers"):
            body["providers"] = providers  # an empty list clears what an earlier write said
        return body

    async def publish(self) -> bool:
        """Write the status if it changed and this replica leads; True when a write landed."""
        if not self._may_write():
            self._written = None  # a later term announces itself again
            return False
        body = self.status()
        if body == self._written:
            return False
        version = self._version()
        if not version:
            self._missing()
            return False
        stamped = dict(body, publishedAt=protocol.timestamp())
        if self._latest is not None:
            stamped["lastCycleAt"] = protocol.timestamp(dt.datetime.fromtimestamp(self._latest.at, dt.UTC))
        patch = {"metadata": {"resourceVersion": version}, "status": stamped}
        try:
            await self._api.call(
                "PATCH",
                POLICIES.path(None, constants.DEFAULT_POLICY_NAME, "status"),
                query={"fieldManager": constants.OPERATOR_FIELD_MANAGER},
                body=patch,
                content_type=MERGE_PATCH,
            )
        except ApiError as exc:
            if exc.status == _NOT_FOUND:
                self._missing()
                return False
            if exc.status != _CONFLICT:
                raise
            return False  # the policy changed since the store saw it: the next round has the new version
        self._written = body
        self._said_missing = False
        self.writes += 1
        return True

    def _missing(self) -> None:
        if not self._said_missing:
            self._said_missing = True
            log.info(
                "no SchedulingPolicy %r: the observables are not published (apply manifests/scheduling-policy)",
                constants.DEFAULT_POLICY_NAME,
            )

    async def run(self) -> None:
        """Publish when woken by a pass (or every interval, for a change of leader); never raises."""
        failures = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                wrote = await self.publish()
            except KubeError as exc:
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("publishing the observables failed (%d in a row): %s", failures, exc)
                wrote = True  # wait a full interval before the next try
            except Exception:  # a bug here must not end the operator's other work
                log.exception("publishing the observables failed")
                wrote = True
            else:
                failures = 0
            if wrote:
                await asyncio.sleep(self.interval)
