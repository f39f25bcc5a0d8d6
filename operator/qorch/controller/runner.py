"""`qorch operator run`: informers, kopf, leader election, the loop, the writer, metrics and probes.

Several replicas may run side by side: all keep their stores warm, only the
Lease holder decides. The process ends, and its Deployment restarts it, when
- leadership is lost (exit 3): it never keeps acting on stale hope;
- any of its own parts (elector, loop, writer, informers, kopf) ends or
  crashes (exit 1): a half-working operator that says it is healthy is worse
  than a restart;
- SIGTERM arrives (exit 0): it releases the Lease so a follower leads at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import kopf
from aiohttp import web
from kubernetes_asyncio import client
from prometheus_client import start_http_server

from qorch import tracing
from qorch.api import constants
from qorch.controller import handlers, metrics, writer
from qorch.controller.auditing import DecisionLog
from qorch.controller.events import EventRecorder
from qorch.controller.informer import Informer
from qorch.controller.kube import ApiError, KubeApi, KubeError, Resource, load_config
from qorch.controller.leader import LEASES, LeaderElector, LeaseTimings
from qorch.controller.loop import AGENT_RESOURCE, APPROVAL_RESOURCE, TASK_RESOURCE, Kernel
from qorch.controller.publish import ObservablesPublisher
from qorch.controller.store import AGENTS, TASKS, ClusterState
from qorch.controller.store import LEASES as LEASE_PLURAL
from qorch.controller.writer import StatusWriter

if TYPE_CHECKING:
    from collections.abc import Awaitable, Coroutine

__all__ = ["EXIT_FAILED", "EXIT_LOST_LEADERSHIP", "OperatorSettings", "operate", "run"]

log = logging.getLogger(__name__)
EXIT_FAILED = 1
EXIT_LOST_LEADERSHIP = 3
_SWEEP_SECONDS = 300.0
_STUCK_SECONDS = 60.0


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
    write_concurrency: int = 32
    events_per_second: float = 50.0
    log_level: str = "INFO"
    request_timeout: float = 10.0
    tick_seconds: float = 1.0
    publish_seconds: float = 3.0  # the observables go into the policy's status at most this often
    audit_log: str | None = None  # a directory for the audit log's segments; None: no audit log
    audit_key: str | None = None  # the PEM file of its Ed25519 signing key (a Secret's volume)
    # The operator owns its process (`qorch operator run`): it takes SIGTERM and SIGINT, tunes the
    # GC for a large store and exports KUBECONFIG. Embedded in someone else's process (the SDK's
    # UnifiedQuantumOrchestrator), it does none of that and stops when told (`operate(stop=...)`).
    own_process: bool = True


@dataclass(slots=True)
class _Parts:
    """The running pieces: started as tasks, watched for an early end, probed for health."""

    kernel: Kernel
    elector: LeaderElector
    informers: list[Informer]
    publisher: ObservablesPublisher
    tasks: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self, name: str, work: Coroutine[Any, Any, Any]) -> None:
        self.tasks[name] = asyncio.create_task(work, name=name)

    def ended(self) -> str | None:
        """The name of a part that stopped (none ever should before shutdown)."""
        return next((name for name, task in self.tasks.items() if task.done()), None)

    async def first_end(self) -> None:
        await asyncio.wait(set(self.tasks.values()), return_when=asyncio.FIRST_COMPLETED)

    def healthy(self) -> tuple[bool, str]:
        name = self.ended()
        if name is not None:
            return False, f"{name} stopped"
        last = self.kernel.last_cycle
        if self.elector.leading.is_set() and last and time.monotonic() - last > _STUCK_SECONDS:
            return False, f"no scheduling cycle for {time.monotonic() - last:.0f}s while leading"
        return True, "ok"

    def why_ended(self) -> str:
        name = self.ended() or "?"
        task = self.tasks.get(name)
        error = task.exception() if task is not None and task.done() and not task.cancelled() else None
        return f"{name} ended unexpectedly{f': {error!r}' if error else ''}"

    async def cancel(self, name: str) -> None:
        """Stop one part and wait for it to end."""
        task = self.tasks.get(name)
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)

    async def stop(self) -> None:
        for name, task in self.tasks.items():
            if name != "kopf":  # kopf stops on its own stop flag
                task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.gather(*self.tasks.values(), return_exceptions=True), 10)


async def _until(*aws: Awaitable[Any]) -> None:
    """Wait until the first of `aws` is done; cancel the helpers made for the others."""
    futures = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in futures:
            if not future.done():
                future.cancel()


async def _probes(port: int, parts: _Parts) -> web.AppRunner | None:
    if port <= 0:
        return None

    async def healthz(_: web.Request) -> web.Response:
        ok, why = parts.healthy()
        return web.Response(status=200 if ok else 503, text=why)

    async def readyz(_: web.Request) -> web.Response:
        return web.Response(text="ok") if parts.synced.is_set() else web.Response(status=503, text="caches not synced")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # noqa: S104 - probes must be reachable in a pod
    return runner


async def _wait_until_served(api: KubeApi, settings: OperatorSettings, stop: asyncio.Event) -> bool:
    """Block until the qorch kinds are served (fresh apiservers serve CRDs late); False if stopped first.

    kopf resolves resources once at start, and an informer of a missing kind only
    fails; so nothing starts watching a half-started apiserver. One line says
    what is missing, not one per retry.
    """
    said = ""
    while not stop.is_set():
        try:
            for plural in (TASKS, AGENTS, "approvals"):
                await api.call("GET", Resource(constants.GROUP, constants.VERSION, plural).path(), query={"limit": 1})
            await api.call("GET", LEASES.path(settings.lease_namespace), query={"limit": 1})
        except KubeError as exc:
            text = str(exc)
            if "404" in text:
                text += " (are the qorch CRDs installed? kubectl apply -f crds/)"
            if text != said:
                log.warning("waiting for the API to serve qorch resources: %s", text)
                said = text
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        else:
            return True
    return False


async def _load_config(settings: OperatorSettings) -> client.ApiClient:
    if settings.kubeconfig and settings.own_process:
        os.environ["KUBECONFIG"] = settings.kubeconfig
    await load_config(settings.kubeconfig)
    api_client = client.ApiClient()
    api_client.configuration.connection_pool_maxsize = max(settings.write_concurrency + 16, 32)
    return api_client


def _informers(api: KubeApi, state: ClusterState, settings: OperatorSettings) -> list[Informer]:
    kinds = [
        (TASK_RESOURCE, TASKS, ""),
        (AGENT_RESOURCE, AGENTS, ""),
        (LEASES, LEASE_PLURAL, constants.AGENT_LEASE_PREFIX),
    ]
    return [
        Informer(api, resource, state.sink(plural), namespace=namespace, name_prefix=prefix)
        for resource, plural, prefix in kinds
        for namespace in (settings.namespaces or (None,))
    ]


async def _read_agent_lease(api: KubeApi, key: tuple[str, str]) -> dict[str, Any] | None:
    """An agent's liveness Lease as the apiserver has it now; None when there is none."""
    namespace, agent = key
    try:
        body: dict[str, Any] = await api.call("GET", LEASES.path(namespace, constants.AGENT_LEASE_PREFIX + agent))
    except ApiError as exc:
        if exc.status == 404:  # noqa: PLR2004
            return None
        raise
    return body


