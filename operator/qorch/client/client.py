"""Async and sync clients for Tasks and Approvals, over the apiserver's REST API.

Every call is one or two requests, so every method can fail with `ClientError`
(one line: what went wrong and what to do), never with a raw HTTP traceback.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from pydantic import ValidationError

from qorch.api import constants
from qorch.api.enums import TaskPhase
from qorch.api.task import TaskSpec, TaskStatus
from qorch.controller.kube import ApiError, KubeApi, KubeError, Resource, load_config

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence

__all__ = ["FINAL", "Client", "ClientError", "SyncClient", "TaskView"]

T = TypeVar("T")

TASKS = Resource(constants.GROUP, constants.VERSION, "tasks")
APPROVALS = Resource(constants.GROUP, constants.VERSION, "approvals")
AGENTS = Resource(constants.GROUP, constants.VERSION, "agents")
_REVIEW = Resource("authentication.k8s.io", "v1", "selfsubjectreviews", namespaced=False)
_POLICIES = Resource(constants.GROUP, constants.VERSION, "schedulingpolicies", namespaced=False)
FINAL = frozenset({TaskPhase.SUCCEEDED, TaskPhase.FAILED, TaskPhase.DEAD_LETTERED, TaskPhase.CANCELLED})
_NOT_FOUND, _CONFLICT, _FORBIDDEN = 404, 409, 403
_FEW = 20  # wait() reads this many tasks one by one; more, and it lists the namespace
_MERGE = "application/merge-patch+json"
_MANAGER = {"fieldManager": constants.CLIENT_FIELD_MANAGER}  # managedFields name the user's tool, not the operator
# What the apiserver says for a URL of no registered API, not for a missing object (`... "name" not found`).
_NO_SUCH_RESOURCE = ("404 page not found", "could not find the requested resource")


class ClientError(Exception):
    """A request the SDK could not carry out; the message says what to do."""


@dataclass(frozen=True, slots=True)
class TaskView:
    """A Task as read: its name, spec and status as the api models, and its resourceVersion."""

    name: str
    namespace: str
    uid: str
    spec: TaskSpec
    status: TaskStatus
    resource_version: str
    generation: int = 0  # metadata.generation: bumped by every spec edit

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> TaskView:
        """Parse a Task body; spec fields this SDK does not know (a newer API) are left out."""
        meta = body.get("metadata") or {}
        name = str(meta.get("name", "?"))
        raw_spec = dict(body.get("spec") or {})
        known = {f.alias or n for n, f in TaskSpec.model_fields.items()} | set(TaskSpec.model_fields)
        try:
            spec = TaskSpec.model_validate({k: v for k, v in raw_spec.items() if k in known})
            status = TaskStatus.model_validate(body.get("status") or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ClientError(
                f"task {name!r}: cannot read {where}: {first['msg']} (is the SDK older than the CRDs?)"
            ) from None
        return cls(
            name=name,
            namespace=str(meta.get("namespace", "")),
            uid=str(meta.get("uid", "")),
            spec=spec,
            status=status,
            resource_version=str(meta.get("resourceVersion", "")),
            generation=int(meta.get("generation") or 0),
        )

    @property
    def phase(self) -> TaskPhase | None:
        """Where the task is (None before the operator first saw it)."""
        return self.status.phase

    @property
    def done(self) -> bool:
        """Whether the task reached a final phase."""
        return self.status.phase in FINAL


def _spec(goal: str, fields: Mapping[str, object]) -> dict[str, Any]:
    """Validate a Task spec with the api model; a clear error names the field."""
    try:
        spec = TaskSpec.model_validate({"goal": goal, **fields})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        raise ClientError(f"task spec: {where}: {first['msg']}") from None
    dumped: dict[str, Any] = spec.model_dump(mode="json", exclude_defaults=True, by_alias=True)
    return dumped | {"goal": goal}


def _explain(exc: KubeError, what: str) -> ClientError:
    if isinstance(exc, ApiError):
        if exc.status == _NOT_FOUND and any(m in exc.message for m in _NO_SUCH_RESOURCE):
            return ClientError(
                f"{what}: this cluster has no qorch API (the CRDs are not installed); install them with "
                "`kubectl apply -k manifests/overlays/dev` (or `kubectl apply -f crds/`)"
            )
        if exc.status == _NOT_FOUND:
            return ClientError(f"{what}: not found (check the name and the namespace)")
        if exc.status == _FORBIDDEN:
            return ClientError(f"{what}: forbidden by RBAC ({exc.message}); ask for the qorch role in this namespace")
        return ClientError(f"{what}: the apiserver said {exc.status}: {exc.message}")
    return ClientError(f"{what}: cannot reach the apiserver ({exc}); is the cluster up and the kubeconfig right?")


class Client:
    """Tasks and Approvals in one namespace."""

    def __init__(self, api: KubeApi, namespace: str = "default") -> None:
        """Use an open KubeApi (see `connect` for the usual way)."""
        self.api = api
        self.namespace = namespace
        self._user: str | None = None
        self._owned_client: Any = None

    @classmethod
    async def connect(cls, kubeconfig: str | None = None, namespace: str = "default") -> Self:
        """Connect with a kubeconfig file (default: $KUBECONFIG or ~/.kube/config) or in-cluster config."""
        from kubernetes_asyncio import client, config  # noqa: PLC0415 - only a connecting client needs it

        if kubeconfig and not Path(kubeconfig).is_file():  # noqa: ASYNC240 - one stat, before any I/O starts
            raise ClientError(
                f"no cluster to talk to: kubeconfig {kubeconfig} does not exist; set KUBECONFIG or pass kubeconfig="
            )
        try:
            await load_config(kubeconfig)
        except (config.ConfigException, OSError) as exc:
            raise ClientError(f"no cluster to talk to: {exc}; set KUBECONFIG or pass kubeconfig=") from None
        api_client = client.ApiClient()
        made = cls(KubeApi(api_client), namespace)
        made._owned_client = api_client
        return made

    async def close(self) -> None:
        """Close the connections this client opened."""
        await self.api.close()
        if self._owned_client is not None:
            await self._owned_client.close()

    async def __aenter__(self) -> Self:
        """Use as `async with await Client.connect(...) as c:`."""
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close on the way out."""
        await self.close()

    async def submit(
        self, goal: str, *, name: str | None = None, labels: Mapping[str, str] | None = None, **spec: object
    ) -> str:
        """Create a Task and return its name. `spec` takes TaskSpec's fields in snake_case or camelCase."""
        task_name = name or f"task-{secrets.token_hex(4)}"
        body = {
            "apiVersion": constants.API_VERSION,
            "kind": "Task",
            "metadata": {"name": task_name, "labels": dict(labels or {})},
            "spec": _spec(goal, spec),
        }
        try:
            made = await self.api.call("POST", TASKS.path(self.namespace), body=body, query=_MANAGER)
        except ApiError as exc:
            if exc.status == _CONFLICT:
                raise ClientError(f"task {task_name!r} exists already; pick another name") from None
            raise _explain(exc, f"create task {task_name!r}") from None
        except KubeError as exc:  # the POST may have landed: say so, so a retry does not make a twin
            raise ClientError(
                f"create task {task_name!r}: no answer from the apiserver ({exc}); it may exist, "
                f"check with get({task_name!r}) before submitting again"
            ) from None
        return str((made.get("metadata") or {}).get("name", task_name))

    async def get(self, name: str) -> TaskView:
        """One Task."""
        try:
            return TaskView.of(await self.api.call("GET", TASKS.path(self.namespace, name)))
        except KubeError as exc:
            raise _explain(exc, f"task {name!r} in {self.namespace}") from None

    async def lease_annotations(self, namespace: str, name: str) -> dict[str, str]:
        """The annotations of a coordination.k8s.io Lease (the leader Lease carries the audit log's anchor)."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        try:
            body = await self.api.call("GET", path)
        except KubeError as exc:
            raise _explain(exc, f"Lease {namespace}/{name}") from None
        return {str(k): str(v) for k, v in ((body.get("metadata") or {}).get("annotations") or {}).items()}

    async def agents(self) -> list[dict[str, Any]]:
        """The namespace's Agents, as bodies."""
        try:
            page = await self.api.call("GET", AGENTS.path(self.namespace))
        except KubeError as exc:
            raise _explain(exc, f"agents in {self.namespace}") from None
        return list(page.get("items") or ())

    async def list(self, *, phase: TaskPhase | str | None = None, selector: str = "") -> list[TaskView]:
        """Tasks of the namespace, optionally of one phase or matching a label selector."""
        query = {"fieldSelector": f"status.phase={phase}" if phase else None, "labelSelector": selector or None}
        try:
            page = await self.api.call("GET", TASKS.path(self.namespace), query=query)
        except KubeError as exc:
            raise _explain(exc, f"tasks in {self.namespace}") from None
        return [TaskView.of(item) for item in page.get("items") or ()]

    async def wait(
        self,
        names: str | Iterable[str],
        *,
        timeout: float = 300.0,  # noqa: ASYNC109 - a deadline for the whole wait, reported in the error
        until: Callable[[TaskView], bool] | None = None,
        poll: float = 0.5,
        progress: Callable[[dict[str, TaskView]], Awaitable[None] | None] | None = None,
    ) -> dict[str, TaskView]:
        """Wait until every named task is done (or `until` holds); raises ClientError on timeout."""
        wanted = [names] if isinstance(names, str) else list(names)
        check = until or (lambda view: view.done)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen: dict[str, TaskView] = {}
        while True:
            views = await self._read_many(wanted)
            missing = [n for n in wanted if n not in views]
            if missing:
                raise ClientError(f"task {missing[0]!r} does not exist in {self.namespace}")
            seen = {n: views[n] for n in wanted}
            if progress is not None:
                shown = progress(seen)
                if shown is not None:
                    await shown
            if all(check(v) for v in seen.values()):
                return seen
            if loop.time() >= deadline:
                waiting = [n for n, v in seen.items() if not check(v)]
                phases = ", ".join(f"{n}={seen[n].phase or 'new'}" for n in waiting[:5])
                hint = ""
                if all(seen[n].phase is None for n in waiting):
                    hint = (
                        "; no status was ever written on them: is the qorch operator running? "
                        "(kubectl -n qorch-system get lease qorch-operator)"
                    )
                raise ClientError(f"timed out after {timeout:g} s waiting for {len(waiting)} task(s): {phases}{hint}")
            await asyncio.sleep(poll)

    async def _read_many(self, names: Sequence[str]) -> dict[str, TaskView]:
        """The named tasks that exist: read one by one when few, else from one list of the namespace."""
        if len(names) > _FEW:
            return {v.name: v for v in await self.list()}
        views = {}
        for n in names:
            try:
                views[n] = TaskView.of(await self.api.call("GET", TASKS.path(self.namespace, n)))
            except ApiError as exc:
                if exc.status != _NOT_FOUND:
                    raise _explain(exc, f"task {n!r} in {self.namespace}") from None
            except KubeError as exc:
                raise _explain(exc, f"task {n!r} in {self.namespace}") from None
        return views

    async def approve(self, task: str, *, reason: str = "") -> str:
        """Record your approval of a task that requires one; returns the Approval's name."""
        return await self._decide(task, "Approve", reason)

    async def reject(self, task: str, *, reason: str = "") -> str:
        """Record your rejection; the task fails with reason Rejected."""
        return await self._decide(task, "Reject", reason)

    async def dead_letters(self) -> Sequence[TaskView]:
        """Tasks in the dead-letter queue: their attempts ran out (phase DeadLettered)."""
        return await self.list(phase=TaskPhase.DEAD_LETTERED)

    async def redrive(self, name: str) -> TaskView:
        """Give a DeadLettered task a fresh attempt budget (raises `spec.redrive` by one, compare-and-set).

        A task that is not dead-lettered is refused with a ClientError saying its phase.
        """
        for _ in range(5):  # a conflict means someone changed it meanwhile: read again
            view = await self.get(name)
            if view.phase != TaskPhase.DEAD_LETTERED:
                raise ClientError(
                    f"task {name!r} is {view.phase or 'new'}, not DeadLettered: only dead letters can be redriven"
                )
            body = {
                "metadata": {"resourceVersion": view.resource_version},
                "spec": {"redrive": max(view.spec.redrive or 0, view.status.redrives) + 1},
            }
            try:
                changed = await self.api.call(
                    "PATCH", TASKS.path(self.namespace, name), body=body, content_type=_MERGE, query=_MANAGER
                )
            except ApiError as exc:
                if exc.status == _CONFLICT:
                    continue
                raise _explain(exc, f"redrive task {name!r}") from None
            except KubeError as exc:
                raise _explain(exc, f"redrive task {name!r}") from None
            return TaskView.of(changed)
        raise ClientError(f"redrive task {name!r}: it kept changing under us; try again")

    async def policy(self) -> dict[str, Any]:
        """The SchedulingPolicy `default` as a body ({} when there is none); its status is what the leader published."""
        try:
            return await self.api.call("GET", _POLICIES.path(None, constants.DEFAULT_POLICY_NAME))
        except ApiError as exc:
            if exc.status == _NOT_FOUND:
                return {}
            raise _explain(exc, "SchedulingPolicy default") from None
        except KubeError as exc:
            raise _explain(exc, "SchedulingPolicy default") from None

    async def watch(self, kind: str = "tasks") -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(event type, body) for every change of the namespace's tasks or agents, after listing them once.

        Listed objects come first as ADDED; a watch the server ends is resumed from the last
        version seen; an expired version (410) lists again.
        """
        resource = TASKS if kind == "tasks" else AGENTS
        version = ""
        while True:
            if not version:
                try:
                    page = await self.api.call("GET", resource.path(self.namespace))
                except KubeError as exc:
                    raise _explain(exc, f"{kind} in {self.namespace}") from None
                for item in page.get("items") or ():
                    yield "ADDED", item
                version = str(page["metadata"]["resourceVersion"])
            query = {"watch": True, "resourceVersion": version, "allowWatchBookmarks": True, "timeoutSeconds": 300}
            try:
                async with self.api.stream(resource.path(self.namespace), query=query, timeout=330) as events:
                    async for event in events:
                        body = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            version = ""  # expired: list again
                            break
                        version = str((body.get("metadata") or {}).get("resourceVersion") or version)
                        if event.get("type") != "BOOKMARK":
                            yield str(event.get("type")), body
            except ApiError as exc:
                raise _explain(exc, f"watch {kind} in {self.namespace}") from None
            except KubeError:
                await asyncio.sleep(1.0)  # a dropped watch: resume from the last version seen

    async def cancel(self, name: str) -> TaskView:
        """Stop a task in any phase (sets `spec.cancel`); the operator writes Cancelled, the agent's handler stops.

        Cancelling a task that has ended already changes nothing and is not an error.
        """
        try:
            body = await self.api.call(
                "PATCH",
                TASKS.path(self.namespace, name),
                body={"spec": {"cancel": True}},
                content_type=_MERGE,
                query=_MANAGER,
            )
        except KubeError as exc:
            raise _explain(exc, f"cancel task {name!r}") from None
        return TaskView.of(body)

    async def whoami(self) -> str:
        """The user the apiserver sees (approvals must name it)."""
        if self._user is None:
            body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
            try:
                review = await self.api.call("POST", _REVIEW.path(), body=body)
            except KubeError as exc:
                raise _explain(exc, "who am I (SelfSubjectReview)") from None
            user = ((review.get("status") or {}).get("userInfo") or {}).get("username")
            if not user:
                raise ClientError("who am I: the apiserver's SelfSubjectReview named no user (needs Kubernetes 1.28+)")
            self._user = str(user)
        return self._user

    async def _decide(self, task: str, decision: str, reason: str) -> str:
        view = await self.get(task)  # a clear "not found" before anything is written
        user = await self.whoami()
        name = f"{task}-{decision.lower()}-{secrets.token_hex(3)}"[:253]
        # Bound to exactly what was read: this incarnation, at this generation (an edit since needs a new approval).
        spec: dict[str, Any] = {"taskRef": task, "decision": decision, "approver": user, "taskUID": view.uid}
        if view.generation:
            spec["taskGeneration"] = view.generation
        if reason:
            spec["reason"] = reason
        body = {"apiVersion": constants.API_VERSION, "kind": "Approval", "metadata": {"name": name}, "spec": spec}
        try:
            await self.api.call("POST", APPROVALS.path(self.namespace), body=body, query=_MANAGER)
        except KubeError as exc:
            raise _explain(exc, f"{decision.lower()} task {task!r}") from None
        return name


class SyncClient:
    """The same calls without async: a private event loop on a thread of its own."""

    def __init__(self, kubeconfig: str | None = None, namespace: str = "default") -> None:
        """Connect (see Client.connect)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="qorch-client", daemon=True)
        self._thread.start()
        self._client: Client = self._run(Client.connect(kubeconfig, namespace))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def submit(
        self, goal: str, *, name: str | None = None, labels: Mapping[str, str] | None = None, **spec: object
    ) -> str:
        """See Client.submit."""
        return self._run(self._client.submit(goal, name=name, labels=labels, **spec))

    def get(self, name: str) -> TaskView:
        """See Client.get."""
        return self._run(self._client.get(name))

    def list(self, *, phase: TaskPhase | str | None = None, selector: str = "") -> list[TaskView]:
        """See Client.list."""
        return self._run(self._client.list(phase=phase, selector=selector))

    def wait(self, names: str | Iterable[str], *, timeout: float = 300.0) -> dict[str, TaskView]:
        """See Client.wait."""
        return self._run(self._client.wait(names, timeout=timeout))

    def cancel(self, name: str) -> TaskView:
        """See Client.cancel."""
        return self._run(self._client.cancel(name))

    def dead_letters(self) -> Sequence[TaskView]:
        """See Client.dead_letters."""
        return self._run(self._client.dead_letters())

    def redrive(self, name: str) -> TaskView:
        """See Client.redrive."""
        return self._run(self._client.redrive(name))

    def approve(self, task: str, *, reason: str = "") -> str:
        """See Client.approve."""
        return self._run(self._client.approve(task, reason=reason))

    def reject(self, task: str, *, reason: str = "") -> str:
        """See Client.reject."""
        return self._run(self._client.reject(task, reason=reason))

    def close(self) -> None:
        """Close the connection and stop the loop."""
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        """Use as `with SyncClient() as c:`."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close on the way out."""
        self.close()
