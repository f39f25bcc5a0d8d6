"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does it.

Why not trust wall clocks: a follower judges the lease expired only when the
lease *record* (its resourceVersion) has not changed for leaseDuration on the
follower's own monotonic clock. Every acquire and renew is a compare-and-set
(update with resourceVersion), so two candidates never both win. What this
must never do: act as leader after failing to renew for renewDeadline. The
leader then reports loss and the process exits non-zero. Leadership alone does
not fence a stale leader's writes; the status writer's compare-and-set does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kubernetes_asyncio.client.exceptions import ApiException

if TYPE_CHECKING:
    from kubernetes_asyncio.client import CoordinationV1Api

__all__ = ["LeaderElector", "LeaseTimings"]

log = logging.getLogger(__name__)
_CONFLICT, _NOT_FOUND = 409, 404


@dataclass(frozen=True, slots=True)
class LeaseTimings:
    """leaseDuration > renewDeadline > retryPeriod, in seconds (client-go's defaults)."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        """Reject timings that cannot work, in the operator's words."""
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError(
                "lease timings must satisfy lease-duration > renew-deadline > retry-period > 0, got "
                f"{self.lease_duration}/{self.renew_deadline}/{self.retry_period}"
            )


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Acquires and renews one Lease; `leading` says whether this process may act."""

    def __init__(
        self, api: CoordinationV1Api, *, namespace: str, name: str, identity: str, timings: LeaseTimings
    ) -> None:
        """Configure; nothing happens until `run()`."""
        self._api: Any = api  # its stubs want V1Lease models; we send plain dicts
        self._namespace = namespace
        self._name = name
        self.identity = identity
        self._timings = timings
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()
        self.epoch = 0  # leaseTransitions when we acquired
        self._observed_rv: str | None = None
        self._observed_at = 0.0
        self._last_renew = 0.0

    async def run(self) -> None:
        """Try to acquire, then renew, every retry period; set `lost` if a held lease slips away."""
        while True:
            try:
                held = await self._try_acquire_or_renew()
            except (TimeoutError, ApiException, OSError) as exc:
                log.warning("lease %s/%s: %s", self._namespace, self._name, exc)
                held = False
            now = time.monotonic()
            if held:
                self._last_renew = now
            elif self.leading.is_set() and now - self._last_renew > self._timings.renew_deadline:
                log.error(
                    "lost leadership of %s/%s (no renewal for %.1fs)",
                    self._namespace,
                    self._name,
                    now - self._last_renew,
                )
                self.leading.clear()
                self.lost.set()
                return
            await asyncio.sleep(self._timings.retry_period)

    async def release(self) -> None:
        """Give the lease up on a clean shutdown so a follower takes over at once."""
        if not self.leading.is_set():
            return
        with contextlib.suppress(ApiException, OSError, asyncio.TimeoutError):
            lease = await self._api.read_namespaced_lease(self._name, self._namespace)
            if lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                await self._api.replace_namespaced_lease(self._name, self._namespace, lease)
        self.leading.clear()

    async def _try_acquire_or_renew(self) -> bool:
        try:
            lease = await self._api.read_namespaced_lease(self._name, self._namespace)
        except ApiException as exc:
            if exc.status != _NOT_FOUND:
                raise
            return await self._create()
        spec = lease.spec
        rv = lease.metadata.resource_version
        now = time.monotonic()
        if rv != self._observed_rv:
            self._observed_rv, self._observed_at = rv, now
        holder = spec.holder_identity
        expired = now - self._observed_at > float(spec.lease_duration_seconds or self._timings.lease_duration)
        if holder and holder != self.identity and not expired:
            return False
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self._name, "namespace": self._namespace, "resourceVersion": rv},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self._timings.lease_duration),
                "acquireTime": spec.acquire_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                if holder == self.identity and spec.acquire_time
                else _now(),
                "renewTime": _now(),
                "leaseTransitions": int(spec.lease_transitions or 0) + (0 if holder == self.identity else 1),
            },
        }
        try:
            updated = await self._api.replace_namespaced_lease(self._name, self._namespace, body)
        except ApiException as exc:
            if exc.status == _CONFLICT:
                return False  # someone else renewed or won first
            raise
        self._observed_rv, self._observed_at = updated.metadata.resource_version, time.monotonic()
        if not self.leading.is_set():
            self.epoch = int(updated.spec.lease_transitions or 0)
            log.info("became leader of %s/%s (epoch %d) as %s", self._namespace, self._name, self.epoch, self.identity)
            self.leading.set()
        return True

    async def _create(self) -> bool:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self._name, "namespace": self._namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self._timings.lease_duration),
                "acquireTime": _now(),
                "renewTime": _now(),
                "leaseTransitions": 0,
            },
        }
        try:
            created = await self._api.create_namespaced_lease(self._namespace, body)
        except ApiException as exc:
            if exc.status == _CONFLICT:
                return False
            raise
        self._observed_rv, self._observed_at = created.metadata.resource_version, time.monotonic()
        self.epoch = 0
        log.info("became leader of %s/%s (new lease) as %s", self._namespace, self._name, self.identity)
        self.leading.set()
        return True
