"""`UnifiedQuantumOrchestrator`: the original API, on a real cluster.

```python
orchestrator = UnifiedQuantumOrchestrator(max_agents=1_000_000)
await orchestrator.start()
await orchestrator.register_agent("agent-1", {"general"})
name = await orchestrator.submit_task("summarise the report")
status = orchestrator.get_system_status()
```

- `start()` connects to the cluster of the kubeconfig ($KUBECONFIG,
  ~/.kube/config, or in-cluster) and expects the operator there; with none of
  them (or `embedded=True`) it brings up the embedded default: a local control
  plane and an in-process operator (`embedded.py`).
- `register_agent()` creates an Agent and, unless `serve=False`, serves it
  from this process: every served agent shares one Task watch and one Lease
  renewal loop (`qorch.agent.fleet`), with the agent runtime's protocol code.
- `submit_task()` creates a Task (`qorch.client.Client.submit`).
- `get_system_status()` reads what this process's watches hold (no I/O): the
  namespace's Agents and Tasks by phase, the leader (holder of the Lease
  `qorch-operator` in `qorch-system`) and the scheduler's observables as the
  operator published them in SchedulingPolicy `default`'s status (None until
  it has).
- `stop()` (or leaving `async with`) drains the served agents, releases their
  Leases, closes the watches and stops what `start()` started. Safe to call
  twice, and after a failed `start()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from pydantic import ValidationError

from qorch.agent.fleet import AgentFleet, FleetSettings
from qorch.agent.runtime import AGENTS, Handlers, TaskContext
from qorch.api import constants
from qorch.api.agent import AgentSpec
from qorch.client import Client, ClientError, TaskView
from qorch.controller.informer import Informer
from qorch.controller.kube import ApiError, KubeApi, KubeError, Resource
from qorch.orchestrator.census import Latest, PhaseCensus, Tee
from qorch.orchestrator.embedded import EmbeddedCluster

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["OrchestratorError", "UnifiedQuantumOrchestrator", "echo"]

log = logging.getLogger(__name__)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MAX_NAME = 63
_TASKS = Resource(constants.GROUP, constants.VERSION, "tasks")
_POLICIES = Resource(constants.GROUP, constants.VERSION, "schedulingpolicies", namespaced=False)
_LEASES = Resource("coordination.k8s.io", "v1", "leases")
_NOT_FOUND, _CONFLICT = 404, 409
_LEASES_OK = (3, 3600)  # lease_seconds bounds
Handler = Callable[[TaskContext], Any]


class OrchestratorError(ClientError):
    """A call the orchestrator refused or could not carry out; one line that says what to do."""


def echo(task: TaskContext) -> str:
    """The default handler: the task's goal, as its result (deterministic and small)."""
    return task.goal


def _handlers(handler: Handler | Handlers | None) -> Handlers:
    if handler is None:
        return Handlers(default=echo)
    if isinstance(handler, Handlers):
        return handler
    if callable(handler):
        return Handlers(default=handler)
    raise OrchestratorError(
        f"handler must be a function taking a TaskContext or a qorch.agent.Handlers, got {type(handler).__name__}"
    )


def _kubeconfig_found() -> bool:
    """Whether a cluster is configured: $KUBECONFIG, ~/.kube/config, or running in a pod."""
    return bool(
        os.environ.get("KUBECONFIG")
        or (Path.home() / ".kube" / "config").is_file()
        or os.environ.get("KUBERNETES_SERVICE_HOST")
    )


