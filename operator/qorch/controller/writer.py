"""The status writer: compare-and-set merge patches to /status, bounded and polite.

Every patch carries `metadata.resourceVersion` = the version the decision was
made on, so the apiserver answers 409 if anything changed since. A 409 means
the decision is void: the caller re-reads (the watch delivers the new version)
and decides again. 429 is retried after Retry-After. The in-flight ledger
keeps the loop from deciding a task again before its own write has come back
through the watch. Writes go to the status subresource only: the operator never
touches spec, labels or annotations, so GitOps tools see no drift.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kubernetes_asyncio.client.exceptions import ApiException

from qorch.api import constants
from qorch.controller import metrics

if TYPE_CHECKING:
    from qorch.controller.state import Key

__all__ = ["Outcome", "StatusWriter"]

log = logging.getLogger(__name__)
_CONFLICT, _NOT_FOUND, _TOO_MANY, _UNPROCESSABLE = 409, 404, 429, 422
_MAX_THROTTLED_RETRIES = 5


class Outcome(enum.Enum):
    """What happened to one write."""

    WRITTEN = "written"
    CONFLICT = "conflict"  # the object changed since the decision: decide again
    GONE = "gone"
    FAILED = "failed"


@dataclass(slots=True)
class StatusWriter:
    """Writes status patches for one kind of object with bounded concurrency."""

    api: Any  # a CustomObjectsApi; its stubs lack _content_type, which merge patches need
    concurrency: int = 16
    in_flight: dict[tuple[str, Key], str] = field(default_factory=dict)  # (plural, key) -> rv decided on
    _gate: asyncio.Semaphore | None = None

    def busy(self, plural: str, key: Key, resource_version: str) -> bool:
        """Whether a write decided on this version (or an older one) is still unconfirmed."""
        pending = self.in_flight.get((plural, key))
        return pending is not None and pending == resource_version

    def settle(self, plural: str, key: Key, resource_version: str) -> None:
        """The watch delivered a newer version: the write is visible (or overtaken)."""
        pending = self.in_flight.get((plural, key))
        if pending is not None and pending != resource_version:
            del self.in_flight[(plural, key)]

    async def patch(self, plural: str, key: Key, resource_version: str, status: dict[str, Any]) -> Outcome:
        """Merge-patch `status` onto the object, if it is still at `resource_version`."""
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.concurrency)
        namespace, name = key
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        self.in_flight[(plural, key)] = resource_version
        outcome = Outcome.FAILED
        try:
            async with self._gate:
                outcome = await self._send(plural, namespace, name, body)
        finally:
            if outcome is not Outcome.WRITTEN:
                self.in_flight.pop((plural, key), None)
        return outcome

    async def _send(self, plural: str, namespace: str, name: str, body: dict[str, Any]) -> Outcome:
        for _ in range(_MAX_THROTTLED_RETRIES):
            started = time.perf_counter()
            try:
                await self.api.patch_namespaced_custom_object_status(
                    constants.GROUP,
                    constants.VERSION,
                    namespace,
                    plural,
                    name,
                    body,
                    field_manager=constants.OPERATOR_FIELD_MANAGER,
                    _content_type="application/merge-patch+json",
                )
            except ApiException as exc:
                metrics.API_WRITE_SECONDS.observe(time.perf_counter() - started)
                if exc.status == _CONFLICT:
                    metrics.CONFLICTS.inc()
                    return Outcome.CONFLICT
                if exc.status == _NOT_FOUND:
                    return Outcome.GONE
                if exc.status == _TOO_MANY:
                    headers: Any = exc.headers or {}
                    retry_after = float(headers.get("Retry-After", "1") or 1)
                    await asyncio.sleep(min(retry_after, 10.0))
                    continue
                log.warning("status write to %s %s/%s failed: %s %s", plural, namespace, name, exc.status, exc.reason)
                return Outcome.FAILED
            except (TimeoutError, OSError) as exc:
                log.warning("status write to %s %s/%s failed: %s", plural, namespace, name, exc)
                return Outcome.FAILED
            metrics.API_WRITE_SECONDS.observe(time.perf_counter() - started)
            return Outcome.WRITTEN
        return Outcome.FAILED
