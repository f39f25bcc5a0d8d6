"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does it.

A follower judges the lease expired only when the lease *record* (its
resourceVersion) has not changed for leaseDuration on the follower's own
monotonic clock, never by comparing renewTime with its own wall clock. Every
acquire and renew is a compare-and-set (an update carrying the version read),
so two candidates never both win.

What this must never do: let `leading` outlive the lease. So
- every API call is bounded by what is left of the renew deadline, and any
  failure at all (not only API errors: a reset connection, a bad answer, a
  bug) counts as a failed renewal;
- a leader that fails to renew for renewDeadline, or that reads another
  holder on the lease, steps down at once and sets `lost` (the process then
  exits non-zero and its Deployment restarts it as a follower);
- `run()` never ends while leading without setting `lost`.
Leadership alone does not fence a stale leader's writes; the status writer's
compare-and-set does, and `may_write()` stops writes the moment the local
view of the lease has expired.

Every write of the Lease carries the annotations `annotate()` returns (the
audit log's anchored head) over those the Lease had; `on_acquired` hears the
annotations a new term found, before `leading` is set; `on_lost` hears why a
term ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qorch.api.protocol import timestamp
from qorch.controller.kube import ApiError, KubeError, Resource

if TYPE_CHECKING:
    from collections.abc import Callable

    from qorch.controller.kube import KubeApi

__all__ = ["LEASES", "LeaderElector", "LeaseTimings"]

log = logging.getLogger(__name__)
LEASES = Resource("coordination.k8s.io", "v1", "leases")
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


class LeaderElector:
    """Acquires and renews one Lease; `leading` says whether this process may act."""

    def __init__(
        self,
        api: KubeApi,
        *,
        namespace: str,
        name: str,
        identity: str,
        timings: LeaseTimings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Configure; nothing happens until `run()`."""
        self._api = api
        self._namespace = namespace
        self._name = name
        self.identity = identity
        self._timings = timings
        self._clock = clock
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()
        self.epoch = 0  # leaseTransitions when we acquired
        self._observed_rv: str | None = None
        self._observed_at = 0.0
        self._last_renew = 0.0  # when the latest successful attempt *started* (its write was sent after)
        self._attempt = 0.0  # when the current attempt started
        self._complaint = ""
        self.annotate: Callable[[], dict[str, str]] = dict
        self.on_acquired: Callable[[int, dict[str, str]], None] | None = None
        self.on_lost: Callable[[str], None] | None = None

    @property
    def _path(self) -> str:
        return LEASES.path(self._namespace, self._name)

    def may_write(self) -> bool:
        """Leading, and the last renewal is recent enough that no follower can have taken over."""
        return self.leading.is_set() and self._clock() - self._last_renew < self._timings.renew_deadline

    async def run(self) -> None:
        """Try to acquire, then renew, every retry period, until cancelled or until leadership is lost."""
        while True:
            started = self._attempt = self._clock()
            if self.leading.is_set():
                budget = self._timings.renew_deadline - (started - self._last_renew)
            else:
                budget = self._timings.renew_deadline
            try:
                held = await asyncio.wait_for(self._try_acquire_or_renew(), timeout=max(budget, 0.01))
            except asyncio.CancelledError:
                raise
            except _UsurpedError as exc:
                self._step_down(str(exc))
                return
            except Exception as exc:  # noqa: BLE001 - any failure is a failed renewal, nothing more
                self._complain(exc)
                held = False
            now = self._clock()
            if held:
                # Followers count the lease's age from when they saw our write, which was after we
                # started this attempt; counting ours from the answer would let a slow answer stretch
                # our term past theirs.
                self._last_renew = started
            elif self.leading.is_set() and now - self._last_renew >= self._timings.renew_deadline:
                self._step_down(f"no renewal for {now - self._last_renew:.1f}s")
                return
            await asyncio.sleep(max(0.0, self._timings.retry_period - (self._clock() - started)))

    def _step_down(self, why: str) -> None:
        log.error("lost leadership of %s/%s: %s", self._namespace, self._name, why)
        self.leading.clear()
        self.lost.set()
        if self.on_lost is not None:
            self.on_lost(why)

    def _complain(self, exc: BaseException) -> None:
        text = str(exc) or type(exc).__name__
        if isinstance(exc, ApiError) and exc.status == _NOT_FOUND:
            text = (
                f"namespace {self._namespace} does not exist: create it (kubectl create namespace "
                f"{self._namespace}) or pass --lease-namespace"
            )
        if isinstance(exc, TimeoutError):
            text = "the apiserver did not answer within the renew deadline"
        if text != self._complaint:  # one line per kind of trouble, not one per retry
            log.warning("lease %s/%s: %s", self._namespace, self._name, text)
            self._complaint = text

    async def release(self) -> None:
        """Give the lease up on a clean shutdown so a follower takes over at once."""
        if not self.leading.is_set():
            return
        self.leading.clear()
        with contextlib.suppress(KubeError, KeyError, TypeError):
            lease = await self._api.call("GET", self._path, timeout=2.0)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") == self.identity:
                spec["holderIdentity"] = None
                spec["renewTime"] = None
                metadata = lease.setdefault("metadata", {})
                metadata["annotations"] = {**(metadata.get("annotations") or {}), **self.annotate()}
                await self._api.call("PUT", self._path, body=lease, timeout=2.0)

    async def _try_acquire_or_renew(self) -> bool:
        try:
            lease = await self._api.call("GET", self._path)
        except ApiError as exc:
            if exc.status != _NOT_FOUND:
                raise
            if self.leading.is_set():
                raise _UsurpedError("the lease was deleted") from None
            return await self._create()
        spec = lease.get("spec") or {}
        rv = str(lease["metadata"]["resourceVersion"])
        now = self._clock()
        if rv != self._observed_rv:
            self._observed_rv, self._observed_at = rv, now
        holder = spec.get("holderIdentity") or ""
        if self.leading.is_set() and holder != self.identity:
            raise _UsurpedError(f"{holder or 'nobody'} holds the lease now")
        duration = float(spec.get("leaseDurationSeconds") or self._timings.lease_duration)
        if holder and holder != self.identity and now - self._observed_at <= duration:
            return False
        annotations = dict(lease["metadata"].get("annotations") or {})
        return await self._write(rv, spec, annotations, mine=holder == self.identity)

    async def _write(self, rv: str, spec: dict[str, Any], annotations: dict[str, str], *, mine: bool) -> bool:
        """Take or keep the lease with a compare-and-set update on `rv` (`annotations`: those it has)."""
        body = self._renewal(rv, spec, mine=mine)
        body["metadata"]["annotations"] = {**annotations, **self.annotate()}
        try:
            updated = await self._api.call("PUT", self._path, body=body)
        except ApiError as exc:
            if exc.status != _CONFLICT:
                raise
            if self.leading.is_set():
                raise _UsurpedError("someone else wrote the lease") from None
            return False
        self._observed_rv, self._observed_at = str(updated["metadata"]["resourceVersion"]), self._clock()
        if not self.leading.is_set():
            self.epoch = int((updated.get("spec") or {}).get("leaseTransitions") or 0)
            log.info("became leader of %s/%s (epoch %d) as %s", self._namespace, self._name, self.epoch, self.identity)
            self._last_renew = self._attempt
            self._acquired(annotations)
            self.leading.set()
        return True

    def _acquired(self, annotations: dict[str, str]) -> None:
        """Tell `on_acquired` (a failure there is logged: it must not cost the term just won)."""
        if self.on_acquired is not None:
            try:
                self.on_acquired(self.epoch, annotations)
            except Exception:
                log.exception("on_acquired callback failed")

    def _renewal(self, rv: str, spec: dict[str, Any], *, mine: bool) -> dict[str, Any]:
        """The Lease we write to take or keep it, compare-and-set on `rv`."""
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self._name, "namespace": self._namespace, "resourceVersion": rv},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self._timings.lease_duration),
                "acquireTime": spec.get("acquireTime") if mine and spec.get("acquireTime") else timestamp(),
                "renewTime": timestamp(),
                "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (0 if mine else 1),
            },
        }

    async def _create(self) -> bool:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self._name, "namespace": self._namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self._timings.lease_duration),
                "acquireTime": timestamp(),
                "renewTime": timestamp(),
                "leaseTransitions": 0,
            },
        }
        try:
            created = await self._api.call("POST", LEASES.path(self._namespace), body=body)
        except ApiError as exc:
            if exc.status == _CONFLICT:
                return False
            raise
        self._observed_rv, self._observed_at = str(created["metadata"]["resourceVersion"]), self._clock()
        self.epoch = 0
        log.info("became leader of %s/%s (new lease) as %s", self._namespace, self._name, self.identity)
        self._last_renew = self._attempt
        self._acquired({})
        self.leading.set()
        return True


class _UsurpedError(Exception):
    """Another holder (or nobody) is on the lease we thought we held."""
