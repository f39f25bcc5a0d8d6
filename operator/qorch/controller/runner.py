"""`qorch operator run`: kopf watching, leader election, the scheduling loop, metrics and probes.

Several replicas may run side by side: all keep their indexes warm, only the
Lease holder decides. A leader that loses its Lease exits non-zero so its
Deployment restarts it as a follower; it never keeps acting on stale hope.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import kopf
from aiohttp import web
from kubernetes_asyncio import client, config
from prometheus_client import start_http_server

from qorch.api import constants
from qorch.controller import handlers, metrics
from qorch.controller.events import EventRecorder
from qorch.controller.leader import LeaderElector, LeaseTimings
from qorch.controller.loop import SchedulingLoop
from qorch.controller.state import ClusterState
from qorch.controller.writer import StatusWriter

__all__ = ["EXIT_LOST_LEADERSHIP", "OperatorSettings", "run"]

log = logging.getLogger(__name__)
EXIT_LOST_LEADERSHIP = 3


@dataclass(frozen=True, slots=True)
class OperatorSettings:
    """What `qorch operator run` was told."""

    kubeconfig: str | None = None
    namespaces: tuple[str, ...] = ()
    metrics_port: int = 8080
    health_port: int = 8081
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    lease_namespace: str = constants.OPERATOR_NAMESPACE
    lease_name: str = constants.LEADER_LEASE
    timings: LeaseTimings = field(default_factory=LeaseTimings)
    write_concurrency: int = 16
    tick_seconds: float = 1.0


async def _probes(port: int, ready: asyncio.Event) -> web.AppRunner | None:
    if port <= 0:
        return None

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        return web.Response(text="ok") if ready.is_set() else web.Response(status=503, text="caches not synced")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # noqa: S104 - probes must be reachable in a pod
    return runner


async def _wait_until_served(api: client.ApiClient, settings: OperatorSettings, stop: asyncio.Event) -> None:
    """Block until the qorch kinds and Leases are served (fresh apiservers serve CRDs late).

    kopf resolves resources once at start; a resource missing from discovery then
    stays unwatched, so the operator must not start watching a half-started apiserver.
    """
    objects = client.CustomObjectsApi(api)
    leases = client.CoordinationV1Api(api)
    while not stop.is_set():
        try:
            for plural in ("agents", "tasks", "approvals", "schedulingpolicies"):
                await objects.list_cluster_custom_object(constants.GROUP, constants.VERSION, plural, limit=1)
            await leases.list_namespaced_lease(settings.lease_namespace, limit=1)
        except (TimeoutError, client.exceptions.ApiException, OSError) as exc:
            log.info("waiting for the API to serve qorch resources: %s", getattr(exc, "reason", exc))
            await asyncio.sleep(1.0)
        else:
            return


async def _settle(api: client.ApiClient, state: ClusterState, settings: OperatorSettings) -> None:
    """Wait until the initial watch lists have landed in the indexes (at most 120 s).

    A LIST with limit=1 tells how many Agents and Tasks exist; once the indexes hold at
    least that many, one more second lets the heartbeats catch up. Deciding on
    half-loaded indexes (agents without heartbeats yet) would write thousands of wrong
    reasons only to correct them a moment later. A quiet-period rule would not do:
    a live fleet renews Leases all the time.
    """
    objects: Any = client.CustomObjectsApi(api)
    totals: dict[str, int] = {}
    for plural in ("agents", "tasks"):
        total = 0
        for namespace in settings.namespaces or (None,):
            if namespace is None:
                page = await objects.list_cluster_custom_object(constants.GROUP, constants.VERSION, plural, limit=1)
            else:
                page = await objects.list_namespaced_custom_object(
                    constants.GROUP, constants.VERSION, namespace, plural, limit=1
                )
            total += len(page["items"]) + int(page["metadata"].get("remainingItemCount") or 0)
        totals[plural] = total
    deadline = time.monotonic() + 120

    def loaded() -> bool:
        return len(state.agents) >= totals["agents"] and len(state.tasks) >= totals["tasks"]

    while time.monotonic() < deadline and not loaded():  # noqa: ASYNC110 - the watch fills the indexes
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)


async def _main(settings: OperatorSettings) -> int:
    if settings.kubeconfig:
        os.environ["KUBECONFIG"] = settings.kubeconfig
        await config.load_kube_config(config_file=settings.kubeconfig)
    else:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            await config.load_kube_config()
    api = client.ApiClient()
    api.configuration.connection_pool_maxsize = max(settings.write_concurrency, 8)
    state = ClusterState()
    elector = LeaderElector(
        client.CoordinationV1Api(api),
        namespace=settings.lease_namespace,
        name=settings.lease_name,
        identity=settings.identity,
        timings=settings.timings,
    )
    writer = StatusWriter(client.CustomObjectsApi(api), concurrency=settings.write_concurrency)
    recorder = EventRecorder(client.CoreV1Api(api), settings.identity)
    loop = SchedulingLoop(state, writer, elector, events=recorder, tick=settings.tick_seconds)

    registry = kopf.OperatorRegistry()
    handlers.register(registry, state, loop.poke, handlers.connection_of(api.configuration))
    kopf_settings = kopf.OperatorSettings()
    kopf_settings.posting.enabled = False
    kopf_settings.watching.server_timeout = 300
    stop = asyncio.Event()
    ready = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    if settings.metrics_port > 0:
        start_http_server(settings.metrics_port)
    probes = await _probes(settings.health_port, ready)
    await _wait_until_served(api, settings, stop)

    kopf_task = asyncio.create_task(
        kopf.operator(
            registry=registry,
            settings=kopf_settings,
            standalone=True,
            clusterwide=not settings.namespaces,
            namespaces=list(settings.namespaces),
            stop_flag=stop,
            ready_flag=ready,
        )
    )
    await ready.wait()
    await _settle(api, state, settings)  # the initial lists are in the indexes before anyone may lead
    tasks = [asyncio.create_task(elector.run()), asyncio.create_task(loop.run())]
    lost = asyncio.create_task(elector.lost.wait())
    stopped = asyncio.create_task(stop.wait())
    leader_gauge = asyncio.create_task(_track_leader(elector))
    await asyncio.wait({lost, stopped, kopf_task}, return_when=asyncio.FIRST_COMPLETED)
    code = EXIT_LOST_LEADERSHIP if lost.done() else 0
    stop.set()
    for task in (*tasks, leader_gauge, lost, stopped):
        task.cancel()
    if code == 0:
        await elector.release()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.wait_for(kopf_task, 10)
    if probes is not None:
        await probes.cleanup()
    await api.close()
    return code


async def _track_leader(elector: LeaderElector) -> None:
    while True:
        metrics.LEADER.set(1 if elector.leading.is_set() else 0)
        await asyncio.sleep(0.5)


def run(settings: OperatorSettings) -> int:
    """Run until SIGTERM (exit 0) or until leadership is lost (exit 3)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kopf").setLevel(logging.DEBUG if os.environ.get("QORCH_DEBUG") else logging.WARNING)
    return asyncio.run(_main(settings))
