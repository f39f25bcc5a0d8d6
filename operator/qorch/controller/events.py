"""Kubernetes Events on Tasks: Scheduled (Normal) and Unschedulable (Warning), on transitions only.

Best effort by design: an Event that cannot be posted is dropped, never retried
in a way that could slow scheduling, and never posted again for the same
transition. Concurrency is bounded separately from status writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kubernetes_asyncio.client.exceptions import ApiException

from qorch.api import constants

if TYPE_CHECKING:
    from qorch.controller.state import TaskRecord

__all__ = ["EventRecorder"]


@dataclass(slots=True)
class EventRecorder:
    """Posts core/v1 Events about Tasks."""

    api: Any  # a CoreV1Api
    identity: str
    concurrency: int = 8
    _gate: asyncio.Semaphore | None = field(default=None)

    async def task(self, task: TaskRecord, *, warning: bool, reason: str, message: str) -> None:
        """Post one Event about `task`; failures are swallowed (Events are advisory)."""
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.concurrency)
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{task.name}.{uuid.uuid4().hex[:10]}", "namespace": task.namespace},
            "involvedObject": {
                "apiVersion": constants.API_VERSION,
                "kind": "Task",
                "name": task.name,
                "namespace": task.namespace,
                "uid": task.uid,
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
        async with self._gate:
            with contextlib.suppress(ApiException, OSError, TimeoutError):
                await self.api.create_namespaced_event(task.namespace, body)
