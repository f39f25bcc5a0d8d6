"""Kubernetes Events about Tasks and Agents, posted in the background, best effort.

The loop hands an Event over and moves on: it never waits for one. Events
go through a bounded queue and a few workers; when the queue is full the
newest are dropped and counted (`qorch_events_dropped_total`), so a slow
apiserver can cost Events but never scheduling. An Event that fails is not
retried.

Events spend the apiserver's time that assignments need, so they have a
budget, as every Kubernetes component's do: a token bucket of `per_second`
(burst 3x). A quarter of the bucket is kept for Warnings, so under load the
routine Normal Events ("Scheduled", "Started") go first; the Task's status and
history say the same thing, for every task. Essential Events (an agent's or a
provider's breaker changing state: rare, bounded by the fleet and the cool-downs,
and said nowhere else as a moment) skip the budget, so a storm of per-task
Warnings cannot drown them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qorch.api import constants
from qorch.controller import metrics, workers
from qorch.controller.kube import KubeError, Resource

if TYPE_CHECKING:
    from collections.abc import Callable

    from qorch.controller.kube import KubeApi

__all__ = ["EventRecorder"]

log = logging.getLogger(__name__)
_EVENTS = Resource("", "v1", "events")


@dataclass(slots=True)
class EventRecorder:
    """Posts core/v1 Events from a bounded queue."""

    api: KubeApi
    identity: str
    per_second: float = 50.0
    workers: int = 4
    clock: Callable[[], float] = time.monotonic
    _queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(10_000))
    _tokens: float = -1.0
    _refilled: float = 0.0

    def _take(self, *, warning: bool) -> bool:
        """Spend a token; Normal Events leave a quarter of the bucket to Warnings."""
        burst = 3.0 * self.per_second
        now = self.clock()
        if self._tokens < 0:
            self._tokens, self._refilled = burst, now
        self._tokens = min(burst, self._tokens + (now - self._refilled) * self.per_second)
        self._refilled = now
        if self._tokens < (1.0 if warning else 1.0 + burst / 4):
            return False
        self._tokens -= 1.0
        return True

    def post(
        self,
        *,
        kind: str,
        namespace: str,
        name: str,
        uid: str,
        warning: bool,
        reason: str,
        message: str,
        essential: bool = False,
    ) -> None:
        """Queue one Event about an object; never blocks, never raises (over budget: dropped, counted).

        A cluster-scoped object (`namespace` ""), like the SchedulingPolicy, has its Events in
        namespace `default`, as kubectl looks for them.
        """
        if not essential and not self._take(warning=warning):
            metrics.EVENTS_DROPPED.inc()
            return
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name[:200]}.{uuid.uuid4().hex[:12]}", "namespace": namespace or "default"},
            "involvedObject": {
                "apiVersion": constants.API_VERSION,
                "kind": kind,
                "name": name,
                "namespace": namespace,
                "uid": uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": constants.OPERATOR_FIELD_MANAGER},
            "reportingComponent": f"qorch.io/{constants.OPERATOR_FIELD_MANAGER}",
            "reportingInstance": self.identity[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self._queue.put_nowait(body)
        except asyncio.QueueFull:
            metrics.EVENTS_DROPPED.inc()

    async def run(self) -> None:
        """Post queued Events until cancelled."""
        await workers.together(self._worker() for _ in range(self.workers))

    async def _worker(self) -> None:
        while True:
            body = await self._queue.get()
            try:
                await self.api.call("POST", _EVENTS.path(body["metadata"]["namespace"]), body=body, timeout=5.0)
            except KubeError as exc:
                metrics.EVENTS_DROPPED.inc()
                log.debug("event not posted: %s", exc)
