"""The central loop: one per cluster, woken by changes and timers, deciding only while it leads.

A cycle looks only at what changed (the store's feed), at timers that came
due, and at the scheduling queue's active tasks. Its numbered steps:

1. timers: agents whose Lease went quiet, retries whose backoff ended,
   parked tasks whose bounded wait is over;
2. agents: liveness judged again where something changed; parked tasks an
   agent could now help are woken;
3. tasks: each changed task goes through the lifecycle rules (gate,
   progress); eligible ones join the scheduling queue;
4. schedule: the queue's active tasks go through one scheduler-core cycle;
   placed tasks are assigned, the others parked with their reason;
5. agents' status: phase and load, where they changed;
6. write: every decision goes to the writer, compare-and-set on the version
   it was decided on; the loop never waits for a write.

What it must never do: decide an object whose previous write is still open
(the ledger says busy), or let a failed cycle lose a change (the feed is
put back).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qorch import tracing
from qorch.api import constants
from qorch.api.enums import AgentPhase, ApprovalDecision, BreakerState, Reason, TaskPhase
from qorch.api.task import DEPENDENTS_SHOWN
from qorch.controller import documents, metrics, translate
from qorch.controller.breakers import Breakers
from qorch.controller.kube import Resource
from qorch.controller.lifecycle import admission, cancel, deadline, gate, liveness, progress, redrive, timeouts
from qorch.controller.providers import ProviderBreakers
from qorch.controller.queueing import SchedulingQueue, Shape
from qorch.controller.records import ACTIVE_PHASES, FINAL_PHASES, parse_time
from qorch.controller.store import AGENTS, APPROVALS, TASKS
from qorch.controller.writer import Outcome, Write
from qorch.scheduler import schedule
from qorch.scheduler.queue import effective

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import Any

    from qorch.controller.auditing import DecisionLog
    from qorch.controller.breakers import Change
    from qorch.controller.documents import StatusChange
    from qorch.controller.events import EventRecorder
    from qorch.controller.records import AgentRecord, ApprovalRecord, Key, Retry, TaskRecord
    from qorch.controller.store import ClusterState, Feed
    from qorch.controller.writer import StatusWriter
    from qorch.scheduler import Result
    from qorch.scheduler.observables import Observables

__all__ = ["AGENT_RESOURCE", "APPROVAL_RESOURCE", "TASK_RESOURCE", "Kernel"]

log = logging.getLogger(__name__)
TASK_RESOURCE = Resource("qorch.io", "v1alpha1", TASKS)
AGENT_RESOURCE = Resource("qorch.io", "v1alpha1", AGENTS)
APPROVAL_RESOURCE = Resource("qorch.io", "v1alpha1", APPROVALS)
_FLUSH_EVERY = 1.0  # seconds between flushes of parked tasks whose wait is over
_HEARTBEAT_EVERY = 300.0  # seconds between writes of an Agent's lastHeartbeat when nothing else changes
_LOAD_EVERY = 15.0  # seconds between writes of an Agent's activeTasks when only the load changed
_IN_LINE_PER_PASS = 2_000  # NotInBatch statuses written in one pass at most (the least urgent writes)
_INLINE_BATCH = 256  # batches up to this many tasks are decided on the event loop, not in a thread
_HEAVY_CYCLE = 0.05  # seconds of deciding after which the loop pauses, so informers catch up
_REFUSAL_PAUSE = 5.0  # an agent that refused work for lack of room gets none for this long
_IGNORED_MEMORY = 10_000  # ignored reports remembered, so each is reported once
_READ_BACKS = 8  # agent Leases read back at once (they share connections with renewals and writes)
_AGENT_TIMER, _TASK_TIMER, _FLUSH_TIMER = "agent", "task", "flush"


@dataclass(slots=True)
class Kernel:
    """Decides and writes; everything it knows comes from the store."""

    store: ClusterState
    writer: StatusWriter
    leading: Callable[[], bool]
    epoch: Callable[[], int]
    events: EventRecorder | None = None
    # Reads an agent's Lease straight from the apiserver (None when it is gone): a death seen
    # through the watch is confirmed by it before the agent's work is taken away. None: no check.
    read_lease: Callable[[Key], Awaitable[dict[str, Any] | None]] | None = None
    tick: float = 1.0
    observed: Callable[[Observables, int, float], None] = lambda *_: None  # each pass's observables (publish.py)
    audit: DecisionLog | None = None  # the audit log: landed transitions and the decisions that write nothing
    wall: Callable[[], float] = time.time
    mono: Callable[[], float] = time.monotonic
    queue: SchedulingQueue = field(default_factory=SchedulingQueue)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    watching_since: float = 0.0  # monotonic time the informers had synced
    cycles: int = 0
    last_cycle: float = 0.0  # monotonic end of the latest completed cycle (for /healthz)
    _liveness: dict[Key, liveness.Liveness] = field(default_factory=dict)
    _timers: list[tuple[float, int, str, Key]] = field(default_factory=list)
    _seq: int = 0
    _led: bool = False
    _ignored: dict[tuple[str, str], None] = field(default_factory=dict)  # (uid, version) already reported
    _paused: dict[Key, float] = field(default_factory=dict)  # agent -> monotonic end of its refusal pause
    _unseen: dict[Key, int] = field(default_factory=dict)  # tasks without a status -> cycle first seen
    _flushed: float = 0.0  # monotonic time of the last flush of parked tasks
    _skipped: set[Key] = field(default_factory=set)  # active tasks the last pass skipped (a write was open)
    _again: bool = False  # the last pass left active tasks undecided (not in its batch)
    _agent_written: dict[Key, float] = field(default_factory=dict)  # agent -> monotonic time of its last write
    _told: int = 0  # NotInBatch statuses written in this pass
    _fleet: translate.FleetCache = field(default_factory=translate.FleetCache)
    _confirmed: dict[Key, str] = field(default_factory=dict)  # agent -> Lease version read back unchanged
    _confirming: set[asyncio.Task[None]] = field(default_factory=set)
    _confirming_keys: set[Key] = field(default_factory=set)
    _suspect: set[Key] = field(default_factory=set)  # dead by the watch, not confirmed yet: no new work
    _read_failures: dict[Key, tuple[int, float]] = field(default_factory=dict)  # agent -> (failures, since)
    _read_gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(_READ_BACKS))
    breakers: Breakers = field(default_factory=Breakers)
    providers: ProviderBreakers = field(default_factory=ProviderBreakers)
    _probes: dict[str, tuple[int, Key | None]] = field(default_factory=dict)  # provider -> (cycle, probe agent)
    _recheck: set[Key] = field(default_factory=set)  # tasks whose next gating looks for a dependency cycle
    _walks: dict[str, gate.Walks] = field(default_factory=dict)  # namespace -> this pass's cycle searches
    _agents_counted: float = float("-inf")  # monotonic time the agents-by-phase gauge was last set
    _since: dict[Key, tuple[str, int, float]] = field(default_factory=dict)  # active task -> (phase, attempt, mono)
    _deadline_armed: dict[Key, float] = field(default_factory=dict)  # task -> the deadline its timer is armed for

    def poke(self) -> None:
        """Something changed: run a cycle soon."""
        self.wake.set()

    # ------------------------------------------------------------------ the loop
    async def run(self) -> None:
        """Cycle when poked, when a timer is due, and on every tick, while leading."""
        pause = 0.0
        while True:
            if pause:
                await asyncio.sleep(pause)
            timeout = self.tick
            if self._timers:
                timeout = max(0.0, min(timeout, self._timers[0][0] - self.mono()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)
            self.wake.clear()
            if not self.leading():
                self._led = False
                pause = 0.0
                self.store.feed.drain()  # a follower decides nothing; taking over looks at everything
                continue
            first = not self._led
            if first:
                self._take_over()
            started = time.perf_counter()
            with tracing.cycle() as span:
                backlog = self.writer.backlog
                try:
                    deciding = await self.cycle()
                except Exception:  # a bad cycle must not end the loop; its changes were put back
                    log.exception("scheduling cycle failed")
                    deciding = time.perf_counter() - started
                span.update(
                    {
                        "qorch.cycle": self.cycles,
                        "qorch.writes_decided": max(self.writer.backlog - backlog, 0),
                        "qorch.queue.active": len(self.queue.active),
                        "qorch.queue.parked": len(self.queue.parked),
                        "qorch.deciding_seconds": deciding,
                    }
                )
            if first:
                log.info(
                    "first cycle as leader: %d writes decided in %.2fs (%d tasks queued, %d parked)",
                    self.writer.backlog,
                    time.perf_counter() - started,
                    len(self.queue.active),
                    len(self.queue.parked),
                )
            metrics.CYCLE_SECONDS.observe(time.perf_counter() - started)
            self.last_cycle = self.mono()
            # After a heavy cycle, pause twice its deciding time: the informers sharing this process
            # keep two thirds of it. A light cycle (the usual one) is followed by none.
            pause = min(2.0 * deciding, 2.0) if deciding > _HEAVY_CYCLE else 0.0

    def _take_over(self) -> None:
        """Just won the lease: everything is news (a follower kept its store but decided nothing)."""
        self._led = True
        # Breakers and pauses of an earlier term are stale: another leader may have moved them since.
        # Step 2 takes every breaker up again from its Agent's status.breaker.
        self.breakers.clear()
        self._paused.clear()
        feed = self.store.feed
        feed.tasks |= set(self.store.tasks)
        # Cycles are looked for once more: the old leader may not have told every member of one.
        self._recheck |= {key for key, task in self.store.tasks.items() if task.phase in gate.GATED}
        feed.agents |= set(self.store.agents) | set(self.store.by_agent) | set(self.store.leases)
        feed.policy = True
        self.providers.seed(self.store.policy.providers)
        now, mono = self.wall(), self.mono()
        for name, held in self.providers.held.items():
            if held.state is BreakerState.OPEN and held.open_until is not None and held.open_until > now:
                self._pause_provider(name, mono + (held.open_until - now))

    async def cycle(self) -> float:
        """One pass of the numbered steps; returns the seconds spent deciding (writes not included)."""
        started = time.perf_counter()
        feed = self.store.feed.drain()
        try:
            await self._decide(feed, started)
        except BaseException:
            self.store.feed.restore(feed)
            raise
        self.cycles += 1
        self._publish_gauges()
        return time.perf_counter() - started

    async def _decide(self, feed: Feed, started: float) -> None:
        now, mono = self.wall(), self.mono()
        # 1. Timers: agents whose Lease went quiet, retries due, parked tasks due for another try.
        self._fire_timers(feed, mono)
        if mono - self._flushed >= _FLUSH_EVERY:
            self._flushed = mono
            self.queue.flush(mono, self._could_place)
        if feed.policy:
            self.queue.wake_all()
            feed.agents |= set(self.store.agents)
        # 2. Agents: liveness where something changed; wake parked tasks an agent could now help.
        self._agents(feed, now, mono)
        # 3. Tasks: the lifecycle rules for every changed task.
        for key in feed.deleted:
            self.queue.discard(key)
            self._unseen.pop(key, None)
            self._since.pop(key, None)
            self._deadline_armed.pop(key, None)
            self._recheck.discard(key)
        self._walks.clear()  # what cycle searches learned holds for this pass only
        for key in feed.regraphed:  # a cycle closed through it runs through what depends on it too
            dependents = self.store.dependents.get(key, set())
            self._recheck.add(key)
            self._recheck |= dependents
            feed.tasks |= dependents
        for key in feed.touched:
            self.queue.wake(key)
        self._report_ignored(feed)
        for key in feed.tasks:
            self._task(key, now, mono)
        # 4. Schedule the queue's active tasks with the scheduler core, when something could have
        #    changed the answer: a task became active (new, woken, its write settled), or the last
        #    pass left tasks out of its batch. A cycle woken by an echo alone costs no pass.
        if self.queue.active and (self.queue.fresh or self._again) and not self.writer.ledger.full:
            self.queue.fresh = False
            try:
                await self._schedule(now, mono)
            except BaseException:
                self.queue.fresh = True  # the pass did not happen: the next cycle runs it again
                raise
        # 5. Agents' status: phase and load where they changed.
        for key in feed.agents | feed.freed:
            self._agent_status(key, now, mono)
        metrics.DECIDE_SECONDS.observe(time.perf_counter() - started)

    # ------------------------------------------------------------------ 1. timers
    def _arm(self, due: float, kind: str, key: Key) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (due, self._seq, kind, key))

    def _fire_timers(self, feed: Feed, mono: float) -> None:
        while self._timers and self._timers[0][0] <= mono:
            _, _, kind, key = heapq.heappop(self._timers)
            if kind == _AGENT_TIMER:
                feed.agents.add(key)
            elif kind == _TASK_TIMER:
                feed.tasks.add(key)
        flush = self.queue.next_flush()  # the flush runs in every cycle; this timer only wakes the loop
        if flush is not None:
            flush = max(flush, mono + _FLUSH_EVERY)  # one flush a second at most, not one per parked task
            if not self._timers or flush < self._timers[0][0]:
                self._arm(flush, _FLUSH_TIMER, ("", ""))

    # ------------------------------------------------------------------ 2. agents
    def _judge(self, key: Key, mono: float) -> liveness.Liveness:
        return liveness.judge(
            self.store.leases.get(key),
            now=mono,
            grace=float(self.store.policy.agent_grace_seconds),
            watching_since=self.watching_since,
        )

    def _agents(self, feed: Feed, now: float, mono: float) -> None:
        grace = float(self.store.policy.agent_grace_seconds)
        for key in feed.agents | feed.reshaped | feed.freed:
            was = self._liveness.get(key)
            now_is = self._liveness_of(key, mono)
            self._liveness[key] = now_is
            due = liveness.next_change(self.store.leases.get(key), grace=grace, watching_since=self.watching_since)
            if due is not None and due > mono and now_is is not liveness.Liveness.DEAD:
                self._arm(due + 0.01, _AGENT_TIMER, key)
            agent = self.store.agents.get(key)
            if was is not None and was is not now_is:
                log.info("agent %s/%s is %s (was %s)", *key, now_is.value, was.value)
                feed.tasks |= self.store.by_agent.get(key, set())  # liveness decides their fate
            if agent is None:
                if key not in self.store.by_agent and key not in self.store.leases:
                    self._liveness.pop(key, None)
                    self._confirmed.pop(key, None)
                    self._read_failures.pop(key, None)
                    self._suspect.discard(key)
                    self._paused.pop(key, None)
                    self.breakers.forget(key)
                continue
            came_alive = now_is is liveness.Liveness.ALIVE and was is not liveness.Liveness.ALIVE
            pause_over = key in self._paused and self._paused[key] <= mono
            if pause_over:
                del self._paused[key]
            self._breaker_seen(agent, now, mono)
            if key in feed.reshaped:  # its spec changed: may it still hold its tasks (clearance)?
                feed.tasks |= self.store.by_agent.get(key, set())
            if came_alive or key in feed.reshaped or pause_over:
                self.queue.agent_changed(agent, slot_freed_only=False)
            elif key in feed.freed:
                self.queue.agent_changed(agent, slot_freed_only=True)

    def _breaker_seen(self, agent: AgentRecord, now: float, mono: float) -> None:
        """Take the agent's breaker up from its status when it is new to this term (or a new incarnation).

        An Open one keeps the agent paused until its cool-down ends, whoever opened it: the
        pause's end is what wakes the agent's parked tasks.
        """
        key = agent.key
        if self.breakers.recreated(agent):
            self._paused.pop(key, None)  # the old incarnation's pause is not this Agent's
        self.breakers.seed(agent)
        self._breaker_cooled(key, now)  # the cool-down's timer brings the agent here when it ends
        breaker = self.breakers.state(key, self.store.agents, now)
        if breaker.state is BreakerState.OPEN and breaker.open_until is not None and key not in self._paused:
            self._hold_off(key, breaker.open_until, now, mono)  # inherited, or the wall clock stepped back

    def _liveness_of(self, key: Key, mono: float) -> liveness.Liveness:
        """The agent's liveness; a death seen through the watch alone keeps the last judgement for now."""
        judged = self._judge(key, mono)
        if judged is not liveness.Liveness.DEAD or self._death_confirmed(key, mono):
            self._suspect.discard(key)
            return judged
        self._suspect.add(key)  # gets no new work meanwhile, and its status does not flap
        return self._liveness.get(key) or liveness.Liveness.UNKNOWN

    def _death_confirmed(self, key: Key, mono: float) -> bool:
        """Whether a Lease that looks dead through the watch was read back unchanged.

        A stalled watch (a proxy that stopped forwarding, an apiserver that stopped
        sending) looks exactly like every agent dying at once. So before an agent
        with work is judged dead, its Lease is read from the apiserver: a version the
        watch missed revives it; the same version (or none) confirms the death. When
        the Lease cannot be read back for two grace periods, the watch's word stands.
        """
        if self.read_lease is None or not self.store.by_agent.get(key):
            return True  # nothing to take away: no need to be sure
        lease = self.store.leases.get(key)
        version = lease.resource_version if lease is not None else ""
        if self._confirmed.get(key) == version:
            return True
        failures, since = self._read_failures.get(key, (0, mono))
        if failures and mono - since > 2 * float(self.store.policy.agent_grace_seconds):
            log.warning("agent %s/%s: its Lease could not be read back (%d tries); judged by the watch", *key, failures)
            self._confirmed[key] = version
            return True
        if key not in self._confirming_keys:
            self._confirming_keys.add(key)
            task = asyncio.get_running_loop().create_task(self._confirm(key, version))
            self._confirming.add(task)
            task.add_done_callback(self._confirming.discard)
        return False

    async def _confirm(self, key: Key, version: str) -> None:
        assert self.read_lease is not None  # noqa: S101 - only started when set
        try:
            async with self._read_gate:
                body = await self.read_lease(key)
        except Exception as exc:  # noqa: BLE001 - an API failure, or a bug: the agent must not stay unjudged
            failures, since = self._read_failures.get(key, (0, self.mono()))
            self._read_failures[key] = (failures + 1, since)
            metrics.LEASES_READ_BACK.labels("error").inc()
            log.warning("could not read the Lease of agent %s/%s back: %s", *key, exc)
            await asyncio.sleep(min(0.5 * 2**failures, 10.0))
        else:
            self._read_failures.pop(key, None)
            if body is not None and str(body["metadata"].get("resourceVersion")) != version:
                held = bool((body.get("spec") or {}).get("holderIdentity"))
                log.warning("agent %s/%s: the watch missed a change of its Lease", *key)
                metrics.LEASES_READ_BACK.labels("renewed" if held else "released").inc()
                self.store.upsert_lease(body)
            else:
                metrics.LEASES_READ_BACK.labels("dead").inc()
                self._confirmed[key] = version
        finally:
            self._confirming_keys.discard(key)
            self.store.feed.agents.add(key)
            self.poke()

    def _could_place(self, shape: Shape, reason: Reason) -> bool:
        """Whether a parked shape is worth another try: an agent admits it now (and is ready, with room)."""
        admitting = [a for a in self.store.agents.values() if shape.admits(a)]
        if reason in (Reason.NO_READY_AGENT, Reason.CAPACITY_EXHAUSTED):
            admitting = [a for a in admitting if self._schedulable(a)]
        if reason is Reason.CAPACITY_EXHAUSTED:
            admitting = [a for a in admitting if self._load(a.key) < a.capacity]
        return bool(admitting) or reason is Reason.OVER_QUOTA

    def _schedulable(self, agent: AgentRecord) -> bool:
        if agent.cordoned or agent.key in self._suspect or self._liveness.get(agent.key) is not liveness.Liveness.ALIVE:
            return False
        if not Breakers.admits(self.breakers.state(agent.key, self.store.agents, self.wall())):
            return False
        if agent.provider and not self._provider_admits(agent):
            return False
        paused = self._paused.get(agent.key)
        return paused is None or paused <= self.mono()  # the pause itself ends in step 2, which wakes tasks

    def _provider_admits(self, agent: AgentRecord) -> bool:
        """Open: none of the provider's agents gets work; HalfOpen: only its probe agent does."""
        state = self.providers.state(agent.provider, self.wall()).state
        if state is BreakerState.OPEN:
            return False
        return state is not BreakerState.HALF_OPEN or agent.key == self._probe_agent(agent.provider)

    def _probe_agent(self, provider: str) -> Key | None:
        """The agent that takes a HalfOpen provider's probes: the first by name that is alive and not cordoned."""
        cached = self._probes.get(provider)
        if cached is not None and cached[0] == self.cycles:
            return cached[1]
        candidates = [
            a.key
            for a in self.store.agents.values()
            if a.provider == provider
            and not a.cordoned
            and a.key not in self._suspect
            and self._liveness.get(a.key) is liveness.Liveness.ALIVE
            and Breakers.admits(self.breakers.state(a.key, self.store.agents, self.wall()))
            and self.store.load(a.key) + self.writer.ledger.slots(a.key) < a.capacity
        ]
        chosen = min(candidates) if candidates else None
        self._probes[provider] = (self.cycles, chosen)
        return chosen

    def _pause_provider(self, provider: str, until: float) -> None:
        """No work for any agent of `provider` until monotonic `until`; parked tasks wake after."""
        for agent in self.store.agents.values():
            if agent.provider == provider:
                self._paused[agent.key] = max(self._paused.get(agent.key, 0.0), until)
                self._arm(until + 0.01, _AGENT_TIMER, agent.key)

    # ------------------------------------------------------------------ 3. tasks
    def _task(self, key: Key, now: float, mono: float) -> None:
        task = self.store.tasks.get(key)
        if task is None:
            self.queue.discard(key)
            return
        if self.writer.busy(TASKS, key):
            return  # its open write settles first; settling marks it changed again
        if key in self._skipped:  # the last pass left it out while its write was open: offer it again
            self._skipped.discard(key)
            self.queue.fresh = True
        if task.phase is None:
            self._unseen.setdefault(key, self.cycles)
        if task.phase not in ACTIVE_PHASES:
            self._since.pop(key, None)
        self._rules(task, now, mono)
        if task.phase not in gate.GATED and key in self.store.approvals_for:
            self._bind_rejects(task)
        if self.writer.busy(TASKS, key) or self.writer.queued(TASKS, key):
            return  # a write was just decided: a dependents patch must not replace it
        due = deadline.due(task)
        if due is not None and self._deadline_armed.get(key) != due:
            self._deadline_armed[key] = due  # one timer per task and deadline, however often it is visited
            self._arm(mono + max(due - now, 0.0) + 0.01, _TASK_TIMER, key)
        if task.present:
            self._show_dependents(task)

    def _show_dependents(self, task: TaskRecord) -> None:
        """Write which tasks depend on this one when the status says otherwise (its DAG children)."""
        names = sorted(d for ns, d in self.store.dependents.get(task.key, ()) if ns == task.namespace)
        shown = names[:DEPENDENTS_SHOWN]
        if tuple(shown) == task.dependents and len(names) == task.dependents_total:
            return
        write = Write(
            TASK_RESOURCE,
            task.key,
            task.resource_version,
            lambda: documents.dependents(shown, len(names)),
            done=lambda outcome: None if outcome is Outcome.WRITTEN else self.poke(),
            urgent=False,
        )
        self.writer.submit(write)

    def _rules(self, task: TaskRecord, now: float, mono: float) -> None:
        """The lifecycle rules in their order: the user's requests, the deadline, then by phase."""
        asked = cancel.cancel(task) or redrive.redrive(task)  # what the user asked for comes first
        missed = deadline.missed(task, now)
        report = task.report
        # A report that ends the current attempt is decided first: work the agent finished in time
        # must not fail because the operator saw it after the deadline. And the DeadlineMissed
        # patch needs a status to add to: a task without one gets its first status first.
        ending = report is not None and report.about(task.agent, task.attempt) and (report.finished or report.refused)
        if missed is not None and (ending or (missed.fail is None and not task.present)):
            missed = None
        if asked is not None:
            self.queue.discard(task.key)
            self._write_task(task, asked, now)
        elif missed is not None:
            self._deadline_missed(task, missed, now)
        elif task.phase in FINAL_PHASES:
            self.queue.discard(task.key)
            self._recheck.discard(task.key)
        elif task.phase in ACTIVE_PHASES:
            self.queue.discard(task.key)
            self._recheck.discard(task.key)
            self._progress(task, now, mono)
        else:
            self._gate(task, now, mono)

    def _deadline_missed(self, task: TaskRecord, missed: deadline.Missed, now: float) -> None:
        """Record the miss once (the condition); fail the task instead if it asked for that."""
        outcome = "failed" if missed.fail is not None else "continued"

        def counted(result: Outcome) -> None:
            if result is Outcome.WRITTEN:
                metrics.DEADLINE_MISSES.labels(outcome).inc()

        if missed.fail is not None:
            self.queue.discard(task.key)
            self._write_task(task, missed.fail, now, written=counted)
            return
        message = documents.deadline_message(task)

        def done(result: Outcome) -> None:
            counted(result)
            if result is not Outcome.WRITTEN:
                self.poke()
            else:
                self._task_event(task, Reason.DEADLINE_MISSED, message, warning=True)

        self.writer.submit(
            Write(
                TASK_RESOURCE,
                task.key,
                task.resource_version,
                lambda: documents.deadline_missed(task, now),
                done=done,
            )
        )

    def _progress(self, task: TaskRecord, now: float, mono: float) -> None:
        agent_key = (task.namespace, task.agent)
        judged = self._liveness.get(agent_key)
        if judged is None:
            judged = self._liveness[agent_key] = self._liveness_of(agent_key, mono)
        retry = task.retry or self.store.policy.default_retry
        change = progress.progress(task, liveness=judged, retry=retry, now=now)
        report = task.report
        finished = report is not None and report.about(task.agent, task.attempt) and report.finished
        if change is None or not finished:
            change = admission.declassified(task, self.store.agents.get(agent_key)) or change
        if change is None:
            change = self._timed_out(task, retry, now, mono)
        if change is None:
            return
        refused = task.report.refused if task.report is not None else ""
        if change.reason is Reason.AGENT_REFUSED and refused in progress.AGENT_REFUSALS:
            # The agent knows better than our count: give it a pause rather than the same task
            # again at once (assign, refuse, requeue, ... with no end). A longer pause (an Open
            # breaker's cool-down) stands: its end is what wakes the agent's parked tasks.
            self._paused[agent_key] = max(self._paused.get(agent_key, 0.0), mono + _REFUSAL_PAUSE)
            self._arm(mono + _REFUSAL_PAUSE, _AGENT_TIMER, agent_key)
        report = task.report
        ran = report is not None and report.about(task.agent, task.attempt) and report.finished
        # The breaker counts an attempt the agent ran and reported, once its end is written.
        ended = (agent_key, not report.error) if ran and report is not None else None
        if change.reason in (Reason.ATTEMPT_TIMED_OUT, Reason.CLAIM_TIMED_OUT):
            # Its agent went silent on it (or never claimed it, a wedged runtime that still renews
            # its Lease): a failure of that agent, so a stuck agent's breaker opens and it gets no more.
            ended = (agent_key, False)
        agent = self.store.agents.get(agent_key)
        provider = None
        if ended is not None and agent is not None and agent.provider:
            blamed = report is not None and bool(report.provider_error)
            if blamed:  # the provider's failure, not the agent's: its breaker counts it instead
                ended, provider = None, (agent.provider, False)
            elif ended[1]:
                provider = (agent.provider, True)  # a success through the provider (a probe closes it)
        self._write_task(task, change, now, ended=ended, provider=provider)

    def _timed_out(self, task: TaskRecord, retry: Retry, now: float, mono: float) -> StatusChange | None:
        """The attempt taken back if it stayed too long in its phase; else a timer for when it would."""
        mark = (task.phase or "", task.attempt)
        seen = self._since.get(task.key)
        if seen is None or seen[:2] != mark:
            seen = self._since[task.key] = (*mark, mono)
        policy = self.store.policy
        claim_timeout, grace = float(policy.claim_timeout_seconds), float(policy.agent_grace_seconds)
        change = timeouts.overdue(
            task, waited=mono - seen[2], claim_timeout=claim_timeout, grace=grace, retry=retry, now=now
        )
        if change is None:
            bound = timeouts.limit(task, claim_timeout=claim_timeout, grace=grace)
            if bound is not None:
                self._arm(seen[2] + bound + 0.01, _TASK_TIMER, task.key)
        return change

    def _breaker_ended(self, key: Key, *, succeeded: bool) -> None:
        """An attempt of agent `key` ended (its end written): the breaker may move; say so if it did."""
        policy, now, mono = self.store.policy, self.wall(), self.mono()
        self._breaker_cooled(key, now)  # a cool-down that ended unseen is told first
        change = self.breakers.ended(
            key,
            self.store.agents,
            succeeded=succeeded,
            now=now,
            threshold=policy.breaker_threshold,
            cooldown=policy.breaker_cooldown,
        )
        self.store.feed.agents.add(key)  # its status shows the breaker (and the failures counted)
        self.poke()
        if change is None:
            return
        after = change.after
        if after.state is BreakerState.OPEN and after.open_until is not None:
            self._hold_off(key, after.open_until, now, mono)
            message = (
                f"{after.failures} consecutive failed attempts: no new work for "
                f"{policy.breaker_cooldown:g} s, then one probe"
            )
        else:
            message = "a probe attempt succeeded: work flows again"
        self._breaker_moved(key, change, message)

    def _breaker_cooled(self, key: Key, now: float) -> None:
        """An Open breaker whose cool-down is over turns HalfOpen (`Breakers.state` reads it so lazily): say so."""
        change = self.breakers.cooled(key, now)
        if change is not None:
            self._breaker_moved(key, change, "cool-down over: one probe attempt at a time")

    def _breaker_moved(self, key: Key, change: Change, message: str) -> None:
        """A breaker changed state: a metric, a log line and an Event on the Agent."""
        after = change.after
        metrics.BREAKER_TRANSITIONS.labels(after.state.value).inc()
        agent = self.store.agents.get(key)
        log.info("breaker of agent %s/%s: %s -> %s", *key, change.before.state.value, after.state.value)
        if self.audit is not None:
            data = {"from": change.before.state.value, "to": after.state.value, "failures": after.failures}
            self.audit.record("breaker", {"agent": f"{key[0]}/{key[1]}"}, data)
        if self.events is not None and agent is not None:
            self.events.post(
                kind="Agent",
                namespace=agent.namespace,
                name=agent.name,
                uid=agent.uid,
                warning=after.state is not BreakerState.CLOSED,
                reason=f"Breaker{after.state.value}",
                message=message,
                essential=True,
            )

    def _provider_ended(self, provider: str, *, succeeded: bool) -> None:
        """An attempt through `provider` ended (written): its breaker may move; say so if it did."""
        policy, now, mono = self.store.policy, self.wall(), self.mono()
        change = self.providers.ended(
            provider,
            succeeded=succeeded,
            now=now,
            threshold=policy.provider_threshold,
            cooldown=policy.provider_cooldown,
        )
        if change is None:
            return
        after = change.after
        metrics.PROVIDER_BREAKER_TRANSITIONS.labels(after.state.value).inc()
        if after.state is BreakerState.OPEN and after.open_until is not None:
            self._pause_provider(provider, mono + max(after.open_until - now, 0.0))
            message = (
                f"provider {provider}: {after.failures} consecutive provider errors across its agents: no new "
                f"work for any of them for {policy.provider_cooldown:g} s, then one probe"
            )
        else:
            message = f"provider {provider}: a probe attempt succeeded: work flows to its agents again"
        log.info("breaker of provider %s: %s -> %s", provider, change.before.state.value, after.state.value)
        if self.audit is not None:
            data = {"from": change.before.state.value, "to": after.state.value, "failures": after.failures}
            self.audit.record("breaker", {"provider": provider}, data)
        if after.state is not BreakerState.OPEN:
            for agent in self.store.agents.values():  # parked tasks its other agents could take now
                if agent.provider == provider:
                    self.queue.agent_changed(agent, slot_freed_only=False)
        if self.events is not None:
            self.events.post(
                kind="SchedulingPolicy",
                namespace="",
                name=constants.DEFAULT_POLICY_NAME,
                uid="",
                warning=after.state is not BreakerState.CLOSED,
                reason=f"ProviderBreaker{after.state.value}",
                message=message,
                essential=True,
            )

    def _hold_off(self, key: Key, open_until: float, now: float, mono: float) -> None:
        """No work for agent `key` until its breaker's cool-down ends (wall `open_until`); parked tasks wake then."""
        until = mono + max(open_until - now, 0.0)
        self._paused[key] = max(self._paused.get(key, 0.0), until)
        self._arm(until + 0.01, _AGENT_TIMER, key)

    def _gate(self, task: TaskRecord, now: float, mono: float) -> None:
        key = task.key
        # A cycle through this task needs a task depending on it, and something that changed since
        # its last search (see step 3) or a cycle it names already (still there?).
        search = bool(self.store.dependents.get(key)) and (
            key in self._recheck or task.reason == Reason.DEPENDENCY_CYCLE.value
        )
        verdict = gate.gate(
            task,
            approvals=self.store.approvals_of(key),
            dependency=lambda name: self.store.tasks.get((task.namespace, name)),
            search=search,
            walks=self._walks.setdefault(task.namespace, gate.Walks()),
        )
        if verdict.searched or not search:
            self._recheck.discard(key)
        in_cycle = verdict.change is not None and verdict.change.reason is Reason.DEPENDENCY_CYCLE
        if in_cycle != (task.reason == Reason.DEPENDENCY_CYCLE.value):
            self._cycle_moved(task, verdict.cycle)
        for approval in verdict.bind:
            self._bind(approval, task)
        if verdict.change is not None:
            self.queue.discard(key)
            if verdict.change.phase.value != task.phase or verdict.change.reason.value != task.reason:
                self._write_task(task, verdict.change, now)
            return
        due = task.next_attempt_at
        if task.phase == TaskPhase.RETRYING.value and due is not None and due > now:
            self.queue.discard(key)
            self._arm(mono + (due - now) + 0.01, _TASK_TIMER, key)
            return
        self.queue.add(key, task.resource_version)

    def _cycle_moved(self, task: TaskRecord, members: tuple[str, ...]) -> None:
        """A dependency cycle was found, or is gone, at `task`: its dependents and the cycle's members look again.

        Their own phase did not change (Blocked either way), so nothing else would gate them
        again, and a member would keep naming a cycle that is gone, or not name one it is in.
        """
        again = self.store.dependents.get(task.key, set()) | {(task.namespace, name) for name in members}
        again.discard(task.key)
        if again:
            self._recheck |= again
            self.store.feed.tasks |= again  # the next cycle: this one's feed is being worked through
            self.poke()

    def _bind_rejects(self, task: TaskRecord) -> None:
        """A bare Reject that comes after the gate is bound to the incarnation it met, not left for the next one."""
        for approval in self.store.approvals_of(task.key):
            if not approval.bound and approval.decision == ApprovalDecision.REJECT.value and not approval.task_uid:
                self._bind(approval, task)

    def _bind(self, approval: ApprovalRecord, task: TaskRecord) -> None:
        if self.writer.busy(APPROVALS, approval.key):
            return
        self.writer.submit(
            Write(
                APPROVAL_RESOURCE,
                approval.key,
                approval.resource_version,
                documents.approval_binding(task.uid, task.generation),
            )
        )

    def _report_ignored(self, feed: Feed) -> None:
        for task in feed.ignored:
            marker = (task.uid, task.resource_version)
            if marker in self._ignored or task.report is None:
                continue
            self._ignored[marker] = None
            if len(self._ignored) > _IGNORED_MEMORY:
                self._ignored.pop(next(iter(self._ignored)))
            metrics.REPORTS_IGNORED.inc()
            current = f"attempt {task.attempt} on {task.agent}" if task.agent else "no attempt"
            message = (
                f"report for attempt {task.report.attempt} by {task.report.agent or 'an unnamed agent'} ignored: "
                f"the current assignment is {current}"
            )
            log.warning("task %s/%s: %s", task.namespace, task.name, message)
            self._task_event(task, Reason.REPORT_IGNORED, message, warning=True)
            if self.audit is not None:
                self.audit.record(
                    "refused-report",
                    {"task": f"{task.namespace}/{task.name}", "uid": task.uid},
                    {"agent": task.report.agent, "attempt": task.report.attempt, "current": task.attempt},
                )

    # ------------------------------------------------------------------ 4. schedule
    async def _schedule(self, now: float, mono: float) -> None:
        store, policy_record = self.store, self.store.policy
        self._again = False
        self._told = 0
        queued = self._unbusy()
        if not queued:
            return
        fleet = self._fleet.fleet(store.agents, store.fleet_version, schedulable=self._schedulable, load=self._load)
        agents = fleet.agents
        # Tasks no agent could ever take (no capability, clearance, selector or budget fits) need
        # no batch slot: one of each shape learns the reason, and the rest share it.
        hopeless, queued = self._hopeless(agents, queued)
        queued = self._head_of_line(queued, now)
        free_quota, cost_left = self._quotas(agents)
        policy = translate.policy(policy_record, free_quota=free_quota, cycle=self.cycles)
        batch = translate.tasks(fleet, queued, now=now, avoid_group=self._avoid_group)
        representatives = [members[0] for members in hopeless.values()]
        probe = translate.tasks(fleet, representatives, now=now, avoid_group=self._avoid_group)

        def decide() -> tuple[Result | None, Result | None]:
            return (
                schedule(fleet.snapshot, batch, policy) if queued else None,
                schedule(fleet.snapshot, probe, policy) if representatives else None,
            )

        # CPU-bound and pure: a large batch goes off the event loop, so watch events and renewals
        # keep flowing; a small one is decided at once (a thread hand-off would cost more than it).
        small = len(queued) + len(representatives) <= _INLINE_BATCH
        result, probed = decide() if small else await asyncio.to_thread(decide)
        for i, members in enumerate(hopeless.values()):
            assert probed is not None  # noqa: S101 - there were representatives
            reason, message = probed.reason(i) or (Reason.NO_CAPABLE_AGENT, "no agent fits")
            for task in members:
                self._place(
                    translate.Placement(task, None, 0.0, 0.0, reason, message, [], probed.strategy), 0, now, mono
                )
        if result is None:
            return
        for name, value in (
            ("entropy", result.observables.entropy),
            ("coherence", result.observables.coherence),
            ("fidelity", result.observables.fidelity),
        ):
            metrics.OBSERVABLE.labels(name).set(value)
        self.observed(result.observables, len(queued), now)
        epoch = self.epoch()
        for placement in translate.placements(result, fleet, queued, cost_left=cost_left, free_quota=free_quota):
            self._place(placement, epoch, now, mono)

    def _hopeless(
        self, agents: list[AgentRecord], queued: list[TaskRecord]
    ) -> tuple[dict[Shape, list[TaskRecord]], list[TaskRecord]]:
        """Split off the tasks whose shape no agent admits at all (whatever its load or liveness)."""
        by_namespace: dict[str, list[AgentRecord]] = {}
        for agent in agents:
            by_namespace.setdefault(agent.namespace, []).append(agent)
        verdict: dict[Shape, bool] = {}
        hopeless: dict[Shape, list[TaskRecord]] = {}
        hopeful: list[TaskRecord] = []
        for task in queued:
            shape = Shape.of(task)
            fits = verdict.get(shape)
            if fits is None:
                fits = verdict[shape] = any(shape.admits(a) for a in by_namespace.get(shape.namespace, ()))
            if fits:
                hopeful.append(task)
            else:
                hopeless.setdefault(shape, []).append(task)
        return hopeless, hopeful

    def _place(self, placement: translate.Placement, epoch: int, now: float, mono: float) -> None:
        task = placement.task
        if placement.reason is Reason.NOT_IN_BATCH:
            self._again = True
        if placement.agent is not None:
            broken = admission.violation(task, placement.agent)
            if broken:
                self._refuse_assignment(task, placement.agent, broken, mono)
                return
            change = documents.assigned(
                agent=placement.agent.name,
                attempt=task.last_attempt + 1,  # identities are never reused
                epoch=epoch,
                when=now,
                score=placement.score,
                probability=placement.probability,
                strategy=placement.strategy,
                candidates=placement.candidates,
                user=placement.agent.user,
            )
            self.queue.placed(task.key)
            self._write_task(task, change, now, created=task.created)
            return
        reason = placement.reason or Reason.CAPACITY_EXHAUSTED
        if reason is Reason.NOT_IN_BATCH:
            # A task the next pass will decide gets its real status then; one further down the line
            # is told where it stands, a bounded number per pass (they are the least urgent writes).
            far = placement.line > 2 * self.store.policy.batch_size
            if far and task.phase != TaskPhase.QUEUED.value:
                self._tell_in_line(task, placement.message, now)
            return
        self.queue.park(task.key, Shape.of(task), reason, mono)
        if task.phase != TaskPhase.QUEUED.value or task.reason != reason.value:
            self._write_task(task, documents.queued(reason, placement.message, placement.candidates), now)

    def _refuse_assignment(self, task: TaskRecord, agent: AgentRecord, rule: str, mono: float) -> None:
        """A placement that breaks `rule` reached the writer: never written; said loudly; tried again later."""
        metrics.ASSIGNMENTS_REFUSED.labels(rule).inc()
        message = f"an assignment to {agent.name} was refused before it was written: it breaks the {rule} rule"
        log.error("task %s/%s: %s (a scheduler bug)", task.namespace, task.name, message)
        self._task_event(task, Reason.ASSIGNMENT_REFUSED, message, warning=True, essential=True)
        if self.audit is not None:
            subject = {"task": f"{task.namespace}/{task.name}", "uid": task.uid}
            self.audit.record("refused-assignment", subject, {"agent": agent.name, "rule": rule})
        self.queue.park(task.key, Shape.of(task), Reason.CAPACITY_EXHAUSTED, mono)  # not at once: a bug may repeat

    def _unbusy(self) -> list[TaskRecord]:
        """The active tasks whose last write has settled."""
        queued: list[TaskRecord] = []
        self._skipped.clear()
        for key in list(self.queue.active):
            task = self.store.tasks.get(key)
            if task is None:
                self.queue.discard(key)
            elif self.writer.busy(TASKS, key):
                self._skipped.add(key)
            elif not self.queue.judged_at(key, task.resource_version):
                # A version the rules have not seen (it came while the task's writes were busy, and
                # their end has not retouched it yet): judged first, next cycle; never placed unseen.
                # Skipped, so judging it starts a pass even when nothing else is new.
                self._skipped.add(key)
                self.store.feed.tasks.add(key)
                self.poke()
            else:
                queued.append(task)
        return queued

    def _head_of_line(self, queued: list[TaskRecord], now: float) -> list[TaskRecord]:
        """Within two batches of the head of the line; the rest are decided in a later pass."""
        queued, waiting = self._preselect(queued, now)
        for task in waiting:
            self._again = True
            if task.phase != TaskPhase.QUEUED.value:
                self._tell_in_line(task, f"more than {2 * self.store.policy.batch_size} tasks ahead in line", now)
        return queued

    def _tell_in_line(self, task: TaskRecord, message: str, now: float) -> None:
        if self._told >= _IN_LINE_PER_PASS or self.writer.queued(TASKS, task.key):
            return
        self._told += 1
        self._write_task(task, documents.queued(Reason.NOT_IN_BATCH, message, [], event=False), now)

    def _preselect(self, queued: list[TaskRecord], now: float) -> tuple[list[TaskRecord], list[TaskRecord]]:
        """At most two batches' worth per namespace, by effective priority: the rest cannot be heads now."""
        limit = 2 * self.store.policy.batch_size
        if len(queued) <= limit:
            return queued, []
        by_namespace: dict[str, list[TaskRecord]] = {}
        for task in queued:
            by_namespace.setdefault(task.namespace, []).append(task)
        offered: list[TaskRecord] = []
        for members in by_namespace.values():
            offered += heapq.nlargest(limit, members, key=lambda t: _effective(t, now))
        chosen = {t.key for t in offered}
        return offered, [t for t in queued if t.key not in chosen]

    def _load(self, agent: Key) -> int:
        load = self.store.load(agent) + self.writer.ledger.slots(agent)
        record = self.store.agents.get(agent)
        if record is not None and self._probing(record):
            # One probe at a time: no free slot while one runs, else exactly one.
            return record.capacity if load else max(record.capacity - 1, 0)
        return load

    def _probing(self, agent: AgentRecord) -> bool:
        """Whether the agent's breaker, or its provider's, is HalfOpen: it takes one probe at a time."""
        now = self.wall()
        if self.breakers.state(agent.key, self.store.agents, now).state is BreakerState.HALF_OPEN:
            return True
        return bool(agent.provider) and self.providers.state(agent.provider, now).state is BreakerState.HALF_OPEN

    def _avoid_group(self, task: TaskRecord) -> str:
        if not task.failed_agent:
            return ""
        failed = self.store.agents.get((task.namespace, task.failed_agent))
        return failed.group if failed is not None else ""

    def _quotas(self, agents: list[AgentRecord]) -> tuple[dict[str, int], dict[str, float]]:
        """Free concurrent slots and cost left per capped namespace, from what really runs.

        Not from `_load`: a probing agent's load is inflated to limit it to one probe, which
        must not spend its namespace's quota.
        """
        quotas = self.store.policy.quotas
        if not quotas:
            return {}, {}
        load = {a.key: self.store.load(a.key) + self.writer.ledger.slots(a.key) for a in agents}
        active: dict[str, int] = {}
        spent: dict[str, float] = {}
        for agent in agents:
            if agent.namespace in quotas:
                used = load.get(agent.key, 0)
                active[agent.namespace] = active.get(agent.namespace, 0) + used
                spent[agent.namespace] = spent.get(agent.namespace, 0.0) + used * agent.cost
        free = {
            ns: max(0, q.max_concurrent - active.get(ns, 0)) for ns, q in quotas.items() if q.max_concurrent is not None
        }
        cost = {ns: q.max_cost - spent.get(ns, 0.0) for ns, q in quotas.items() if q.max_cost is not None}
        return free, cost

    # ------------------------------------------------------------------ 5. agents' status
    def _agent_status(self, key: Key, now: float, mono: float) -> None:
        agent = self.store.agents.get(key)
        if agent is None:
            self._agent_written.pop(key, None)
            return
        if self.writer.busy(AGENTS, key):
            return
        judged = self._liveness.get(key) or self._judge(key, mono)
        phase, reason, message = liveness.agent_phase(agent, judged)
        current = self.breakers.state(key, self.store.agents, now)
        breaker_shown = current != agent.breaker or current.state is not BreakerState.CLOSED or current.failures
        load = self.store.load(key)
        lease = self.store.leases.get(key)
        heartbeat = lease.renew_time if lease is not None else ""
        counted = (current.state, current.failures) != (agent.breaker.state, agent.breaker.failures)
        news = (
            agent.phase != phase.value
            or agent.observed_generation != agent.generation
            or agent.ready_reason != reason
            or counted
        )
        if not news and agent.active_tasks != load:
            due = self._agent_written.get(key, -_LOAD_EVERY) + _LOAD_EVERY
            if due > mono:  # a load change alone is written at most every few seconds per agent
                self._arm(due, _AGENT_TIMER, key)
                return
            news = True
        if not news and not _heartbeat_due(agent.last_heartbeat, heartbeat):
            return  # like a Node's status: the Lease is the heartbeat, the status follows changes
        self._agent_written[key] = mono
        body = documents.agent_status(
            agent,
            phase=phase,
            load=load,
            heartbeat=heartbeat,
            reason=reason,
            message=message,
            when=now,
            breaker=current if breaker_shown else None,
        )
        # An Agent's status is for people; assignments go first. Except a breaker's count: it lives
        # only here and in memory until this write lands, so it goes with the urgent writes. The
        # window is narrowed, not closed: a leader change between the task's end landing and this
        # write landing loses the count (two objects, no transaction); the new leader then counts
        # from what status.breaker shows, one failure short at most per attempt ended meanwhile.
        self.writer.submit(Write(AGENT_RESOURCE, key, agent.resource_version, body, urgent=counted))

    # ------------------------------------------------------------------ 6. writes
    def _write_task(
        self,
        task: TaskRecord,
        change: StatusChange,
        now: float,
        *,
        created: float | None = None,
        ended: tuple[Key, bool] | None = None,
        provider: tuple[str, bool] | None = None,
        written: Callable[[Outcome], None] | None = None,
    ) -> None:
        reserve = (task.namespace, change.agent) if change.reserve else None
        first = self._unseen.pop(task.key, None) if task.phase is None else None
        if first is not None:
            metrics.CYCLES_TO_FIRST_STATUS.observe(self.cycles - first)

        def done(outcome: Outcome) -> None:
            if written is not None:
                written(outcome)
            if outcome is not Outcome.WRITTEN:
                self.poke()
                return
            if self.audit is not None:
                self.audit.task_written(task, change, self.store.approvals_of(task.key))
            if ended is not None:
                self._breaker_ended(ended[0], succeeded=ended[1])
            if provider is not None:
                self._provider_ended(provider[0], succeeded=provider[1])
            self._announce(task, change, now, created)

        write = Write(
            TASK_RESOURCE,
            task.key,
            task.resource_version,
            lambda: documents.render(change, task, now),
            reserve=reserve,
            done=done,
            urgent=change.urgent,
        )
        self.writer.submit(write)

    def _announce(self, task: TaskRecord, change: StatusChange, decided: float, created: float | None) -> None:
        """A transition was written: its metrics, its step in the task's trace, its Event."""
        if change.reserve:
            metrics.ASSIGNMENTS.inc()
            if created is not None:
                metrics.CREATE_TO_ASSIGNED_SECONDS.observe(max(0.0, self.wall() - created))
        metrics.TRANSITIONS.labels(change.phase.value, change.reason.value).inc()
        if tracing.enabled():
            self._traced(task, change, decided)
        if change.event:
            self._task_event(task, change.reason, change.message, warning=change.warning)

    def _task_event(
        self, task: TaskRecord, reason: Reason, message: str, *, warning: bool, essential: bool = False
    ) -> None:
        """An Event about a Task (none when the kernel has no recorder, as in some tests)."""
        if self.events is not None:
            self.events.post(
                kind="Task",
                namespace=task.namespace,
                name=task.name,
                uid=task.uid,
                warning=warning,
                reason=reason.value,
                message=message,
                essential=essential,
            )

    def _traced(self, task: TaskRecord, change: StatusChange, decided: float) -> None:
        """The written transition as a step of the task's trace; the whole life once it ended."""
        attributes = {
            "qorch.task": f"{task.namespace}/{task.name}",
            "qorch.phase": change.phase.value,
            "qorch.reason": change.reason.value,
            "qorch.agent": change.agent or task.agent,
            "qorch.attempt": change.attempt or task.attempt,
        }
        end = self.wall()
        tracing.step(f"qorch.task.{change.phase.value}", task.uid, start=decided, end=end, attributes=attributes)
        if change.phase.value in FINAL_PHASES:
            tracing.task_ended(task.uid, created=task.created or decided, end=end, attributes=attributes)

    def _publish_gauges(self) -> None:
        mono = self.mono()
        if mono - self._agents_counted >= 1.0:  # a walk over every agent: once a second at most
            self._agents_counted = mono
            phases = Counter(a.phase or AgentPhase.NOT_READY.value for a in self.store.agents.values())
            for agent_phase in AgentPhase:
                metrics.AGENTS.labels(agent_phase.value).set(phases.get(agent_phase.value, 0))
            counts = self.breakers.counts(self.wall())
            providers = self.providers.counts(self.wall())
            for state in BreakerState:
                metrics.BREAKERS.labels(state.value).set(counts.get(state.value, 0))
                metrics.PROVIDER_BREAKERS.labels(state.value).set(providers.get(state.value, 0))
        for phase, count in self.store.phases.items():
            metrics.TASKS.labels(phase or TaskPhase.PENDING.value).set(count)
        metrics.QUEUE.labels("active").set(len(self.queue.active))
        metrics.QUEUE.labels("parked").set(len(self.queue.parked))
        metrics.LEDGER.set(len(self.writer.ledger))


def _effective(task: TaskRecord, now: float) -> float:
    deadline = task.deadline - now if task.deadline is not None else float("inf")
    return effective(task.priority, deadline, now - task.created)


def _heartbeat_due(written: str, renewed: str) -> bool:
    """Whether lastHeartbeat is worth a write of its own: only every few minutes (both are the agent's clock)."""
    if not renewed or written == renewed:
        return False
    then, latest = parse_time(written), parse_time(renewed)
    return then is None or latest is None or latest - then >= _HEARTBEAT_EVERY
