"""The status writer: every decision goes out through here, compare-and-set, and is settled here.

A `Write` carries the resourceVersion its decision read; the apiserver refuses
it with 409 if anything changed since (compare-and-set). The writer alone
owns the ledger: it opens an entry when a write is submitted, records the
outcome, and settles entries whose outcome is unknown or whose echo is late
by reading the object (a GET whose answer goes into the store, exactly as a
watch event would).

Properties the loop relies on:
- `submit` never blocks and never raises; writes go out from a bounded pool of
  workers, so a hung request holds one worker for at most the request timeout.
- Only 429 is retried here (the apiserver did not process it). Every other
  failure goes back to the loop as a fresh decision on fresh state.
- Failures in a row on one object (409, 5xx, no answer) back off: from the
  second on, the object stays busy for a doubling, jittered, bounded delay
  (`lifecycle/writes.py`) before the loop may decide it again, so a write the
  apiserver keeps refusing is never a hot loop. A landed write resets the count.
- Nothing is sent while this process is not the leader.
- A write whose answer was lost may still have landed. When a later version of
  the object carries the history entry it appended, its `done` hears WRITTEN
  after all, so what follows a landed write (the audit entry, the breaker's
  count, metrics, the Event) does not depend on the answer arriving.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from qorch.controller import metrics, workers
from qorch.controller.kube import MERGE_PATCH, ApiError, KubeError
from qorch.controller.ledger import Entry, Ledger
from qorch.controller.lifecycle import writes
from qorch.controller.store import AGENTS, APPROVALS, TASKS

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from qorch.controller.kube import KubeApi, Resource
    from qorch.controller.records import Key
    from qorch.controller.store import ClusterState

__all__ = ["JSON_PATCH", "Outcome", "StatusWriter", "Write"]

log = logging.getLogger(__name__)
JSON_PATCH = "application/json-patch+json"
_CONFLICT, _NOT_FOUND, _INVALID, _TOO_MANY = 409, 404, 422, 429
_THROTTLE_RETRIES = 5
_REFUSED_HOLD = 30.0  # a write the apiserver rejected as invalid is not tried again sooner
_CONFLICT_HOLD = 5.0  # after a 409 the watch normally brings the newer version well within this


class Outcome(enum.Enum):
    """What happened to one write."""

    WRITTEN = "written"
    CONFLICT = "conflict"  # the object changed since the decision: decide again on the new version
    GONE = "gone"
    REFUSED = "refused"  # rejected (invalid, forbidden): certainly not written
    UNKNOWN = "unknown"  # no answer, or a 5xx: may have been written
    DROPPED = "dropped"  # not sent: this process no longer leads


_FAILED = frozenset({Outcome.CONFLICT, Outcome.REFUSED, Outcome.UNKNOWN})  # count as failed writes of the object
_FORGET_AFTER = 2 * writes.CAP  # a failure older than this starts the count afresh
_FORGET_SWEEP = 10_000  # objects with a failure remembered before old ones are swept
_DOUBT_KEPT = 600.0  # a write whose answer was lost is watched for this long (the apiserver may be down a while)


@dataclass(slots=True)
class Write:
    """One status write, as decided."""

    resource: Resource
    key: Key
    decided_on: str  # resourceVersion
    patch: Any  # a JSON patch (list of operations), a merge patch (dict), or a callable that renders one
    reserve: Key | None = None  # the agent whose slot an assignment takes
    done: Callable[[Outcome], None] | None = None
    urgent: bool = True  # placements and transitions go ahead of reason-only updates
    sent: Any = None  # the patch as rendered when it was sent
    doubt: Any = None  # its _Doubt while its outcome is not known

    def render(self) -> Any:  # noqa: ANN401 - a JSON patch or a merge patch
        """The patch, rendered now if it was given as a callable (queued writes stay small)."""
        return self.patch() if callable(self.patch) else self.patch


@dataclass(slots=True)
class _Doubt:
    """A write that may land without our hearing of it, and the history entry that shows it landed.

    Watched from the moment it is sent: the watch can bring the landed version before the
    answer is lost.
    """

    write: Write
    entry: dict[str, Any]
    until: float  # monotonic: forgotten after this (an object never seen again)
    answered: bool = False  # its answer was lost (UNKNOWN): a sighting now confirms it
    seen: bool = False  # a version carrying its entry came in while it was in flight


def appended_entry(patch: Any) -> dict[str, Any] | None:  # noqa: ANN401 - a JSON patch or a merge patch
    """The history entry a rendered Task status patch appends, if any (unique: it carries the decision's time)."""
    if not isinstance(patch, list):
        return None
    for op in patch:
        path, value = op.get("path"), op.get("value")
        if op.get("op") != "add":
            continue
        if path == "/status/history/-" and isinstance(value, dict):
            return value
        history = value.get("history") if path == "/status" and isinstance(value, dict) else None
        if path == "/status/history" and isinstance(value, list):
            history = value
        if history:
            return dict(history[-1])
    return None


@dataclass(slots=True)
class StatusWriter:
    """Sends writes with bounded concurrency and settles the ledger."""

    api: KubeApi
    store: ClusterState
    may_write: Callable[[], bool]
    concurrency: int = 16
    field_manager: str = "qorch-operator"
    ledger: Ledger = field(default_factory=Ledger)
    clock: Callable[[], float] = time.monotonic
    _urgent: collections.deque[tuple[Write, Entry]] = field(default_factory=collections.deque)
    _later: collections.deque[tuple[Write, Entry]] = field(default_factory=collections.deque)
    _pending: asyncio.Event = field(default_factory=asyncio.Event)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _sending: int = 0
    _failures: dict[tuple[str, Key], int] = field(default_factory=dict)  # failed writes in a row, per object
    _failed_at: dict[tuple[str, Key], float] = field(default_factory=dict)  # object -> when its last write failed
    _cooling: dict[tuple[str, Key], float] = field(default_factory=dict)  # object -> monotonic end of its backoff
    _doubtful: dict[tuple[str, Key], list[_Doubt]] = field(default_factory=dict)  # writes that may have landed

    def __post_init__(self) -> None:
        """The store tells the ledger about every version it sees, and the writer about every Task body."""
        self.store.observe = self.ledger.observe
        self.store.witness = self._witness
        self.ledger.released = self._slot_freed
        self._idle.set()

    def _slot_freed(self, agent: Key) -> None:
        self.store.feed.freed.add(agent)  # the feed's sets are replaced on every drain: look it up now

    # ------------------------------------------------------------------ the loop's side
    def busy(self, plural: str, key: Key) -> bool:
        """Whether a write on this object was sent and is unsettled, or its writes are backing off."""
        return self.ledger.busy(plural, key) or self.backing_off(plural, key)

    def backing_off(self, plural: str, key: Key) -> bool:
        """Whether the object's writes failed repeatedly and its backoff has not ended."""
        until = self._cooling.get((plural, key))
        return until is not None and until > self.clock()

    def failures(self, plural: str, key: Key) -> int:
        """Failed writes of the object in a row (0 after one landed)."""
        return self._failures.get((plural, key), 0)

    def queued(self, plural: str, key: Key) -> bool:
        """Whether a write on this object waits, not sent yet."""
        return self.ledger.queued(plural, key)

    def submit(self, write: Write) -> bool:
        """Queue a write (replacing one still queued for the object); False when one was sent and is unsettled.

        Also False while the object's writes back off: the loop decides it again when that ends.
        """
        if self.backing_off(write.resource.plural, write.key):
            return False
        entry = self.ledger.open(write.resource.plural, write.key, write.decided_on, write.reserve, self.clock())
        if entry is None:
            return False
        (self._urgent if write.urgent else self._later).append((write, entry))
        self._idle.clear()
        self._pending.set()
        return True

    @property
    def backlog(self) -> int:
        """Writes queued or being sent."""
        return len(self._urgent) + len(self._later) + self._sending

    async def drained(self) -> None:
        """Wait until no write is queued or being sent."""
        await self._idle.wait()

    # ------------------------------------------------------------------ workers
    async def run(self) -> None:
        """Send queued writes and settle due entries until cancelled."""
        await workers.together([*(self._worker() for _ in range(self.concurrency)), self._settler()])

    async def _settler(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            await self.settle_due()

    async def settle_due(self) -> None:
        """GET every entry whose deadline passed, so none outlives the truth; end backoffs that are over."""
        self._cooled(self.clock())
        self.ledger.release_held(self.clock())
        self._forget_doubts(self.clock())
        for entry in self.ledger.due(self.clock()):
            try:
                await self._check(entry)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one check must not end settling for every entry
                log.exception("settling %s %s/%s failed", entry.plural, *entry.key)
                self.ledger.check_failed(entry, self.clock())

    async def _worker(self) -> None:
        while True:
            write, entry = await self._next()
            if self.ledger.sending(entry):  # else superseded by a newer decision before it was sent
                await self._deliver(write, entry)
            if not self._urgent and not self._later and self._sending == 0:
                self._idle.set()

    async def _deliver(self, write: Write, entry: Entry) -> None:
        self._sending += 1
        try:
            outcome = await self._send(write, entry)
        except Exception:  # a bug here must not lose the entry: treat it as unknown
            log.exception("status write to %s %s/%s crashed", write.resource.plural, *write.key)
            outcome = Outcome.UNKNOWN
        finally:
            self._sending -= 1
        self._record(write, entry, outcome)
        confirmed = self._answered(write, outcome)
        if write.done is not None:
            try:
                write.done(outcome)
            except Exception:
                log.exception("after-write callback failed")
        if confirmed:
            self._confirmed(write)

    async def _next(self) -> tuple[Write, Entry]:
        """The oldest urgent write, else the oldest reason-only one."""
        while not (self._urgent or self._later):
            self._pending.clear()
            await self._pending.wait()
        return (self._urgent or self._later).popleft()

    def _record(self, write: Write, entry: Entry, outcome: Outcome) -> None:
        now = self.clock()
        metrics.WRITES.labels(write.resource.plural, outcome.value).inc()
        self._count(write.resource.plural, write.key, outcome, now)
        if outcome is Outcome.WRITTEN:
            self.ledger.written(entry, entry.written, now)
        elif outcome in (Outcome.CONFLICT, Outcome.GONE):
            self.ledger.refused(entry, now, hold=_CONFLICT_HOLD)
        elif outcome is Outcome.REFUSED:
            self.ledger.refused(entry, now, hold=_REFUSED_HOLD)
        elif outcome is Outcome.DROPPED:
            self.ledger.close(entry)
            self._retouch(entry)
        else:
            self.ledger.unknown(entry, now)

    def _count(self, plural: str, key: Key, outcome: Outcome, now: float) -> None:
        """Count a failed write of the object, or reset the count; a repeated failure starts a backoff."""
        marker = (plural, key)
        if outcome is Outcome.WRITTEN or outcome is Outcome.GONE:
            self._failures.pop(marker, None)
            self._failed_at.pop(marker, None)
            self._cooling.pop(marker, None)
            return
        if outcome not in _FAILED:
            return  # dropped: not sent, nothing learned about the object
        if now - self._failed_at.get(marker, now) > _FORGET_AFTER:
            self._failures.pop(marker, None)  # an old failure is no repeat: the object may have moved on since
        if len(self._failed_at) > _FORGET_SWEEP:  # objects deleted after failing once are forgotten in time
            for old in [m for m, at in self._failed_at.items() if now - at > _FORGET_AFTER]:
                self._failures.pop(old, None)
                self._failed_at.pop(old, None)
        self._failed_at[marker] = now
        failures = self._failures[marker] = self._failures.get(marker, 0) + 1
        wait = writes.delay(failures, f"{plural}/{key[0]}/{key[1]}")
        if wait > 0:
            self._cooling[marker] = now + wait
            metrics.WRITE_BACKOFFS.labels(plural).inc()
            log.warning(
                "status writes to %s %s/%s failed %d times in a row: not decided again for %.1fs",
                plural,
                *key,
                failures,
                wait,
            )

    def _cooled(self, now: float) -> None:
        """Backoffs that ended: the loop must look at their objects again."""
        over = [marker for marker, until in self._cooling.items() if until <= now]
        for marker in over:
            del self._cooling[marker]
            plural, key = marker
            if not self._exists(plural, key):
                self._failures.pop(marker, None)  # gone meanwhile: nothing left to count for
                continue
            self._retouch_key(plural, key)

    def _exists(self, plural: str, key: Key) -> bool:
        if plural == TASKS:
            return key in self.store.tasks
        if plural == AGENTS:
            return key in self.store.agents
        return plural != APPROVALS or key in self.store.approvals

    async def _send(self, write: Write, entry: Entry) -> Outcome:
        if not self.may_write():
            return Outcome.DROPPED
        namespace, name = write.key
        patch = write.sent = write.render()
        self._watch_for(write)
        content_type = MERGE_PATCH if isinstance(patch, dict) else JSON_PATCH
        if isinstance(patch, dict):
            patch = {**patch, "metadata": {**patch.get("metadata", {}), "resourceVersion": write.decided_on}}
        else:
            patch = [{"op": "replace", "path": "/metadata/resourceVersion", "value": write.decided_on}, *patch]
        for _ in range(_THROTTLE_RETRIES):
            started = time.perf_counter()
            try:
                answer = await self.api.call(
                    "PATCH",
                    write.resource.path(namespace, name, "status"),
                    query={"fieldManager": self.field_manager},
                    body=patch,
                    content_type=content_type,
                    decode=False,
                )
            except ApiError as exc:
                metrics.API_WRITE_SECONDS.observe(time.perf_counter() - started)
                if exc.status == _TOO_MANY:
                    if not self.may_write():
                        return Outcome.DROPPED
                    await asyncio.sleep(min(exc.retry_after or 1.0, 10.0))
                    continue
                return self._answered_with(write, exc, patch)
            except KubeError as exc:
                return self._failed(write, exc)
            metrics.API_WRITE_SECONDS.observe(time.perf_counter() - started)
            if self.ledger.is_open(entry):  # the echo, when the watch brings it, settles the entry
                entry.written = _version(answer)
            return Outcome.WRITTEN
        return Outcome.DROPPED  # throttled every time: the apiserver processed none of the tries

    def _answered_with(self, write: Write, exc: ApiError, patch: Any) -> Outcome:  # noqa: ANN401 - a patch
        """What an error answer means; the patch in the log when it was refused as such."""
        if exc.status == _INVALID and isinstance(patch, list) and self._moved_on(write):
            # The apiserver applies the operations to the object as it is now, before the
            # resourceVersion check: a `remove` of a member since gone fails with 422, not 409.
            return Outcome.CONFLICT
        outcome = self._failed(write, exc)
        if outcome is Outcome.REFUSED:
            log.error("the refused patch: %s", json.dumps(patch)[:2000])
        return outcome

    def _moved_on(self, write: Write) -> bool:
        """Whether the store has seen the object at a version other than the one the write was decided on."""
        if write.resource.plural != TASKS:
            return False
        record = self.store.tasks.get(write.key)
        return record is not None and record.resource_version != write.decided_on

    @staticmethod
    def _failed(write: Write, exc: KubeError) -> Outcome:
        """What a failed write means; a line in the log for the ones that should not happen."""
        if isinstance(exc, ApiError):
            if exc.status == _CONFLICT:
                return Outcome.CONFLICT
            if exc.status == _NOT_FOUND:
                return Outcome.GONE
            if exc.status == _TOO_MANY:
                return Outcome.DROPPED
            if exc.definite:
                log.error("status write to %s %s/%s refused: %s", write.resource.plural, *write.key, exc)
                return Outcome.REFUSED
        log.warning("status write to %s %s/%s: %s", write.resource.plural, *write.key, exc)
        return Outcome.UNKNOWN

    # ------------------------------------------------------------------ doubts
    def _watch_for(self, write: Write) -> None:
        """A write with consequences (a history entry) is about to go out: watch for it among later versions."""
        entry = appended_entry(write.sent) if write.done is not None else None
        if entry is not None and write.doubt is None:
            write.doubt = _Doubt(write, entry, self.clock() + _DOUBT_KEPT)
            self._doubtful.setdefault((write.resource.plural, write.key), []).append(write.doubt)

    def _answered(self, write: Write, outcome: Outcome) -> bool:
        """The write's answer came (or was lost); True when it is lost but its landing was already seen."""
        doubt = write.doubt
        if doubt is None:
            return False
        if outcome is Outcome.UNKNOWN and not doubt.seen:
            doubt.answered = True  # from now, the version that carries its entry confirms it
            return False
        self._forget(doubt)  # a definite answer (done hears it), or a landing seen while in flight
        return outcome is Outcome.UNKNOWN

    def _witness(self, plural: str, key: Key, body: Mapping[str, Any]) -> None:
        """A version of an object came in: did a write whose answer was lost land in it? `done` hears WRITTEN if so."""
        doubts = self._doubtful.get((plural, key))
        if not doubts:
            return
        version = str(body["metadata"].get("resourceVersion"))
        history = (body.get("status") or {}).get("history") or ()
        for doubt in list(doubts):
            if version == doubt.write.decided_on:
                continue
            landed = doubt.entry in history
            if not doubt.answered:
                doubt.seen = doubt.seen or landed  # in flight: its answer decides, this sighting is kept
                continue
            self._forget(doubt)  # newer than the version it was decided on: in it, or never
            if landed:
                log.info("status write to %s %s/%s landed although its answer was lost", plural, *key)
                metrics.WRITES.labels(plural, "landed-unanswered").inc()
                try:
                    asyncio.get_running_loop().call_soon(self._confirmed, doubt.write)
                except RuntimeError:  # no loop (a store fed by hand): confirm at once
                    self._confirmed(doubt.write)

    def _forget(self, doubt: _Doubt) -> None:
        marker = (doubt.write.resource.plural, doubt.write.key)
        left = [d for d in self._doubtful.get(marker, ()) if d is not doubt]
        if left:
            self._doubtful[marker] = left
        else:
            self._doubtful.pop(marker, None)
        doubt.write.doubt = None

    @staticmethod
    def _confirmed(write: Write) -> None:
        if write.done is not None:
            try:
                write.done(Outcome.WRITTEN)
            except Exception:
                log.exception("after-write callback failed")

    def _forget_doubts(self, now: float) -> None:
        for doubts in list(self._doubtful.values()):
            for doubt in [d for d in doubts if d.until <= now]:
                self._forget(doubt)  # deleted meanwhile, or never seen again: nothing to confirm

    def _retouch(self, entry: Entry) -> None:
        """An entry closed without a new version reaching the store: the loop must look again."""
        self._retouch_key(entry.plural, entry.key)

    def _retouch_key(self, plural: str, key: Key) -> None:
        feed = self.store.feed
        if plural == TASKS:
            feed.tasks.add(key)
        elif plural == AGENTS:
            feed.agents.add(key)
        else:
            approval = self.store.approvals.get(key)
            if approval is not None:
                feed.tasks.add(approval.task_key)

    async def _check(self, entry: Entry) -> None:
        """Settle an entry by reading its object; the answer goes to the store like a watch event."""
        resource = _RESOURCES.get(entry.plural)
        namespace, name = entry.key
        if resource is None:
            self.ledger.close(entry)
            self._retouch(entry)
            return
        try:
            body = await self.api.call("GET", resource.path(namespace, name))
        except ApiError as exc:
            if exc.status != _NOT_FOUND:
                self.ledger.check_failed(entry, self.clock())
                return
            if not self.ledger.is_open(entry):
                return  # the watch settled it while we read; it may know of a newer object of that name
            self.store.sink(entry.plural).delete({"metadata": {"namespace": namespace, "name": name}})
        except KubeError:
            self.ledger.check_failed(entry, self.clock())
            return
        else:
            metrics.LEDGER_CHECKS.inc()
            if not self._read_settles(entry, body):
                return
        if self.ledger.is_open(entry):
            self.ledger.checked(entry)
            self._retouch(entry)

    def _read_settles(self, entry: Entry, body: dict[str, Any]) -> bool:
        """Whether what a settling GET read decides the entry (the store is told if it moved)."""
        if not self.ledger.is_open(entry):
            return False  # settled while we read (the watch was quicker): what we read may be older
        if str(body["metadata"].get("resourceVersion")) != entry.decided_on:
            self.store.sink(entry.plural).upsert(body)
            return True
        # Unchanged: decide the object again (compare-and-set keeps a late landing of the old
        # write from doubling anything), but an assignment's slot stays held while it may land.
        self.ledger.hold_slot(entry, self.clock())
        return True


_VERSION = re.compile(rb'"resourceVersion":"([^"]*)"')


def _version(answer: bytes) -> str:
    """The resourceVersion of an object in its JSON answer, without decoding the whole of it.

    The apiserver writes `metadata` before `spec` and `status`, and the first
    `resourceVersion` key of an object is its own (managedFields entries have none).
    """
    found = _VERSION.search(answer)
    if found is not None:
        return found.group(1).decode()
    return str((orjson.loads(answer).get("metadata") or {}).get("resourceVersion", ""))


_RESOURCES: dict[str, Resource] = {}


def register(resource: Resource) -> None:
    """Tell the writer how to GET objects of a kind it writes (for settling)."""
    _RESOURCES[resource.plural] = resource
