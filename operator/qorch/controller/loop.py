"""The central scheduling loop: one loop for the whole cluster, woken by events and a tick.

No per-object handlers, timers or daemons: watch events only update the
indexes (`state`) and poke this loop. Only the leader runs cycles. A cycle:

1. gate: tasks waiting for an approval or for dependencies get their phase;
2. progress: the execution an agent reported moves its task to Running,
   Succeeded or Failed (or back to the queue for another attempt);
3. liveness: agents whose Lease went stale become NotReady, and their tasks
   that had not started go back to the queue (running ones count as a failed
   attempt);
4. schedule: queued tasks (not already being written) go through one
   scheduler-core cycle against a snapshot of ready agents;
5. write: assignments and reasons to Task status, phases and load to Agent
   status, all compare-and-set on the version the decision was made on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from qorch.api.enums import AgentPhase, Strategy, TaskPhase
from qorch.controller import metrics
from qorch.controller.state import ACTIVE_PHASES
from qorch.controller.writer import Outcome
from qorch.scheduler import Policy, Snapshot, TaskBatch, schedule

if TYPE_CHECKING:
    from qorch.controller.events import EventRecorder
    from qorch.controller.leader import LeaderElector
    from qorch.controller.state import AgentRecord, ClusterState, Key, TaskRecord
    from qorch.controller.writer import StatusWriter

__all__ = ["NAMESPACE_LABEL", "SchedulingLoop"]

log = logging.getLogger(__name__)
NAMESPACE_LABEL = "qorch.io/namespace"  # synthetic: tasks only run on agents of their own namespace
TASKS, AGENTS = "tasks", "agents"
_GATED = frozenset(
    {None, TaskPhase.PENDING.value, TaskPhase.BLOCKED.value, TaskPhase.AWAITING_APPROVAL.value, TaskPhase.QUEUED.value}
)
_FAILED_DEPENDENCY = frozenset({TaskPhase.FAILED.value, TaskPhase.DEAD_LETTERED.value, TaskPhase.CANCELLED.value})


def _stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(status: str, reason: str, message: str, when: dt.datetime, generation: int) -> dict[str, Any]:
    return {
        "type": "Scheduled",
        "status": status,
        "reason": reason,
        "message": message[:1024],
        "lastTransitionTime": _stamp(when),
        "observedGeneration": generation,
    }


@dataclass(slots=True)
class _Write:
    plural: str
    key: Key
    resource_version: str
    status: dict[str, Any]
    assigned_to: Key | None = None
    created: dt.datetime | None = None
    event: tuple[TaskRecord, bool, str, str] | None = None  # (task, warning, reason, message) once written


@dataclass(slots=True)
class SchedulingLoop:
    """Decides and writes; everything it knows comes from `state`."""

    state: ClusterState
    writer: StatusWriter
    elector: LeaderElector
    events: EventRecorder | None = None
    tick: float = 1.0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    pending: dict[Key, tuple[str, Key]] = field(default_factory=dict)  # task -> (rv decided on, agent)
    cycles: int = 0
    deciding: float = 0.0  # seconds the last cycle spent deciding (before its writes)

    def poke(self) -> None:
        """Something changed: run a cycle soon."""
        self.wake.set()

    async def run(self) -> None:
        """Cycle whenever poked (and on every tick), while leading.

        Cycles are paced: after one that took d seconds the next waits at least 2d. Events
        arriving meanwhile are batched into that next cycle, and the watch handlers (which
        share this process) always get at least two thirds of its time, so the indexes
        never fall behind the operator's own writes.
        """
        pause = 0.0
        while True:
            if pause:
                await asyncio.sleep(pause)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.tick)
            self.wake.clear()
            if not self.elector.leading.is_set():
                pause = 0.0
                continue
            started = time.perf_counter()
            try:
                await self.cycle()
            except Exception:  # a bad cycle must not kill the loop; the next one re-reads
                log.exception("scheduling cycle failed")
            metrics.CYCLE_SECONDS.observe(time.perf_counter() - started)
            pause = min(2.0 * self.deciding, 5.0)  # pace by CPU spent deciding, not by time waiting on writes

    async def cycle(self) -> None:
        """One pass of the numbered steps."""
        started = time.perf_counter()
        now = dt.datetime.now(dt.UTC)
        self._forget_settled()
        # 1. Gate: approvals and dependencies decide whether a task may be queued.
        queued, writes = self._gate_all(now)
        # 2. Progress: what agents reported (execution) moves Assigned/Running tasks on.
        writes += self._progress_all(now)
        # 3. Liveness: who can take work, who lost theirs, and every agent's load.
        ready = {key: self._ready(agent, now) for key, agent in self.state.agents.items()}
        active, lost = self._liveness(ready, {w.key for w in writes}, now)
        writes += lost
        # 4. Schedule the queued tasks against ready agents with the scheduler core.
        if queued and self.state.agents:
            # CPU-bound: run it off the event loop so watch events keep flowing meanwhile. The
            # records are replaced, never mutated, by watch events, so a list of them is a
            # consistent view for the worker thread.
            agents = list(self.state.agents.values())
            decided = await asyncio.to_thread(self._decide, queued, agents, ready, active, now)
            for w in decided:  # the agents' reported load includes this cycle's new assignments
                if w.assigned_to is not None:
                    active[w.assigned_to] = active.get(w.assigned_to, 0) + 1
            writes += decided
        # 5. Write: tasks first (they carry the decisions), then agents' phases and load.
        writes += self._agent_writes(ready, active, now)
        self.deciding = time.perf_counter() - started
        await self._flush(writes)
        self._publish_phase_gauges()
        self.cycles += 1

    def _gate_all(self, now: dt.datetime) -> tuple[list[TaskRecord], list[_Write]]:
        queued: list[TaskRecord] = []
        writes: list[_Write] = []
        for task in self.state.tasks.values():
            if task.phase not in _GATED or self._busy(task):
                continue
            phase, reason, message = self._gate(task)
            if phase == TaskPhase.QUEUED.value:
                queued.append(task)  # step 4 writes Assigned, or Queued with the reason
            elif task.phase != phase or task.scheduled_reason != reason:
                writes.append(
                    _Write(
                        TASKS,
                        task.key,
                        task.resource_version,
                        {
                            "phase": phase,
                            "observedGeneration": task.generation,
                            "conditions": [_condition("False", reason, message, now, task.generation)],
                        },
                    )
                )
        return queued, writes

    def _progress_all(self, now: dt.datetime) -> list[_Write]:
        writes = []
        for task in self.state.tasks.values():
            if task.phase in ACTIVE_PHASES and not self._busy(task):
                progressed = self._progress(task, now)
                if progressed is not None:
                    writes.append(progressed)
        return writes

    def _liveness(
        self, ready: dict[Key, bool], moving: set[Key], now: dt.datetime
    ) -> tuple[dict[Key, int], list[_Write]]:
        active: dict[Key, int] = {}
        writes = []
        for task in self.state.tasks.values():
            if task.phase in ACTIVE_PHASES and task.agent and task.key not in moving:
                agent_key = (task.namespace, task.agent)
                if not ready.get(agent_key, False) and not self._busy(task):
                    writes.append(self._requeue_write(task, now))
                    continue
                active[agent_key] = active.get(agent_key, 0) + 1
        for _, agent_key in self.pending.values():
            active[agent_key] = active.get(agent_key, 0) + 1
        return active, writes

    # ------------------------------------------------------------------ steps
    def _gate(self, task: TaskRecord) -> tuple[str, str, str]:
        if task.approval_required:
            decision = self.state.approvals.get(task.key)
            if decision == "Reject":
                return TaskPhase.CANCELLED.value, "ApprovalRejected", "an Approval rejected this task"
            if decision != "Approve":
                return (
                    TaskPhase.AWAITING_APPROVAL.value,
                    "AwaitingApproval",
                    (f"create an Approval with taskRef {task.name} to let it run"),
                )
        for dep in task.depends_on:
            other = self.state.tasks.get((task.namespace, dep))
            if other is None:
                return TaskPhase.BLOCKED.value, "DependencyPending", f"waiting for task {dep} to exist"
            if other.phase in _FAILED_DEPENDENCY:
                return TaskPhase.BLOCKED.value, "DependencyFailed", f"dependency {dep} ended {other.phase}"
            if other.phase != TaskPhase.SUCCEEDED.value:
                return TaskPhase.BLOCKED.value, "DependencyPending", f"waiting for {dep} to succeed"
        return TaskPhase.QUEUED.value, "", ""

    def _progress(self, task: TaskRecord, now: dt.datetime) -> _Write | None:
        started, finished = task.current_execution()
        if finished:
            attempts = max(task.attempts, 1)
            if not task.exec_error:
                phase, reason, message = TaskPhase.SUCCEEDED.value, "Succeeded", f"completed by {task.agent}"
            elif attempts < task.max_attempts:
                phase, reason, message = TaskPhase.QUEUED.value, "AttemptFailed", task.exec_error
            else:
                phase, reason, message = TaskPhase.FAILED.value, "AttemptsExhausted", task.exec_error
            status: dict[str, Any] = {
                "phase": phase,
                "attempts": attempts,
                "conditions": [
                    _condition("False" if phase != "Succeeded" else "True", reason, message, now, task.generation)
                ],
            }
            if phase == TaskPhase.QUEUED.value:
                status["assignment"] = None  # retried from scratch; backoff belongs to the workflow layer
            return _Write(TASKS, task.key, task.resource_version, status)
        if started and task.phase == TaskPhase.ASSIGNED.value:
            return _Write(
                TASKS,
                task.key,
                task.resource_version,
                {
                    "phase": TaskPhase.RUNNING.value,
                    "attempts": task.attempts + 1,
                },
            )
        return None

    def _ready(self, agent: AgentRecord, now: dt.datetime) -> bool:
        beat = self.state.heartbeats.get((agent.namespace, agent.name))
        grace = self.state.policy.agent_grace_seconds
        return not agent.cordoned and beat is not None and (now - beat).total_seconds() <= grace

    def _decide(
        self,
        queued: list[TaskRecord],
        agents: list[AgentRecord],
        ready: dict[Key, bool],
        active: dict[Key, int],
        now: dt.datetime,
    ) -> list[_Write]:
        snapshot = Snapshot.build(
            names=[f"{a.namespace}/{a.name}" for a in agents],
            capabilities=[a.capabilities for a in agents],
            capacity=[a.capacity for a in agents],
            active=[active.get((a.namespace, a.name), 0) for a in agents],
            clearance=[a.clearance for a in agents],
            ready=[ready.get((a.namespace, a.name), False) for a in agents],  # may have joined since
            success_rate=[a.success_rate for a in agents],
            cost=[a.cost for a in agents],
            latency_ms=[a.latency_ms for a in agents],
            groups=[a.group for a in agents],
            labels=[{**dict(a.labels), NAMESPACE_LABEL: a.namespace} for a in agents],
        )
        policy_record = self.state.policy
        batch = TaskBatch.build(
            snapshot,
            names=[f"{t.namespace}/{t.name}" for t in queued],
            requires=[t.requires for t in queued],
            priority=[t.priority for t in queued],
            classification=[t.classification for t in queued],
            deadline_s=[(t.deadline - now).total_seconds() if t.deadline else np.inf for t in queued],
            waited_s=[(now - t.created).total_seconds() for t in queued],
            namespaces=[t.namespace for t in queued],
            selectors=[_scoped_selector(t) for t in queued],
            groups=[t.group for t in queued],
            max_cost=[t.max_cost for t in queued],
        )
        policy = Policy(
            strategy=Strategy(policy_record.strategy),
            temperature=policy_record.temperature,
            seed=policy_record.seed + self.cycles,
            batch_size=policy_record.batch_size,
            weights={**Policy().weights, **policy_record.weights},
        )
        result = schedule(snapshot, batch, policy)
        for name, value in (
            ("entropy", result.observables.entropy),
            ("coherence", result.observables.coherence),
            ("fidelity", result.observables.fidelity),
        ):
            metrics.OBSERVABLE.labels(name).set(value)
        writes: list[_Write] = []
        by_class: dict[int, list[dict[str, Any]]] = {}  # candidates are the same for a whole task class
        for i, task in enumerate(queued):
            if result.heads[i] < 0:
                continue  # not in this cycle's batch: leave it alone, a later cycle decides it
            agent_row = int(result.agent_of[i])
            class_id = int(batch.class_of[i])
            candidates = by_class.get(class_id)
            if candidates is None:
                candidates = by_class[class_id] = [
                    {
                        "agent": c.agent.split("/", 1)[1],
                        "score": round(c.score, 4),
                        "probability": round(c.probability, 4),
                    }
                    for c in result.explain(i).candidates
                ]
            if agent_row >= 0:
                agent = agents[agent_row]
                summary = (
                    f"assigned to {agent.name} (score {result.score[i]:.3f}, probability "
                    f"{result.probability[i]:.3f}) by {result.strategy} among the candidates listed"
                )
                writes.append(
                    _Write(
                        TASKS,
                        task.key,
                        task.resource_version,
                        {
                            "phase": TaskPhase.ASSIGNED.value,
                            "assignment": {
                                "agent": agent.name,
                                "epoch": self.elector.epoch,
                                "assignedAt": _stamp(now),
                                "score": round(float(result.score[i]), 4),
                                "probability": round(float(result.probability[i]), 4),
                                "strategy": result.strategy,
                            },
                            "explanation": {
                                "summary": summary,
                                "candidates": candidates,
                            },
                            "conditions": [
                                _condition("True", "Scheduled", f"assigned to {agent.name}", now, task.generation)
                            ],
                            "observedGeneration": task.generation,
                        },
                        assigned_to=(agent.namespace, agent.name),
                        created=task.created,
                        event=(task, False, "Scheduled", summary),
                    )
                )
                continue
            reason = result.reason(i) or ("CapacityExhausted", "")
            if task.scheduled_reason != reason[0] or task.phase != TaskPhase.QUEUED.value:
                writes.append(
                    _Write(
                        TASKS,
                        task.key,
                        task.resource_version,
                        {
                            "phase": TaskPhase.QUEUED.value,
                            "explanation": {"summary": f"{reason[0]}: {reason[1]}"[:1024], "candidates": candidates},
                            "conditions": [_condition("False", reason[0], reason[1], now, task.generation)],
                            "observedGeneration": task.generation,
                        },
                        event=(task, True, "Unschedulable", f"{reason[0]}: {reason[1]}"),
                    )
                )
        return writes

    def _requeue_write(self, task: TaskRecord, now: dt.datetime) -> _Write:
        if task.phase == TaskPhase.RUNNING.value:  # a started attempt is lost: it counts as failed
            attempts = max(task.attempts, 1)  # counted when it started; losing it adds no second attempt
            final = attempts >= task.max_attempts
            return _Write(
                TASKS,
                task.key,
                task.resource_version,
                {
                    "phase": TaskPhase.FAILED.value if final else TaskPhase.QUEUED.value,
                    "attempts": attempts,
                    "assignment": None,
                    "conditions": [
                        _condition(
                            "False",
                            "AgentLost",
                            f"agent {task.agent} stopped renewing its Lease while the task ran",
                            now,
                            task.generation,
                        )
                    ],
                },
            )
        return _Write(
            TASKS,
            task.key,
            task.resource_version,
            {
                "phase": TaskPhase.QUEUED.value,
                "assignment": None,
                "conditions": [
                    _condition(
                        "False",
                        "AgentNotReady",
                        f"agent {task.agent} became NotReady before starting the task",
                        now,
                        task.generation,
                    )
                ],
            },
        )

    def _agent_writes(self, ready: dict[Key, bool], active: dict[Key, int], now: dt.datetime) -> list[_Write]:
        writes = []
        for key, agent in self.state.agents.items():
            if self.writer.busy(AGENTS, key, agent.resource_version):
                continue
            phase = (
                AgentPhase.CORDONED if agent.cordoned else AgentPhase.READY if ready[key] else AgentPhase.NOT_READY
            ).value
            load = active.get(key, 0)
            if agent.phase == phase and agent.active_tasks == load and agent.observed_generation == agent.generation:
                continue
            beat = self.state.heartbeats.get(key)
            status: dict[str, Any] = {
                "phase": phase,
                "activeTasks": load,
                "observedGeneration": agent.generation,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True" if phase == "Ready" else "False",
                        "reason": phase if beat else "NoHeartbeat",
                        "message": "" if beat else "no Lease qorch-agent-" + agent.name + " yet",
                        "lastTransitionTime": _stamp(now),
                        "observedGeneration": agent.generation,
                    }
                ],
            }
            if beat is not None:
                status["lastHeartbeat"] = _stamp(beat)
            writes.append(_Write(AGENTS, key, agent.resource_version, status))
        return writes

    # ------------------------------------------------------------------ writing
    def _busy(self, task: TaskRecord) -> bool:
        return task.key in self.pending or self.writer.busy(TASKS, task.key, task.resource_version)

    def _forget_settled(self) -> None:
        """Drop pending assignments whose write came back through the watch (or was overtaken)."""
        for key, (rv, _) in list(self.pending.items()):
            task = self.state.tasks.get(key)
            if task is None or task.resource_version != rv:
                del self.pending[key]
        for key, task in self.state.tasks.items():
            self.writer.settle(TASKS, key, task.resource_version)
        for key, agent in self.state.agents.items():
            self.writer.settle(AGENTS, key, agent.resource_version)

    async def _flush(self, writes: list[_Write]) -> None:
        for w in writes:
            if w.assigned_to is not None:
                self.pending[w.key] = (w.resource_version, w.assigned_to)
        outcomes = await asyncio.gather(
            *(self.writer.patch(w.plural, w.key, w.resource_version, w.status) for w in writes)
        )
        done = dt.datetime.now(dt.UTC)
        events = []
        for w, outcome in zip(writes, outcomes, strict=True):
            if w.event is not None and outcome is Outcome.WRITTEN and self.events is not None:
                task, warning, reason, message = w.event
                events.append(self.events.task(task, warning=warning, reason=reason, message=message))
            if w.assigned_to is None:
                continue
            if outcome is Outcome.WRITTEN:
                metrics.ASSIGNMENTS.inc()
                if w.created is not None:
                    metrics.CREATE_TO_ASSIGNED_SECONDS.observe(max(0.0, (done - w.created).total_seconds()))
            else:
                self.pending.pop(w.key, None)  # void: the next cycle decides again on fresh state
        if events:
            await asyncio.gather(*events)
        if any(o is not Outcome.WRITTEN for o in outcomes):
            self.poke()

    def _publish_phase_gauges(self) -> None:
        counts: dict[str, int] = dict.fromkeys((p.value for p in TaskPhase), 0)
        for task in self.state.tasks.values():
            counts[task.phase or TaskPhase.PENDING.value] = counts.get(task.phase or TaskPhase.PENDING.value, 0) + 1
        for phase, count in counts.items():
            metrics.TASKS.labels(phase).set(count)


def _scoped_selector(task: TaskRecord) -> dict[str, Any]:
    """The task's own agentSelector plus 'same namespace'."""
    selector = dict(task.selector or {})
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), NAMESPACE_LABEL: task.namespace}
    selector.setdefault("matchExpressions", [])
    return selector