async def _sweeper(api: KubeApi, state: ClusterState, settings: OperatorSettings) -> None:
    while True:
        await asyncio.sleep(_SWEEP_SECONDS)
        try:
            await handlers.sweep(api, state, settings.namespaces)
        except KubeError as exc:
            log.warning("sweep of Approvals failed: %s", exc)


def _kopf(
    state: ClusterState,
    kernel: Kernel,
    api_client: client.ApiClient,
    *,
    settings: OperatorSettings,
    stop: asyncio.Event,
) -> tuple[asyncio.Event, Coroutine[Any, Any, Any]]:
    """Kopf for Approvals and the policy: its ready flag, and the coroutine that runs it."""
    ready = asyncio.Event()
    registry = kopf.OperatorRegistry()
    handlers.register(registry, state, kernel.poke, handlers.connection_of(api_client.configuration))
    kopf_settings = kopf.OperatorSettings()
    kopf_settings.posting.enabled = False
    # The kinds are fixed and served before kopf starts (_wait_until_served): kopf need not
    # watch CRDs or namespaces for changes, and the operator's RBAC grants neither.
    kopf_settings.scanning.disabled = True
    kopf_settings.watching.server_timeout = 300
    return ready, kopf.operator(
        registry=registry,
        settings=kopf_settings,
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        stop_flag=stop,
        ready_flag=ready,
    )