class UnifiedQuantumOrchestrator:
    """Agents, Tasks and the scheduler's observables of one namespace, through the Kubernetes API."""

    def __init__(
        self,
        max_agents: int = 1000,
        *,
        namespace: str = "default",
        kubeconfig: str | None = None,
        embedded: bool | None = None,
        handler: Handler | Handlers | None = None,
        lease_seconds: int = 30,
        start_timeout: float = 120.0,
    ) -> None:
        """Validate the settings; nothing is contacted until `start()`.

        `embedded`: None decides by whether a cluster is configured; True always brings up the
        local control plane and an in-process operator; False never does. `handler` serves the
        agents registered without one of their own (default: `echo`, the goal as the result).
        """
        if isinstance(max_agents, bool) or not isinstance(max_agents, int) or max_agents < 1:
            raise OrchestratorError(
                f"UnifiedQuantumOrchestrator: max_agents must be a positive integer, got {max_agents!r}"
            )
        if not isinstance(namespace, str) or not _DNS_LABEL.match(namespace) or len(namespace) > _MAX_NAME:
            raise OrchestratorError(
                f"UnifiedQuantumOrchestrator: namespace {namespace!r} must be a DNS label "
                "(lowercase letters, digits and '-', at most 63)"
            )
        if embedded and kubeconfig:
            raise OrchestratorError(
                "UnifiedQuantumOrchestrator: embedded=True brings up its own cluster; drop kubeconfig= or embedded="
            )
        if (
            isinstance(lease_seconds, bool)
            or not isinstance(lease_seconds, int)
            or not _LEASES_OK[0] <= lease_seconds <= _LEASES_OK[1]
        ):
            raise OrchestratorError(
                f"UnifiedQuantumOrchestrator: lease_seconds must be an integer from 3 to 3600, got {lease_seconds!r}"
            )
        self.max_agents = max_agents
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.embedded = embedded
        self.lease_seconds = lease_seconds
        self.start_timeout = start_timeout
        self._default_handlers = _handlers(handler)
        self.registered: dict[str, bool] = {}  # agent name -> served here
        self.client: Client | None = None
        self.fleet: AgentFleet | None = None
        self.cluster: EmbeddedCluster | None = None
        self._api_client: Any = None
        self._informers: list[Informer] = []
        self._watches: list[asyncio.Task[None]] = []
        self._agents = PhaseCensus()
        self._tasks = PhaseCensus()
        self._policy = Latest()
        self._lease = Latest()
        self._started = False
        self._server = ""

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Connect (or bring up the embedded cluster), start the watches and the agent fleet."""
        if self._started:
            return
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        self._started = True

    async def _start(self) -> None:
        kubeconfig = self.kubeconfig
        embedded = self.embedded if self.embedded is not None else (not kubeconfig and not _kubeconfig_found())
        if embedded:
            self.cluster = EmbeddedCluster(self.namespace)
            try:
                kubeconfig = str(await self.cluster.start(self.start_timeout))
            except Exception as exc:  # noqa: BLE001 - whatever the reason (binaries, ports, etcd), one line
                first = (str(exc).splitlines() or [type(exc).__name__])[0]
                raise OrchestratorError(f"the embedded cluster did not start: {first}") from None
        elif kubeconfig is None and os.environ.get("KUBECONFIG"):
            kubeconfig = os.environ["KUBECONFIG"]
        if kubeconfig and not Path(kubeconfig).is_file():  # noqa: ASYNC240 - one stat before any I/O
            raise OrchestratorError(
                f"no cluster to talk to: kubeconfig {kubeconfig} does not exist; fix KUBECONFIG, or unset it "
                "(and have no ~/.kube/config) to run the embedded cluster"
            )
        api = await self._connect(kubeconfig)
        self.client = Client(api, self.namespace)
        await self._check_api(api)
        self.fleet = AgentFleet(
            api,
            FleetSettings(self.namespace, lease_seconds=self.lease_seconds, renew_seconds=self.lease_seconds / 3),
        )
        self._informers = [
            Informer(
                api, Resource(constants.GROUP, constants.VERSION, "agents"), self._agents, namespace=self.namespace
            ),
            Informer(
                api,
                _POLICIES,
                self._policy,
                field_selector=f"metadata.name={constants.DEFAULT_POLICY_NAME}",
            ),
            Informer(
                api,
                _LEASES,
                self._lease,
                namespace=constants.OPERATOR_NAMESPACE,
                field_selector=f"metadata.name={constants.LEADER_LEASE}",
            ),
        ]
        self._watches = [asyncio.create_task(i.run(), name=f"orchestrator {i.label}") for i in self._informers]
        await self.fleet.start(Tee(self._tasks, self.fleet))  # one Task watch for the census and the agents
        await self._synced(timeout=self.start_timeout)
        if embedded:
            await self._until_leader(self.start_timeout)
        elif self.leader is None:
            log.warning(
                "no qorch operator holds Lease %s/%s on %s: tasks will wait until one runs",
                constants.OPERATOR_NAMESPACE,
                constants.LEADER_LEASE,
                self._server,
            )

    async def _connect(self, kubeconfig: str | None) -> KubeApi:
        from kubernetes_asyncio import client, config  # noqa: PLC0415 - only a connecting orchestrator needs it

        configuration = client.Configuration()
        try:
            if kubeconfig:
                await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
            else:
                try:
                    config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                except config.ConfigException:
                    await config.load_kube_config(client_configuration=configuration)
        except (config.ConfigException, OSError) as exc:
            raise OrchestratorError(f"no cluster to talk to: {exc}; set KUBECONFIG or pass kubeconfig=") from None
        self._api_client = client.ApiClient(configuration=configuration)
        self._server = str(configuration.host)
        return KubeApi(self._api_client)

    async def _check_api(self, api: KubeApi) -> None:
        try:
            await api.call("GET", _TASKS.path(self.namespace), query={"limit": 1})
        except ApiError as exc:
            if exc.status == _NOT_FOUND:
                raise OrchestratorError(
                    f"no qorch CRDs on {self._server}: install them (kubectl apply -f crds/), "
                    "or use UnifiedQuantumOrchestrator(embedded=True)"
                ) from None
            raise OrchestratorError(f"tasks in {self.namespace}: the apiserver said {exc}") from None
        except KubeError as exc:
            raise OrchestratorError(
                f"cannot reach the apiserver at {self._server} ({exc}); is the cluster up and the kubeconfig right?"
            ) from None

    async def _synced(self, timeout: float) -> None:  # noqa: ASYNC109 - a bound on the first lists, reported
        waits = [i.synced.wait() for i in self._informers]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        except TimeoutError:
            raise OrchestratorError(f"the watches of {self._server} did not list within {timeout:g} s") from None

    async def _until_leader(self, timeout: float) -> None:  # noqa: ASYNC109
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.leader is None:
            if self.cluster is not None and not self.cluster.alive:
                raise OrchestratorError("the embedded operator stopped during start-up (see the log)")
            if loop.time() > deadline:
                raise OrchestratorError(f"the embedded operator did not take the lead within {timeout:g} s")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """Drain and release the served agents, close the watches, stop the embedded cluster. Idempotent."""
        self._started = False
        fleet, self.fleet = self.fleet, None
        if fleet is not None:
            try:
                await fleet.stop()
            except Exception:
                log.exception("stopping the served agents failed")
        watches, self._watches = self._watches, []
        for watch in watches:
            watch.cancel()
        await asyncio.gather(*watches, return_exceptions=True)
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.api.close()
        api_client, self._api_client = self._api_client, None
        if api_client is not None:
            with contextlib.suppress(Exception):
                await api_client.close()
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            await cluster.stop()

    async def __aenter__(self) -> Self:
        """`async with UnifiedQuantumOrchestrator(...) as orchestrator:` starts it."""
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """And stops it."""
        await self.stop()

    def _client(self, what: str) -> Client:
        if self.client is None or not self._started:
            raise OrchestratorError(f"{what}: the orchestrator is not started; await orchestrator.start() first")
        return self.client

    # ------------------------------------------------------------------ agents and tasks
    async def register_agent(
        self,
        name: str,
        capabilities: Iterable[str] | str = (),
        *,
        serve: bool = True,
        handler: Handler | Handlers | None = None,
        labels: Mapping[str, str] | None = None,
        **spec: object,
    ) -> str:
        """Create Agent `name` (AgentSpec fields in `spec`) and serve it here unless `serve=False`; its name.

        An Agent that exists already is attached to as it is (its spec wins, as with
        `qorch agent run`).
        """
        client = self._client(f"register_agent {name!r}")
        if not isinstance(name, str) or not _DNS_LABEL.match(name) or len(name) > _MAX_NAME:
            raise OrchestratorError(
                f"register_agent {name!r}: the name must be a DNS label (lowercase letters, digits and '-', at most 63)"
            )
        if name in self.registered:
            raise OrchestratorError(f"register_agent {name!r}: registered already by this orchestrator")
        if len(self.registered) >= self.max_agents:
            raise OrchestratorError(
                f"register_agent {name!r}: max_agents={self.max_agents} reached; "
                "create the orchestrator with a larger max_agents"
            )
        caps = [capabilities] if isinstance(capabilities, str) else sorted(capabilities)
        try:
            agent_spec = AgentSpec.model_validate({"capabilities": caps, **spec})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "spec"
            raise OrchestratorError(f"register_agent {name!r}: spec.{where}: {first['msg']}") from None
        handlers = _handlers(handler) if handler is not None else self._default_handlers
        body = {
            "apiVersion": constants.API_VERSION,
            "kind": "Agent",
            "metadata": {"name": name, "labels": dict(labels or {})},
            "spec": agent_spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
            | {"capabilities": agent_spec.capabilities},
        }
        fresh = True
        try:
            made = await client.api.call("POST", AGENTS.path(self.namespace), body=body)
        except ApiError as exc:
            if exc.status != _CONFLICT:
                raise OrchestratorError(f"register_agent {name!r}: the apiserver said {exc}") from None
            fresh = False
            made = await self._get_agent(client, name)
        except KubeError as exc:  # the POST may have landed: read it back
            try:
                made = await self._get_agent(client, name)
            except OrchestratorError:
                raise OrchestratorError(f"register_agent {name!r}: no answer from the apiserver ({exc})") from None
        self.registered[name] = serve
        if serve:
            assert self.fleet is not None  # noqa: S101 - started
            capacity = int((made.get("spec") or {}).get("capacity", agent_spec.capacity))
            self.fleet.add(name, handlers, capacity=capacity, capabilities=agent_spec.capabilities, fresh=fresh)
        return name

    async def _get_agent(self, client: Client, name: str) -> dict[str, Any]:
        try:
            return await client.api.call("GET", AGENTS.path(self.namespace, name))
        except KubeError as exc:
            raise OrchestratorError(f"register_agent {name!r}: cannot read the Agent back ({exc})") from None

    async def submit_task(
        self, goal: str, *, name: str | None = None, labels: Mapping[str, str] | None = None, **spec: object
    ) -> str:
        """Create a Task (TaskSpec fields in `spec`) and return its name.

        Waits (up to 10 s) for the first Lease renewal of agents registered just before, so the
        operator does not find them unknown and park the task.
        """
        client = self._client("submit_task")
        if not isinstance(goal, str) or not goal:
            raise OrchestratorError(f"submit_task: goal must be a non-empty string, got {goal!r}")
        if self.fleet is not None:
            await self.fleet.settled(timeout=10.0)
        fields: dict[str, Any] = dict(spec)
        return await client.submit(goal, name=name, labels=labels, **fields)

    async def wait(self, names: str | Iterable[str], *, timeout: float = 300.0) -> dict[str, TaskView]:  # noqa: ASYNC109
        """Wait until the tasks are final (see `Client.wait`)."""
        return await self._client("wait").wait(names, timeout=timeout)

    async def run_goal(self, goal: str, *, timeout: float = 300.0, **spec: object) -> TaskView:  # noqa: ASYNC109
        """Submit a task and wait until it is final; its view (result in `status.execution`)."""
        fields: dict[str, Any] = dict(spec)
        name = await self.submit_task(goal, **fields)
        return (await self.wait(name, timeout=timeout))[name]

    # ------------------------------------------------------------------ status
    @property
    def leader(self) -> str | None:
        """The operator replica holding the leader Lease, as last watched (None: nobody)."""
        body = self._lease.body
        holder = ((body or {}).get("spec") or {}).get("holderIdentity")
        return str(holder) if holder else None

    def get_system_status(self) -> dict[str, Any]:
        """Agents, tasks, the leader and the published observables, from this process's watches (no I/O)."""
        agents = self._agents.by_phase()
        tasks = self._tasks.by_phase()
        status = ((self._policy.body or {}).get("status")) or {}
        observables = status.get("observables") or {}
        return {
            "namespace": self.namespace,
            "server": self._server,
            "embedded": self.cluster is not None,
            "running": self._started,
            "leader": self.leader,
            "agents": {
                "count": sum(agents.values()),
                "by_phase": agents,
                "registered": len(self.registered),
                "served": len(self.fleet.runtimes) if self.fleet is not None else 0,
                "max_agents": self.max_agents,
            },
            "tasks": {"count": sum(tasks.values()), "by_phase": tasks},
            "quantum": {
                # As the leader published them; None until it has (no pass yet, or no policy object).
                "global_coherence": _number(observables.get("coherence")),
                "entropy": _number(observables.get("entropy")),
                "fidelity": _number(observables.get("fidelity")),
                "batch": status.get("batch"),
                "last_cycle_at": status.get("lastCycleAt"),
                "published_at": status.get("publishedAt"),
                "published_by": status.get("leader"),
                "policy": self._policy.body is not None,
            },
        }


def _number(value: object) -> float | None:
    """A published number as a float (JSON writes 1.0 as 1); None when absent."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
