"""The operator's decisions in the tamper-evident audit log (`qorch.audit`), one segment per leader term.

What is recorded, and when:
- task transitions when their status write *landed* (the writer answered
  WRITTEN): assign, start, requeue, retry, finish, dead-letter, reject, and
  approve when a write takes an approval-gated task past the gate. A decision
  whose write failed its compare-and-set never happened, so it is not in the
  log, and replaying the log gives what the apiserver holds;
- decisions that write no status of their own, when they are made: a breaker
  changing state (only ever after the write ending the attempt landed), a
  refused report (the report is ignored), a refused assignment (never written),
  and leadership (acquired, lost, released).

Segments: a term's entries go to a file of its own in the audit directory,
`term-<epoch>-<identity>.log`, continuing the chain from the anchor the term
found on the leader Lease (`qorch.io/audit-anchor`, `SEQ:HASH`), and every
renewal of the Lease carries the segment's new head, so the anchor is never
older than the retry period. `qorch audit verify DIR...` links the segments of
all replicas into one chain (`qorch.audit.segments`).

Keys: the signing key is a PEM file (a Secret's volume). It is read at start,
again when a term begins, and checked every few seconds: a changed key is
rotated to with a `key-rotation` entry signed by the previous one.

Appending fsyncs, so it runs in a thread of its own: the loop only queues
entries. A failure to append is logged and counted (`qorch_audit_failures_total`),
never fatal to scheduling.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import queue
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qorch.api import constants
from qorch.api.enums import ApprovalDecision, AttemptOutcome, Reason, TaskPhase
from qorch.audit import Anchor, AuditError, AuditKeyError, AuditLog, key_id, load_private_key, parse_anchor
from qorch.controller import metrics

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from qorch.controller.documents import StatusChange
    from qorch.controller.records import ApprovalRecord, TaskRecord

__all__ = ["DecisionLog", "task_entries"]

log = logging.getLogger(__name__)
_KEY_CHECK_SECONDS = 5.0
_PAST_GATE = frozenset({TaskPhase.BLOCKED, TaskPhase.QUEUED, TaskPhase.ASSIGNED, TaskPhase.RETRYING})
_BEFORE_GATE = frozenset({None, TaskPhase.PENDING.value, TaskPhase.AWAITING_APPROVAL.value})
_FINISHED = frozenset({TaskPhase.SUCCEEDED, TaskPhase.FAILED, TaskPhase.CANCELLED})
_REQUEUED = frozenset({AttemptOutcome.REFUSED, AttemptOutcome.WITHDRAWN})
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

Entry = tuple[str, dict[str, Any], dict[str, Any]]  # (kind, subject, data)


def _kind(change: StatusChange) -> str | None:  # noqa: PLR0911 - one answer per kind of transition
    """The audit kind of a task transition; None for a reason-only update (waiting, and why)."""
    phase = change.phase
    if change.reserve:
        return "assign"
    if phase is TaskPhase.RUNNING:
        return "start"
    if phase is TaskPhase.DEAD_LETTERED:
        return "dead-letter"
    if change.reason is Reason.APPROVAL_REJECTED:
        return "reject"
    if phase in _FINISHED:
        return "finish"
    if change.reason is Reason.REDRIVEN:
        return "requeue"
    if change.outcome is not None:
        return "requeue" if change.outcome in _REQUEUED else "retry"
    return None


def task_entries(task: TaskRecord, change: StatusChange, approvals: Sequence[ApprovalRecord] = ()) -> list[Entry]:
    """The entries a landed write of `change`, decided on `task`, adds to the log (maybe none)."""
    subject = {"task": f"{task.namespace}/{task.name}", "uid": task.uid}
    entries: list[Entry] = []
    if task.approval_required and task.phase in _BEFORE_GATE and change.phase in _PAST_GATE:
        names = sorted(
            a.name
            for a in approvals
            if a.task_uid == task.uid
            and a.decision == ApprovalDecision.APPROVE.value
            and a.task_generation == task.generation
        )
        entries.append(("approve", subject, {"generation": task.generation, "approvals": names}))
    kind = _kind(change)
    if kind is not None:
        data: dict[str, Any] = {
            "phase": change.phase.value,
            "reason": change.reason.value,
            "decidedOn": task.resource_version,
        }
        agent, attempt = change.agent or task.agent, change.attempt or task.attempt
        # Whether the task keeps an agent after this transition (replay follows `agent`).
        holds = kind in ("assign", "start") or change.phase is TaskPhase.SUCCEEDED
        if kind == "finish":
            data["agent"] = (agent or None) if holds else None
        elif holds and agent:
            data["agent"] = agent
        if agent and not holds:
            data["previousAgent"] = agent  # the attempt this transition ends; the task has no agent after it
        if attempt:
            data["attempt"] = attempt
        if change.outcome is not None:
            data["outcome"] = change.outcome.value
        entries.append((kind, subject, data))
    return entries


def _fingerprint(path: Path) -> str:
    """What identifies the key file's content (a Secret update swaps the file behind a symlink)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