def _audit(settings: OperatorSettings, elector: LeaderElector, kernel: Kernel) -> DecisionLog | None:
    """The audit log wired to the elector (terms, anchors on the Lease) and the kernel (decisions); None if off."""
    if not settings.audit_log:
        return None
    if not settings.audit_key:
        msg = "--audit-log needs --audit-key (the PEM file of the Ed25519 signing key)"
        raise ValueError(msg)
    decisions = DecisionLog(settings.audit_log, settings.audit_key, identity=settings.identity)
    elector.annotate = decisions.annotations
    elector.on_acquired = decisions.acquired
    elector.on_lost = decisions.lost
    kernel.audit = decisions
    return decisions


async def operate(settings: OperatorSettings, stop: asyncio.Event | None = None) -> int:
    """Run on the current event loop until `stop` (or, owning the process, SIGTERM); returns the exit code."""
    if not tracing.enabled():
        tracing.configure("qorch-operator")  # on only with an OTLP endpoint in the environment
    api_client = await _load_config(settings)
    api = KubeApi(api_client, timeout=settings.request_timeout)
    state = ClusterState()
    elector = LeaderElector(
        api,
        namespace=settings.lease_namespace,
        name=settings.lease_name,
        identity=settings.identity,
        timings=settings.timings,
    )
    status_writer = StatusWriter(api, state, elector.may_write, concurrency=settings.write_concurrency)
    for resource in (TASK_RESOURCE, AGENT_RESOURCE, APPROVAL_RESOURCE):
        writer.register(resource)
    recorder = EventRecorder(api, settings.identity, per_second=settings.events_per_second)
    kernel = Kernel(
        state,
        status_writer,
        leading=elector.leading.is_set,
        epoch=lambda: elector.epoch,
        events=recorder,
        read_lease=functools.partial(_read_agent_lease, api),
        tick=settings.tick_seconds,
    )
    state.notify = kernel.poke
    decisions = _audit(settings, elector, kernel)
    publisher = ObservablesPublisher(
        api,
        identity=settings.identity,
        may_write=elector.may_write,
        version=lambda: state.policy.resource_version,
        interval=settings.publish_seconds,
        providers=kernel.providers.status,
    )
    kernel.observed = publisher.observe
    parts = _Parts(kernel, elector, _informers(api, state, settings), publisher)
    if decisions is not None:
        parts.start("audit", decisions.run())
    if stop is None:
        stop = asyncio.Event()
    if settings.own_process:
        _take_signals(stop)
    if settings.metrics_port > 0:
        start_http_server(settings.metrics_port)
    probes = await _probes(settings.health_port, parts)
    code = 0
    try:
        if await _wait_until_served(api, settings, stop):
            kopf_run = _kopf(state, kernel, api_client, settings=settings, stop=stop)
            code = await _operate(parts, api, state=state, settings=settings, stop=stop, kopf_run=kopf_run)
    finally:
        stop.set()
        # The elector stops first: a renewal racing the release would conflict with it, and one
        # after it would take the Lease back.
        await parts.cancel("elector")
        if code == 0:
            await _audit_released(decisions, elector)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(elector.release(), 3.0)
        await parts.stop()
        if probes is not None:
            await probes.cleanup()
        await api.close()
        await api_client.close()
        await _audit_released(decisions, None)
    return code


