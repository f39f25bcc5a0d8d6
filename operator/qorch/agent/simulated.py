"""A simulated agent pool: keeps every Agent of a namespace alive and "runs" their tasks.

For demos and tests only. Each Agent gets its Lease `qorch-agent-<name>` renewed;
each Task assigned to one of them is started (execution.startedAt) and, after a
duration derived from its name, finished (execution.finishedAt, result), or
failed with probability `failure_rate`. It writes nothing but Leases and
`status.execution`, as the real runtime must.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import signal
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from qorch.api import constants

__all__ = ["PoolSettings", "run"]

log = logging.getLogger(__name__)
_NOT_FOUND = 404


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Where the pool works and how it behaves."""

    namespace: str
    kubeconfig: str | None = None
    renew_seconds: float = 5.0
    poll_seconds: float = 0.5
    work_seconds: tuple[float, float] = (1.0, 4.0)
    failure_rate: float = 0.0


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _fraction(text: str) -> float:
    """A stable number in [0, 1) from a name, so runs are reproducible."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "little") / 2**32


class SimulatedPool:
    """Renews Leases and executes assigned tasks for every Agent in one namespace."""

    def __init__(self, api: client.ApiClient, settings: PoolSettings) -> None:
        """Bind to an API client."""
        self._objects: Any = client.CustomObjectsApi(api)
        self._leases: Any = client.CoordinationV1Api(api)
        self._settings = settings
        self._started: dict[str, float] = {}  # task -> loop time its attempt started

    async def renew(self) -> None:
        """Create or renew the Lease of every Agent in the namespace."""
        ns = self._settings.namespace
        agents = await self._objects.list_namespaced_custom_object(constants.GROUP, constants.VERSION, ns, "agents")
        for agent in agents["items"]:
            name = constants.AGENT_LEASE_PREFIX + agent["metadata"]["name"]
            spec = {"holderIdentity": agent["metadata"]["name"], "leaseDurationSeconds": 30, "renewTime": _now()}
            try:
                await self._leases.patch_namespaced_lease(name, ns, {"spec": spec})
            except ApiException as exc:
                if exc.status != _NOT_FOUND:
                    raise
                await self._leases.create_namespaced_lease(ns, {"metadata": {"name": name}, "spec": spec})

    async def work(self) -> None:
        """Start assigned tasks and finish the ones whose time has come."""
        ns, loop = self._settings.namespace, asyncio.get_running_loop()
        for phase in ("Assigned", "Running"):
            tasks = await self._objects.list_namespaced_custom_object(
                constants.GROUP, constants.VERSION, ns, "tasks", field_selector=f"status.phase={phase}"
            )
            for task in tasks["items"]:
                name = task["metadata"]["name"]
                status = task.get("status") or {}
                assigned_at = (status.get("assignment") or {}).get("assignedAt", "")
                execution = status.get("execution") or {}
                key = f"{name}@{assigned_at}"
                if phase == "Assigned" and execution.get("startedAt", "") < assigned_at:
                    await self._report(name, {"startedAt": _now(), "finishedAt": None, "result": "", "error": ""})
                    self._started[key] = loop.time()
                elif phase == "Running" and not execution.get("finishedAt"):
                    started = self._started.setdefault(key, loop.time())
                    low, high = self._settings.work_seconds
                    if loop.time() - started >= low + (high - low) * _fraction(key):
                        failed = _fraction("fail" + key) < self._settings.failure_rate
                        await self._report(
                            name,
                            {
                                "finishedAt": _now(),
                                "result": "" if failed else f"simulated: {task['spec']['goal'][:200]}",
                                "error": "simulated failure" if failed else "",
                            },
                        )
                        self._started.pop(key, None)

    async def _report(self, task: str, execution: dict[str, Any]) -> None:
        with contextlib.suppress(ApiException):
            await self._objects.patch_namespaced_custom_object_status(
                constants.GROUP,
                constants.VERSION,
                self._settings.namespace,
                "tasks",
                task,
                {"status": {"execution": execution}},
                field_manager=constants.AGENT_FIELD_MANAGER,
                _content_type="application/merge-patch+json",
            )


async def _main(settings: PoolSettings) -> None:
    if settings.kubeconfig:
        await config.load_kube_config(config_file=settings.kubeconfig)
    else:
        await config.load_kube_config()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with client.ApiClient() as api:
        pool = SimulatedPool(api, settings)
        last_renew = -1e9
        while not stop.is_set():
            loop_time = asyncio.get_running_loop().time()
            try:
                if loop_time - last_renew >= settings.renew_seconds:
                    await pool.renew()
                    last_renew = loop_time
                await pool.work()
            except (ApiException, OSError, TimeoutError) as exc:
                log.warning("simulated pool: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.poll_seconds)


def run(settings: PoolSettings) -> None:
    """Run until SIGTERM or Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_main(settings))
