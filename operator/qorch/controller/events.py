"""Kubernetes Events about Tasks and Agents, posted in the background, best effort.

The loop hands an Event over and moves on: it never waits for one. Events
go through a bounded queue and a few workers; when the queue is full the
newest are dropped and counted (`qorch_events_dropped_total`), so a slow
apiserver can cost Events but never scheduling. An Event that fails is not
retried.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qorch.api import constants
from qorch.controller import metrics, workers
from qorch.controller.kube import KubeError, Resource

if TYPE_CHECKING:
    from qorch.controller.kube import KubeApi

__all__ = ["EventRecorder"]

log = logging.getLogger(__name__)
_EVENTS = Resource("", "v1", "events")


@dataclass(slots=True)
class EventRecorder:
    """Posts core/v1 Events from a bounded queue."""

    api: KubeApi
    identity: str
    workers: int = 4
    _queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(10_000))

    def post(self, *, kind: str, namespace: str, name: str, uid: str, warning: bool, reason: str, message: str) -> None:
        """Queue one Event about an object; never blocks, never raises."""
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name[:200]}.{uuid.uuid4().hex[:12]}", "namespace": namespace},
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