async def _audit_released(decisions: DecisionLog | None, elector: LeaderElector | None) -> None:
    """Before the Lease is released (`elector`): the last entry, written, so the release anchors it; else stop."""
    if decisions is None:
        return
    if elector is None:
        await asyncio.to_thread(decisions.close, 5.0)
    elif elector.leading.is_set():
        decisions.released()
        await asyncio.to_thread(decisions.flush, 2.0)


async def _operate(
    parts: _Parts,
    api: KubeApi,
    *,
    state: ClusterState,
    settings: OperatorSettings,
    stop: asyncio.Event,
    kopf_run: tuple[asyncio.Event, Coroutine[Any, Any, Any]],
) -> int:
    """Start watching; once every cache is complete, stand for election and run. Returns the exit code."""
    kopf_ready, kopf_operator = kopf_run
    for informer in parts.informers:
        parts.start(f"informer {informer.label}", informer.run())
    parts.start("kopf", kopf_operator)
    parts.start("writer", parts.kernel.writer.run())
    if parts.kernel.events is not None:
        parts.start("events", parts.kernel.events.run())
    # The caches are complete before anyone may lead: deciding on half-loaded ones
    # (agents whose Leases have not arrived) would fail running tasks.
    await _until(kopf_ready.wait(), parts.first_end(), stop.wait())
    if settings.own_process:  # kopf put in handlers of its own that stop kopf alone; SIGTERM must stop everything
        _take_signals(stop)
    await _until(asyncio.gather(*(i.synced.wait() for i in parts.informers)), parts.first_end(), stop.wait())
    if not stop.is_set() and parts.ended() is None:
        await handlers.sweep(api, state, settings.namespaces)
        if settings.own_process:
            _settle_heap()
        parts.kernel.watching_since = time.monotonic()
        parts.synced.set()
        log.info(
            "caches synced: %d agents, %d tasks, %d agent leases; standing for election",
            len(state.agents),
            len(state.tasks),
            len(state.leases),
        )
        parts.start("elector", parts.elector.run())
        parts.start("loop", parts.kernel.run())
        parts.start("publisher", parts.publisher.run())
        parts.start("sweeper", _sweeper(api, state, settings))
        parts.start("leader gauge", _track_leader(parts.elector))
        await _until(parts.elector.lost.wait(), parts.first_end(), stop.wait())
    if parts.elector.lost.is_set():
        return EXIT_LOST_LEADERSHIP
    if not stop.is_set():
        log.error("%s; exiting so that the Deployment restarts the operator", parts.why_ended())
        return EXIT_FAILED
    return 0


def _settle_heap() -> None:
    """Move what the initial lists loaded out of the cyclic GC's way, and collect young objects less often.

    A store of 100,000 records makes every full collection walk them all, a pause the
    loop feels as latency; records hold no reference cycles (they are freed by
    reference counting), so the collector has nothing to find among them.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def _take_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set `stop`, which also stops kopf (it is kopf's stop flag)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)


async def _track_leader(elector: LeaderElector) -> None:
    while True:
        metrics.LEADER.set(1 if elector.leading.is_set() else 0)
        await asyncio.sleep(0.5)


def run(settings: OperatorSettings) -> int:
    """Run until SIGTERM (exit 0), lost leadership (exit 3) or a failed part (exit 1)."""
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kopf").setLevel(logging.DEBUG if os.environ.get("QORCH_DEBUG") else logging.WARNING)
    return asyncio.run(operate(settings))
