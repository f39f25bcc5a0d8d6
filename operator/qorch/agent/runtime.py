"""The agent runtime: serves one Agent, runs the user's handlers on its tasks, by the protocol.

It creates its Agent (or attaches to one GitOps made, whose spec then wins),
renews the Lease `qorch-agent-<name>`, watches only the Tasks assigned to it
(a field selector on `status.assignment.agent`), claims each attempt with
compare-and-set, runs the handler for the task's capabilities with its
`input`, at most `capacity` at once and under `timeoutSeconds`, and writes the
result or a one-line error (docs/protocol.md). SIGTERM drains: nothing new is
claimed (offers are refused as Draining), running handlers get `grace_seconds`
to finish, the rest are reported failed so the operator retries them
elsewhere, and the Lease is released so the operator knows at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qorch import tracing
from qorch.agent.attempts import TASKS, Attempts, Claim, UnsettledClaimError
from qorch.api import constants, protocol
from qorch.api.agent import service_account_user
from qorch.controller.informer import Informer
from qorch.controller.kube import ApiError, KubeApi, KubeError, Resource, TransportError, load_config, sleep_backoff
from qorch.controller.store import stale

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from qorch.api.protocol import AttemptId

__all__ = ["AgentRuntime", "Handlers", "ProviderError", "RuntimeSettings", "TaskContext", "run_agent", "serve"]

log = logging.getLogger(__name__)
AGENTS = Resource(constants.GROUP, constants.VERSION, "agents")
LEASES = Resource("coordination.k8s.io", "v1", "leases")
_NOT_FOUND, _CONFLICT = 404, 409
_MERGE = "application/merge-patch+json"
_MANAGER = {"fieldManager": constants.AGENT_FIELD_MANAGER}
_SELF_SUBJECT_REVIEWS = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
_SA_USER = "system:serviceaccount:"


def own_service_account(user: str, namespace: str) -> str:
    """The ServiceAccount name of `user` when it is one of `namespace`'s, else ""."""
    prefix = f"{_SA_USER}{namespace}:"
    return user.removeprefix(prefix) if user.startswith(prefix) else ""


_CANCELLED = "Cancelled: spec.cancel was set while the handler ran"
_SHUT_DOWN = "the agent shut down before the attempt finished"
_RETRY_SECONDS = 1.0  # a claim or refusal the apiserver did not take is offered again after this


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a handler gets: the task's goal and input, and which attempt this is."""

    name: str
    namespace: str
    goal: str
    input: Mapping[str, Any]
    requires: tuple[str, ...]
    attempt: int
    agent: str
    #: Set when the attempt is cancelled, withdrawn or timed out. Python cannot stop a thread: a
    #: long sync handler should check it (`if task.stop.is_set(): return`) and end early.
    stop: threading.Event = field(default_factory=threading.Event, compare=False)