class DecisionLog:
    """The operator's audit log: a segment per leader term, written from a thread of its own."""

    def __init__(self, directory: Path | str, key_path: Path | str, *, identity: str) -> None:
        """Load the signing key (AuditKeyError if it cannot be) and make the directory; nothing is written yet."""
        self.directory = Path(directory)
        self.key_path = Path(key_path)
        self.identity = identity
        # The fingerprint before the key: a Secret update in between is then seen (and loaded) at the next
        # check, never taken for the key already loaded.
        self._fingerprint = _fingerprint(self.key_path)
        self._key = load_private_key(self.key_path)
        self._previous: Ed25519PrivateKey | None = None  # the key this one replaced, for a term's first entry
        self.directory.mkdir(parents=True, exist_ok=True)
        self._log: AuditLog | None = None
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="qorch-audit", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ what the operator calls
    def acquired(self, term: int, annotations: Mapping[str, str]) -> None:
        """This replica now leads term `term`; `annotations` are those the Lease carried when it was taken."""
        self._jobs.put(lambda: self._begin(term, dict(annotations)))

    def lost(self, why: str) -> None:
        """Leadership was lost (the entry stays in this term's segment; it cannot be anchored any more)."""
        self.record("leader", {"lease": "operator"}, {"event": "lost", "identity": self.identity, "why": why})

    def released(self) -> None:
        """A clean shutdown gives the Lease up: the last entry, then the queue is drained."""
        self.record("leader", {"lease": "operator"}, {"event": "released", "identity": self.identity})

    def record(self, kind: str, subject: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        """Queue an entry for this term's segment (dropped when no term is open)."""
        self._jobs.put(lambda: self._append(kind, dict(subject), dict(data)))

    def task_written(self, task: TaskRecord, change: StatusChange, approvals: Sequence[ApprovalRecord]) -> None:
        """A task's status write landed: record what it did."""
        for kind, subject, data in task_entries(task, change, approvals):
            self.record(kind, subject, data)

    def annotations(self) -> dict[str, str]:
        """What the leader Lease should carry now: this segment's head and key; {} before the term's first entry."""
        current = self._log
        if current is None:
            return {}
        head = current.head()
        if head.seq < 0:
            return {}
        return {
            constants.AUDIT_ANCHOR_ANNOTATION: str(head),
            constants.AUDIT_KEY_ANNOTATION: current.key_id,
        }

    def check_key(self) -> None:
        """Queue a look at the key file: a changed key is rotated to (in the open segment, if any)."""
        self._jobs.put(self._reload_key)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued entry is written (True), or `timeout` seconds (False)."""
        done = threading.Event()
        self._jobs.put(done.set)
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued and stop the thread."""
        self._jobs.put(None)
        self._thread.join(timeout)

    async def run(self, every: float = _KEY_CHECK_SECONDS) -> None:
        """Check the key file every `every` seconds until cancelled."""
        while True:
            await asyncio.sleep(every)
            self.check_key()

    @property
    def segment(self) -> Path | None:
        """This term's segment file (None before a term began)."""
        return self._log.path if self._log is not None else None

    # ------------------------------------------------------------------ the thread
    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # one failed entry must not end the log
                metrics.AUDIT_FAILURES.inc()
                log.exception("audit log")

    def _append(self, kind: str, subject: dict[str, Any], data: dict[str, Any]) -> None:
        if self._log is None:  # no term open (or its segment could not be opened): a gap, said and counted
            metrics.AUDIT_FAILURES.inc()
            log.warning("audit log: %s entry not written: no segment is open", kind)
            return
        try:
            self._log.append(kind, subject, data)
        except AuditError as exc:
            metrics.AUDIT_FAILURES.inc()
            log.error("audit log: %s entry not written: %s", kind, exc)  # noqa: TRY400 - no traceback
            return
        metrics.AUDIT_ENTRIES.labels(kind).inc()

    def _begin(self, term: int, annotations: dict[str, str]) -> None:
        """Open the term's segment after the anchored head, and write its first entry (who leads, from where)."""
        self._reload_key()
        inherited = annotations.get(constants.AUDIT_ANCHOR_ANNOTATION, "")
        start: Anchor | None = None
        if inherited:
            try:
                start = parse_anchor(inherited)
            except ValueError as exc:
                log.error("audit log: the Lease's anchor is unusable (%s); this segment starts a new chain", exc)  # noqa: TRY400
        signer = self._key
        chained = annotations.get(constants.AUDIT_KEY_ANNOTATION, "")
        if self._previous is not None and chained == key_id(self._previous.public_key()):
            signer = self._previous  # the chain's key until this term records the rotation
        self._log = None  # the last term's segment is closed: never chain a new term onto it
        self._log = self._open(f"term-{term:08d}-{_UNSAFE.sub('_', self.identity)}", signer, start)
        data = {"event": "acquired", "term": term, "identity": self.identity, "from": inherited or None}
        self._append("leader", {"lease": "operator"}, data)
        if signer is not self._key:
            self._rotate(self._key)
        log.info("audit log: term %d writes %s, continuing from %s", term, self._log.path, inherited or "the start")

    def _open(self, stem: str, signer: Ed25519PrivateKey, start: Anchor | None) -> AuditLog:
        """The term's segment; a new file beside it when one of that name cannot be continued.

        The same pod taking its own Lease back keeps the term (and the file name); a torn
        last line or a key changed meanwhile must not leave the whole term unlogged.
        """
        path = self.directory / f"{stem}.log"
        for n in range(1, 1000):
            try:
                return AuditLog(path, signer, start=start)
            except (AuditError, OSError) as exc:
                log.error("audit log: %s cannot be continued (%s); writing a new segment", path, exc)  # noqa: TRY400
                metrics.AUDIT_FAILURES.inc()
                path = self.directory / f"{stem}.{n}.log"
        msg = f"audit log: no segment could be opened for {stem}"
        raise AuditError(msg)

    def _reload_key(self) -> None:
        try:
            fingerprint = _fingerprint(self.key_path)
            if fingerprint == self._fingerprint:
                return
            key = load_private_key(self.key_path)
        except (OSError, AuditKeyError) as exc:
            metrics.AUDIT_FAILURES.inc()
            log.error("audit log: the signing key could not be reloaded, the old one signs on: %s", exc)  # noqa: TRY400
            return
        self._fingerprint = fingerprint
        if key_id(key.public_key()) == key_id(self._key.public_key()):
            return
        self._previous, self._key = self._key, key
        if self._log is not None:
            self._rotate(key)

    def _rotate(self, key: Ed25519PrivateKey) -> None:
        assert self._log is not None  # noqa: S101 - only called with a segment open
        old = self._log.key_id
        try:
            self._log.rotate(key)
        except AuditError as exc:
            metrics.AUDIT_FAILURES.inc()
            log.error("audit log: key rotation not written: %s", exc)  # noqa: TRY400
            return
        metrics.AUDIT_ENTRIES.labels("key-rotation").inc()
        log.info("audit log: signing key rotated from %s to %s", old, self._log.key_id)