class ProviderError(Exception):
    """Raise from a handler when the LLM provider failed the attempt, not the agent or the task.

    `kind` names it (RateLimited, Unavailable, ServerError, ...). The attempt fails as
    any other, but it counts against the provider's circuit breaker (across all the
    provider's agents) instead of this agent's, so work fails over to other providers.
    """

    def __init__(self, kind: str, message: str = "") -> None:
        """`kind`: a CamelCase word, e.g. "RateLimited"; `message`: what the provider said."""
        if not kind.isalnum() or not kind[:1].isalpha() or len(kind) > 64:  # noqa: PLR2004 - the protocol's limit
            raise ValueError(f"ProviderError kind must be a CamelCase word of at most 64 letters, got {kind!r}")
        super().__init__(kind, message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        """`[Kind] message`: the runtime reports `ProviderError: [Kind] message` (qorch.api.protocol)."""
        return f"[{self.kind}] {self.message}".rstrip()


class Handlers:
    """Handlers by capability: a task runs the first registered for one of its requirements, else the default."""

    def __init__(self, default: Callable[[TaskContext], Any] | None = None) -> None:
        """Optionally with a handler for everything."""
        self._by_capability: dict[str, Callable[[TaskContext], Any]] = {}
        self.default = default

    def on(self, capability: str) -> Callable[[Callable[[TaskContext], Any]], Callable[[TaskContext], Any]]:
        """Decorator: handle tasks that require `capability` (sync or async)."""

        def register(fn: Callable[[TaskContext], Any]) -> Callable[[TaskContext], Any]:
            self._by_capability[capability] = fn
            return fn

        return register

    def for_task(self, requires: tuple[str, ...]) -> Callable[[TaskContext], Any] | None:
        """The handler for a task with these requirements, or None."""
        for cap in requires:
            found = self._by_capability.get(cap)
            if found is not None:
                return found
        return self.default

    @property
    def capabilities(self) -> tuple[str, ...]:
        """Capabilities with a handler of their own."""
        return tuple(self._by_capability)


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """Who the agent is and how it behaves."""

    name: str
    namespace: str
    capabilities: tuple[str, ...] = ()
    capacity: int = 1
    labels: Mapping[str, str] = field(default_factory=dict)
    lease_seconds: int = 10
    renew_seconds: float = 2.0
    grace_seconds: float = 10.0
    poll_seconds: float = 5.0  # a safety net under the watch: look at the tasks again this often


@dataclass(slots=True)
class _Running:
    claim: Claim
    job: asyncio.Task[tuple[str, str]]


class _Mine:
    """The tasks assigned to this agent, as the watch sees them (an informer sink).

    `wake`, when given, is set with `changed`: a fleet serving many agents waits on one event.
    """

    def __init__(self, wake: asyncio.Event | None = None) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.changed = asyncio.Event()
        self.wake = wake
        self.dirty: set[str] = set()  # changed since the last round looked
        self.rescan = True  # the next round looks at every task (after a list)
        self._listing: set[str] = set()

    def take(self, *, everything: bool) -> list[dict[str, Any]]:
        """The tasks a round should look at: those changed since the last one, or all of them."""
        if everything or self.rescan:
            self.rescan = False
            self.dirty.clear()
            return list(self.tasks.values())
        names, self.dirty = self.dirty, set()
        return [self.tasks[n] for n in names if n in self.tasks]

    def touch(self) -> None:
        self.changed.set()
        if self.wake is not None:
            self.wake.set()

    def upsert(self, body: Mapping[str, Any], *, listed: bool = False) -> None:
        name = str(body["metadata"]["name"])
        if listed:
            self._listing.add(name)
        held = self.tasks.get(name)
        if (
            held is not None
            and held["metadata"].get("uid") == body["metadata"].get("uid")
            and stale(str(body["metadata"]["resourceVersion"]), str(held["metadata"]["resourceVersion"]))
        ):
            return  # older than what our own write returned: the watch is catching up
        if (body.get("status") or {}).get("phase") in protocol.FINAL_PHASES:
            # Ended: nothing left to claim or report. Kept, every task the agent ever ran would
            # stay in memory and in every round's scan.
            self.delete(body)
            return
        self.tasks[name] = dict(body)
        self.dirty.add(name)
        self.touch()

    def own(self, body: Mapping[str, Any]) -> None:
        """What one of our own writes returned: newer than the watch may have shown yet (read your writes).

        Only a task still held is updated: an answer must not bring back one the watch deleted.
        """
        held = self.tasks.get(str(body["metadata"]["name"]))
        if held is not None and held["metadata"].get("uid") == body["metadata"].get("uid"):
            self.upsert(body)  # never over a recreated task of the same name

    def delete(self, body: Mapping[str, Any]) -> None:
        name = str(body["metadata"]["name"])
        self.tasks.pop(name, None)
        self.dirty.add(name)
        self.touch()

    def begin_list(self, namespace: str | None) -> None:
        del namespace
        self._listing = set()

    def end_list(self, namespace: str | None) -> None:
        del namespace
        for gone in set(self.tasks) - self._listing:
            del self.tasks[gone]
        self.rescan = True
        self.touch()


class AgentRuntime:
    """One agent: its Agent object, its Lease, its tasks and its handlers."""

    def __init__(
        self, api: KubeApi, settings: RuntimeSettings, handlers: Handlers, *, wake: asyncio.Event | None = None
    ) -> None:
        """Nothing talks to the apiserver until `run()`. `wake` is set whenever this agent has news."""
        self.api = api
        self.settings = settings
        self.handlers = handlers
        self.mine = _Mine(wake)
        self.attempts = Attempts(api, settings.namespace, seen=self.mine.own)
        self.capacity = settings.capacity
        self.running: dict[AttemptId, _Running] = {}
        self.unsettled: dict[AttemptId, UnsettledClaimError] = {}
        self.owed: dict[AttemptId, tuple[Claim, str, str]] = {}  # finishes the apiserver did not take yet
        self.claiming = 0
        self.offers: dict[AttemptId, asyncio.Task[None]] = {}  # claims and refusals on their way
        self.refused: set[str] = set()  # tasks refused for want of a slot: offered again when one frees
        self.lingering = 0  # sync handlers' threads still running after their attempt ended: slots taken
        self.closing = False  # drained: a claim that lands now is reported failed, never started
        self._looked = float("-inf")  # loop time of the last round that looked at every task
        self.reports: set[asyncio.Task[None]] = set()
        self.draining = False
        # Written as holderIdentity: another process serving the same Agent (a rollout's new pod)
        # is told apart, and a process releases the Lease only while it still holds it.
        self.identity = f"{settings.name}/{socket.gethostname()}-{os.getpid()}"

    @property
    def load(self) -> int:
        """Slots taken: handlers running, claims on their way or in doubt."""
        return len(self.running) + len(self.unsettled) + self.claiming + self.lingering

    async def attach(self) -> None:
        """Create the Agent, or attach to the existing one (its spec, e.g. from GitOps, wins).

        An Agent it creates names the ServiceAccount this process runs as (when it is one of
        the namespace's), so only that ServiceAccount may write its reports.
        """
        s = self.settings
        user = await self._whoami()
        try:
            body = await self.api.call("GET", AGENTS.path(s.namespace, s.name))
        except ApiError as exc:
            if exc.status != _NOT_FOUND:
                raise
            spec: dict[str, Any] = {"capabilities": list(s.capabilities), "capacity": s.capacity}
            if account := own_service_account(user, s.namespace):
                spec["serviceAccountName"] = account  # only this ServiceAccount may report (docs/protocol.md)
            meta = {"name": s.name, "labels": dict(s.labels)}
            body = {"apiVersion": constants.API_VERSION, "kind": "Agent", "metadata": meta, "spec": spec}
            try:
                body = await self.api.call("POST", AGENTS.path(s.namespace), body=body, query=_MANAGER)
            except ApiError as again:
                if again.status != _CONFLICT:
                    raise
                body = await self.api.call("GET", AGENTS.path(s.namespace, s.name))
        self.capacity = int((body.get("spec") or {}).get("capacity", s.capacity))
        log.info("serving Agent %s/%s (capacity %d)", s.namespace, s.name, self.capacity)
        named = str((body.get("spec") or {}).get("serviceAccountName") or "")
        if named and user.startswith(_SA_USER) and user != service_account_user(s.namespace, named):
            log.warning(
                "Agent %s/%s names ServiceAccount %s but this runtime runs as %s: the admission policy "
                "qorch-task-status-writer will refuse its reports (run it as that ServiceAccount, or change "
                "the Agent's spec.serviceAccountName)",
                s.namespace,
                s.name,
                named,
                user,
            )

    async def _whoami(self) -> str:
        """The user the apiserver knows this process as (a SelfSubjectReview); "" when it cannot say."""
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        try:
            body = await self.api.call("POST", _SELF_SUBJECT_REVIEWS, body=review)
        except KubeError as exc:
            log.debug("no SelfSubjectReview (%s): the Agent's ServiceAccount is not checked", exc)
            return ""
        return str(((body.get("status") or {}).get("userInfo") or {}).get("username") or "")

    def _lease_path(self, *, collection: bool = False) -> str:
        ns = self.settings.namespace
        return LEASES.path(ns) if collection else LEASES.path(ns, constants.AGENT_LEASE_PREFIX + self.settings.name)

    async def wait_for_lease(self, stop: asyncio.Event) -> None:
        """Before recovering claims: wait while another live process holds this agent's Lease.

        Its claims are its own; reporting them failed as "restarted" would undo live work. A
        holder is live while its Lease keeps changing (never judged by its clock).
        """
        seconds = self.settings.lease_seconds + 1
        while not stop.is_set():
            try:
                lease = await self.api.call("GET", self._lease_path())
            except ApiError as exc:
                if exc.status == _NOT_FOUND:
                    return
                raise
            holder = (lease.get("spec") or {}).get("holderIdentity")
            if not holder or holder == self.identity:
                return
            version = lease["metadata"]["resourceVersion"]
            log.info(
                "Lease of %s is held by %s; waiting up to %d s for it to lapse", self.settings.name, holder, seconds
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
            again = await self.api.call("GET", self._lease_path())
            if again["metadata"]["resourceVersion"] == version or not (again.get("spec") or {}).get("holderIdentity"):
                return  # lapsed or released

    async def renew(self) -> None:
        """Renew the liveness Lease (create it if missing), bounded well inside its duration."""
        s = self.settings
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": s.lease_seconds,
            "renewTime": protocol.timestamp(),
        }
        timeout = max(1.0, s.lease_seconds / 3)  # one hung call must not outlast the Lease
        try:
            await self.api.call(
                "PATCH", self._lease_path(), body={"spec": spec}, content_type=_MERGE, timeout=timeout, query=_MANAGER
            )
        except ApiError as exc:
            if exc.status != _NOT_FOUND:
                raise
            body = {"metadata": {"name": constants.AGENT_LEASE_PREFIX + s.name}, "spec": spec}
            await self.api.call("POST", self._lease_path(collection=True), body=body, timeout=timeout, query=_MANAGER)

    async def release(self) -> None:
        """Clear holderIdentity if this process still holds the Lease (compare-and-set on its version)."""
        lease = await self.api.call("GET", self._lease_path())
        if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return  # another process took over: its Lease is not ours to end
        body = {"metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]}, "spec": {"holderIdentity": None}}
        await self.api.call("PATCH", self._lease_path(), body=body, content_type=_MERGE, query=_MANAGER)

    async def recover(self) -> None:
        """After a restart: our claims with no finish cannot be vouched for; report them failed."""
        for task in list(self.mine.tasks.values()):
            execution = (task.get("status") or {}).get("execution") or {}
            if execution.get("agent") != self.settings.name:
                continue
            attempt = protocol.current(task, self.settings.name)
            if attempt is None or execution.get("finishedAt") or execution.get("refused"):
                continue
            if attempt in self.running or attempt in self.offers or attempt in self.unsettled:
                continue  # ours and alive in this process: not an orphan
            if int(execution.get("attempt") or 0) != attempt.attempt or not execution.get("startedAt"):
                continue
            claim = Claim(attempt, self.settings.name, task["metadata"]["name"], str(execution["startedAt"]))
            self.owed[attempt] = (claim, "", "the agent restarted while running this attempt")

    async def round(self) -> None:
        """Settle doubtful claims, report owed finishes, claim (or refuse) what is offered."""
        for attempt, doubt in list(self.unsettled.items()):
            landed = await self.attempts.settle(doubt)
            if landed is None:
                continue
            del self.unsettled[attempt]
            body = self.mine.tasks.get(doubt.claim.task)
            if not landed:
                self._retry_soon(doubt.claim.task)  # never landed: offered afresh
            elif body is not None and body["metadata"].get("uid") == attempt.task_uid:
                self._start(doubt.claim, body)  # else the task went away meanwhile: nothing to run
        for attempt, (claim, result, error) in list(self.owed.items()):
            with contextlib.suppress(KubeError):  # still owed: the next round tries again
                await self.attempts.finish(claim, result=result, error=error)
                del self.owed[attempt]
        for attempt, running in list(self.running.items()):
            self._stop_if_withdrawn(attempt, running)
        # Every task once per poll period (a safety net under the watch); else only what changed.
        now = asyncio.get_running_loop().time()
        everything = now - self._looked >= self.settings.poll_seconds
        if everything:
            self._looked = now
        for task in self.mine.take(everything=everything):
            self._offer(task)

    def _stop_if_withdrawn(self, attempt: AttemptId, running: _Running) -> None:
        """Cancel the handler of an attempt that is no longer ours to run, or that the user cancelled."""
        if running.job.done() or running.job.cancelling():
            return
        task = self.mine.tasks.get(running.claim.task)
        if task is None or protocol.current(task, self.settings.name) != attempt:
            log.info("cancelled %s attempt %d: withdrawn", running.claim.task, attempt.attempt)
            running.job.cancel()  # judged lost, reassigned, deleted or cancelled: its report will not land
        elif protocol.cancelled(task):
            log.info("cancelled %s attempt %d: spec.cancel", running.claim.task, attempt.attempt)
            running.job.cancel(_CANCELLED)  # the operator writes Cancelled; the report says why it stopped

    def _offer(self, task: dict[str, Any]) -> None:
        """Decide at once whether to claim or refuse what is offered; the write goes on its own task.

        Offers are answered concurrently (a round does not wait for one claim's round trip
        before the next), and the slot is counted from this check, so capacity still holds.
        """
        me = self.settings.name
        attempt = protocol.claimable(task, me)
        if attempt is None or attempt in self.offers:
            return
        if attempt in self.running or attempt in self.unsettled or attempt in self.owed:
            return
        requires = tuple((task.get("spec") or {}).get("requires") or ())
        refusal: tuple[str, str] | None = None
        if self.draining:
            refusal = (protocol.DRAINING, f"{me} is shutting down")
        elif self.handlers.for_task(requires) is None:
            refusal = (protocol.NO_HANDLER, f"{me} has no handler for [{', '.join(requires)}]")
        elif self.load >= self.capacity:
            refusal = (protocol.OVER_CAPACITY, f"{me} already runs {self.load} of {self.capacity} attempts")
            self.refused.add(str(task["metadata"]["name"]))
        if refusal is not None:
            report = protocol.Report.of((task.get("status") or {}).get("execution"))
            if report is not None and report.attempt == attempt.attempt and report.refused == refusal[0]:
                return  # said already: the operator has not taken it back yet
            job = asyncio.create_task(self._refuse(task, *refusal))
        else:
            self.claiming += 1  # the slot is held from this check to the claim's answer
            job = asyncio.create_task(self._claim(task, attempt))
        self.offers[attempt] = job
        job.add_done_callback(lambda _: self.offers.pop(attempt, None))

    def _retry_soon(self, name: str) -> None:
        """Offer `name` again after a short pause: a round is asked for then, not left to chance."""
        self.mine.dirty.add(name)
        asyncio.get_running_loop().call_later(_RETRY_SECONDS, self.mine.touch)

    async def _refuse(self, task: dict[str, Any], reason: str, message: str) -> None:
        if not await self.attempts.refuse(task, self.settings.name, reason=reason, message=message):
            self._retry_soon(str(task["metadata"]["name"]))  # not taken (or not ours any more: a no-op then)

    async def _claim(self, task: dict[str, Any], attempt: AttemptId) -> None:
        asked = time.time()
        try:
            claim = await self.attempts.claim(task, self.settings.name)
        except UnsettledClaimError as doubt:
            self.unsettled[attempt] = doubt  # holds the slot until settled
            log.warning("%s; settling it later", doubt)
            return
        except KubeError as exc:  # one task the apiserver refuses must not stop the others
            log.warning("claim of %s: %s", task["metadata"]["name"], exc)
            self._retry_soon(str(task["metadata"]["name"]))
            return
        finally:
            self.claiming -= 1
        if claim is not None:
            self._start(claim, task)  # first: nothing may come between a landed claim and its run
            if tracing.enabled():
                step: dict[str, str | int] = {
                    "qorch.task": claim.task,
                    "qorch.agent": claim.agent,
                    "qorch.attempt": attempt.attempt,
                }
                tracing.step("qorch.task.claimed", attempt.task_uid, start=asked, end=time.time(), attributes=step)

    def _start(self, claim: Claim, task: Mapping[str, Any]) -> None:
        spec = task.get("spec") or {}
        context = TaskContext(
            name=claim.task,
            namespace=self.settings.namespace,
            goal=str(spec.get("goal", "")),
            input=dict(spec.get("input") or {}),
            requires=tuple(spec.get("requires") or ()),
            attempt=claim.attempt.attempt,
            agent=claim.agent,
        )
        if self.closing:  # landed after the drain: report it failed so the operator retries it at once
            self.owed[claim.attempt] = (claim, "", _SHUT_DOWN)
            return
        timeout = spec.get("timeoutSeconds")
        job = asyncio.create_task(self._run(context, float(timeout) if timeout else None, claim.attempt.task_uid))
        running = self.running[claim.attempt] = _Running(claim, job)
        job.add_done_callback(lambda _: self._spawn_report(claim.attempt))
        log.info("running %s attempt %d", claim.task, claim.attempt.attempt)
        self._stop_if_withdrawn(claim.attempt, running)  # cancelled or deleted while the claim was on its way

    def _spawn_report(self, attempt: AttemptId) -> None:
        report = asyncio.create_task(self._report(attempt))
        self.reports.add(report)
        report.add_done_callback(self.reports.discard)

    async def _run(self, context: TaskContext, limit_s: float | None, uid: str) -> tuple[str, str]:
        """(result, error) of the handler; the error is one line naming the exception."""
        handler = self.handlers.for_task(context.requires)
        if handler is None:
            return "", f"NoHandler: {context.agent} has no handler for [{', '.join(context.requires)}]"
        traced: dict[str, str | int] = {
            "qorch.task": f"{context.namespace}/{context.name}",
            "qorch.agent": context.agent,
            "qorch.attempt": context.attempt,
        }
        try:
            with tracing.handler(uid, traced):
                if inspect.iscoroutinefunction(handler):
                    value = await asyncio.wait_for(handler(context), limit_s)
                else:
                    value = await self._in_thread(handler, context, limit_s)
            return (value if isinstance(value, str) else json.dumps(value, default=str)), ""
        except TimeoutError:
            context.stop.set()
            return "", f"TimeoutError: the handler ran longer than timeoutSeconds={limit_s:g}"
        except asyncio.CancelledError as stop:
            context.stop.set()
            return "", (str(stop.args[0]) if stop.args else _SHUT_DOWN)
        except ProviderError as exc:  # a subclass too: the operator reads the kind, not the class name
            return "", f"{protocol.PROVIDER_ERROR}: {exc}"
        except Exception as exc:  # noqa: BLE001 - the user's handler (or its result) may fail anyhow; it is reported
            return "", f"{type(exc).__name__}: {exc}"

    async def _settle_doubts(self) -> None:
        """Claims still in doubt at shutdown: one that landed is reported failed, never left claimed."""
        for attempt, doubt in list(self.unsettled.items()):
            with contextlib.suppress(KubeError):
                landed = await self.attempts.settle(doubt)
                if landed is not None:
                    del self.unsettled[attempt]
                if landed:
                    self.owed[attempt] = (doubt.claim, "", _SHUT_DOWN)

    async def _in_thread(
        self, handler: Callable[[TaskContext], Any], context: TaskContext, limit_s: float | None
    ) -> Any:  # noqa: ANN401
        """A sync handler on a thread; its slot stays taken until the thread returns.

        If the attempt ends first (timeout, cancel), the thread cannot be stopped: it is reported
        at once, `context.stop` is set, and capacity still counts it until it returns.
        """
        thread = asyncio.ensure_future(asyncio.to_thread(handler, context))
        try:
            return await asyncio.wait_for(asyncio.shield(thread), limit_s)
        except BaseException:
            if not thread.done():
                self.lingering += 1
                thread.add_done_callback(self._thread_returned)
            raise

    def _thread_returned(self, thread: asyncio.Future[Any]) -> None:
        self.lingering -= 1
        if not thread.cancelled():
            thread.exception()  # retrieved: the attempt was reported already
        self.mine.dirty |= self.refused  # a slot is free
        self.refused.clear()
        self.mine.touch()

    async def _report(self, attempt: AttemptId) -> None:
        running = self.running.get(attempt)
        if running is None:
            return
        try:
            result, error = running.job.result()
        except BaseException as exc:  # noqa: BLE001 - whatever ended the job, the attempt is reported and the slot freed
            result, error = "", f"the agent failed while running the attempt: {type(exc).__name__}: {exc}"
        try:
            known = self.mine.tasks.get(running.claim.task)
            await self.attempts.finish(running.claim, result=result, error=error, known=known)
        except KubeError as exc:
            log.warning("finish of %s not taken yet, will retry: %s", attempt, exc)
            self.owed[attempt] = (running.claim, result, error)
        finally:
            self.running.pop(attempt, None)
            self.mine.dirty |= self.refused  # a slot is free: what was refused for want of one may be taken
            self.refused.clear()
            self.mine.touch()

    async def drain(self) -> None:
        """Stop taking work (offers are refused), let handlers finish within the grace, hand back the rest."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.grace_seconds
        if self.offers:  # claims on their way land (and run) or not before the grace is counted out
            await asyncio.wait(set(self.offers.values()), timeout=self.settings.grace_seconds)
        if self.running:
            log.info("draining: %d attempt(s) running, %.0f s grace", len(self.running), self.settings.grace_seconds)
        while self.running and loop.time() < deadline:
            with contextlib.suppress(KubeError):
                await self.round()  # refuses new offers, reports owed finishes
            await asyncio.sleep(0.2)
        self.closing = True  # from here a claim that lands is reported failed, not started
        await self._settle_doubts()
        jobs = [running.job for running in self.running.values()]
        for job in jobs:
            job.cancel()  # reported as "the agent shut down before the attempt finished"
        if jobs:
            await asyncio.wait(jobs)
        await asyncio.sleep(0)  # the jobs' done-callbacks start their reports
        if self.reports:
            await asyncio.wait(set(self.reports), timeout=30)
        for attempt, (claim, result, error) in list(self.owed.items()):
            with contextlib.suppress(KubeError):
                await self.attempts.finish(claim, result=result, error=error)
                del self.owed[attempt]


async def _every(seconds: float, stop: asyncio.Event, step: Callable[[], Awaitable[None]], what: str) -> None:
    """Run `step` every `seconds` until `stop`; a failure is logged and retried sooner, never fatal."""
    while not stop.is_set():
        wait = seconds
        try:
            await step()
        except KubeError as exc:
            log.warning("%s: %s", what, exc)
            wait = min(seconds, 0.5)
        except Exception:
            log.exception("%s failed", what)
            wait = min(seconds, 0.5)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)


def _transient(exc: KubeError) -> bool:
    """No answer, or the apiserver's "not now" (5xx, 429): worth asking again."""
    if isinstance(exc, TransportError):
        return True
    return exc.status is not None and (exc.status >= 500 or exc.status == 429)  # noqa: PLR2004 - HTTP's own


async def _starting(step: Callable[[], Awaitable[None]], stop: asyncio.Event, what: str) -> None:
    """A start-up step, retried with backoff while the apiserver is away (restarting, say) and not stopped.

    Without it one refused connection at start-up ended the process with a traceback (found by
    bench/soak.py: runtimes restarted during an apiserver restart exited instead of serving).
    """
    attempt = 0
    while True:
        try:
            await step()
        except KubeError as exc:
            if not _transient(exc) or stop.is_set():
                raise
            attempt += 1
            log.warning("%s: %s; trying again", what, exc)
            await sleep_backoff(attempt, cap=5.0)
        else:
            return


async def run_agent(api: KubeApi, settings: RuntimeSettings, handlers: Handlers, stop: asyncio.Event) -> None:
    """Serve until `stop` is set, then drain and release the Lease.

    Renewals have their own stop, set only after the drain: the agent stays alive in the
    operator's eyes while it finishes or hands back its work.
    """
    if not tracing.enabled():
        tracing.configure("qorch-agent")  # on only with an OTLP endpoint in the environment
    agent = AgentRuntime(api, settings, handlers)
    await _starting(agent.attach, stop, "attaching to the Agent")
    await _starting(lambda: agent.wait_for_lease(stop), stop, "reading the Lease")
    renewing = asyncio.Event()
    renewals = asyncio.create_task(_every(settings.renew_seconds, renewing, agent.renew, "lease renewal"))
    informer = Informer(
        api, TASKS, agent.mine, namespace=settings.namespace, field_selector=f"status.assignment.agent={settings.name}"
    )
    watch = asyncio.create_task(informer.run())
    try:
        synced = asyncio.create_task(informer.synced.wait())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([synced, stopped], return_when=asyncio.FIRST_COMPLETED)
        synced.cancel()
        stopped.cancel()
        if informer.synced.is_set():
            await _starting(agent.recover, stop, "recovering orphaned claims")
        while not stop.is_set():
            agent.mine.changed.clear()
            try:
                await agent.round()
            except KubeError as exc:
                log.warning("agent round: %s", exc)
            except Exception:
                log.exception("agent round failed")
            waits = [asyncio.create_task(agent.mine.changed.wait()), asyncio.create_task(stop.wait())]
            await asyncio.wait(waits, timeout=settings.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
        await agent.drain()
    finally:
        renewing.set()
        watch.cancel()
        await asyncio.gather(renewals, watch, return_exceptions=True)
        try:
            await agent.release()  # the operator takes the agent as gone at once
        except Exception as exc:  # noqa: BLE001 - exiting anyway; the Lease then lapses on its own
            log.warning("could not release the Lease: %s", exc)
    log.info("agent %s stopped", settings.name)


async def _serve(settings: RuntimeSettings, handlers: Handlers, kubeconfig: str | None) -> None:
    from kubernetes_asyncio import client  # noqa: PLC0415 - only a running agent needs the client

    await load_config(kubeconfig)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with client.ApiClient() as api_client:
        api = KubeApi(api_client)
        try:
            await run_agent(api, settings, handlers, stop)
        finally:
            await api.close()


def serve(settings: RuntimeSettings, handlers: Handlers, kubeconfig: str | None = None) -> None:
    """Run the agent until SIGTERM or Ctrl-C (the entry point of `qorch agent run`)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(settings, handlers, kubeconfig))
