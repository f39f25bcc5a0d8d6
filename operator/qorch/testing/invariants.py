"""Invariants any qorch run must keep, checked straight from the API: for our tests and yours.

Call `check` at the end of a test (after the work settled) and wrap the part of
the test where agents run in a `CapacitySampler`::

    from qorch.testing.invariants import CapacitySampler, check

    with CapacitySampler(kubeconfig, namespace) as sampler:
        ...  # create tasks, run agents, wait for them
    sampler.assert_ok()
    check(kubeconfig, namespace, created=names, completions=handler_log).assert_ok()

The invariants (docs/testing.md):

- **I1** no task is placed on two agents at once and no attempt completes twice:
  each (task, attempt) has at most one history entry that ends it and one agent;
  a Succeeded task has exactly one Succeeded attempt; and, given the agent
  runtimes' own records of completed handler calls, no (task, attempt) completed
  twice, no task completed successfully twice, and each ran where its history says.
- **I2** every task is final (Succeeded, DeadLettered, Failed, Cancelled) with a
  reason, or waits with a stated reason (its Scheduled condition has a reason and
  a message); none of the tasks the test created is lost.
- **I3** no agent runs more than `spec.capacity` tasks (Assigned + Running) at
  once: once in `check`, continuously in `CapacitySampler`.
- **I4** no Assigned or Running task sits on an agent whose clearance is below its
  classification, that lacks a capability it requires, or whose labels its
  agentSelector does not match.
- **I5** replaying the audit log reproduces the final state: a hook (`replay`),
  skipped when not given; `audit_replay(directories, public_keys)` makes one from
  the operator's audit log (every replica's segments).

Everything is read with plain GETs: `check` takes a kubeconfig path or any
object with `tasks(namespace)` and `agents(namespace)` methods returning the
objects' JSON bodies (`ApiReader` is one). `check_bodies` runs the same checks
over bodies you already have.
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self

import yaml
from pydantic import ValidationError

from qorch.api.common import LabelSelector
from qorch.api.enums import Clearance

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "FINAL_PHASES",
    "ApiReader",
    "CapacitySampler",
    "Completion",
    "Reader",
    "Replay",
    "Report",
    "Violation",
    "audit_replay",
    "check",
    "check_bodies",
]

Body = Mapping[str, Any]

#: Phases a task never leaves.
FINAL_PHASES = frozenset({"Succeeded", "Failed", "DeadLettered", "Cancelled"})
_TOO_MANY_REQUESTS = 429

#: Phases that hold one of the agent's slots.
_HOLDING = frozenset({"Assigned", "Running"})

#: One completed handler call as the agent runtime recorded it: (task name, attempt, agent) or
#: (task name, attempt, agent, outcome), or a mapping with keys task, attempt, agent and optionally
#: outcome. Without an outcome the completion counts as successful.
Completion = tuple[str, int, str] | tuple[str, int, str, str] | Mapping[str, Any]

#: I5's hook: given the namespace, the final state that replaying the audit log reproduces, as
#: task name -> phase. `check` compares it with the tasks it read.
Replay = Callable[[str], Mapping[str, str]]

#: What the audit log's replay calls an outcome, where the Task's phase says otherwise.
_REPLAYED_PHASE = {"Rejected": "Cancelled"}


def audit_replay(logs: Iterable[str | Path], public_keys: Iterable[str | Path]) -> Replay:
    """I5's hook from the operator's audit log: its segments (files or directories), verified first.

    The hook raises AssertionError if the log does not verify; otherwise it gives each
    task of the namespace the phase its last recorded decision left it in (a rejection
    is the phase Cancelled).
    """
    from qorch.audit import load_public_key, read_segments, replay, verify_segments  # noqa: PLC0415

    paths, keys = list(logs), [load_public_key(k) for k in public_keys]

    def hook(namespace: str) -> Mapping[str, str]:
        verdict = verify_segments(read_segments(paths), keys)
        if not verdict.ok:
            raise AssertionError(f"I5: the audit log does not verify: {verdict}")
        prefix = f"{namespace}/"
        return {
            task.removeprefix(prefix): _REPLAYED_PHASE.get(outcome, outcome)
            for task, (_, outcome) in replay(verdict.decisions).items()
            if task.startswith(prefix)
        }

    return hook


@dataclass(frozen=True)
class Violation:
    """One broken invariant: which (I1..I5), on which object, and what was seen."""

    invariant: str
    object: str
    message: str

    def __str__(self) -> str:
        """`I3 Agent/a: ...`, one line."""
        return f"{self.invariant} {self.object}: {self.message}"


@dataclass
class Report:
    """What a check found: `violations` (empty when every invariant held) and what it skipped."""

    violations: list[Violation] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    tasks: int = 0
    agents: int = 0

    @property
    def ok(self) -> bool:
        """No violation."""
        return not self.violations

    def of(self, invariant: str) -> list[Violation]:
        """The violations of one invariant ("I1" .. "I5")."""
        return [v for v in self.violations if v.invariant == invariant]

    def assert_ok(self) -> None:
        """Raise AssertionError listing every violation, one a line; return quietly when there is none."""
        if self.violations:
            lines = "\n".join(f"  {v}" for v in self.violations)
            raise AssertionError(f"{len(self.violations)} invariant violation(s):\n{lines}")


class Reader(Protocol):
    """Anything that lists a namespace's Tasks and Agents as JSON bodies."""

    def tasks(self, namespace: str) -> Sequence[Body]:
        """Every Task of `namespace`."""
        ...

    def agents(self, namespace: str) -> Sequence[Body]:
        """Every Agent of `namespace`."""
        ...


class ApiReader:
    """A small synchronous reader: GETs with a kubeconfig's current context (client certificate or token)."""

    def __init__(self, kubeconfig: str | Path, *, timeout: float = 10) -> None:
        """Read the server and credentials of `kubeconfig`'s current context."""
        config = yaml.safe_load(Path(kubeconfig).read_text())
        context = next(c for c in config["contexts"] if c["name"] == config["current-context"])["context"]
        cluster = next(c for c in config["clusters"] if c["name"] == context["cluster"])["cluster"]
        user = next(u for u in config["users"] if u["name"] == context["user"])["user"]
        folder = Path(tempfile.mkdtemp(prefix="qorch-invariants-"))
        if "certificate-authority-data" in cluster:
            ca = folder / "ca.crt"
            ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
            self._tls = ssl.create_default_context(cafile=str(ca))
        elif "certificate-authority" in cluster:
            self._tls = ssl.create_default_context(cafile=str(cluster["certificate-authority"]))
        else:
            self._tls = ssl.create_default_context()
        if cluster.get("insecure-skip-tls-verify"):
            self._tls.check_hostname = False
            self._tls.verify_mode = ssl.CERT_NONE
        if "client-certificate-data" in user:
            cert, key = folder / "c.crt", folder / "c.key"
            cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
            key.write_bytes(base64.b64decode(user["client-key-data"]))
            self._tls.load_cert_chain(str(cert), str(key))
        elif "client-certificate" in user:
            self._tls.load_cert_chain(str(user["client-certificate"]), str(user["client-key"]))
        token = user.get("token")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._server = str(cluster["server"]).rstrip("/")
        self._timeout = timeout

    def get(self, path: str) -> dict[str, Any]:
        """GET `path`, decoded; 429s are waited out."""
        for _ in range(20):
            request = urllib.request.Request(self._server + path, headers=self._headers)  # noqa: S310
            try:
                with urllib.request.urlopen(request, context=self._tls, timeout=self._timeout) as resp:  # noqa: S310
                    decoded: dict[str, Any] = json.loads(resp.read())
                    return decoded
            except urllib.error.HTTPError as exc:
                if exc.code != _TOO_MANY_REQUESTS:
                    raise
                time.sleep(float(exc.headers.get("Retry-After") or 1))
        raise RuntimeError(f"GET {path}: the apiserver kept answering 429")

    def tasks(self, namespace: str) -> list[dict[str, Any]]:
        """Every Task of `namespace`."""
        items: list[dict[str, Any]] = self.get(f"/apis/qorch.io/v1alpha1/namespaces/{namespace}/tasks")["items"]
        return items

    def agents(self, namespace: str) -> list[dict[str, Any]]:
        """Every Agent of `namespace`."""
        items: list[dict[str, Any]] = self.get(f"/apis/qorch.io/v1alpha1/namespaces/{namespace}/agents")["items"]
        return items


def _reader(source: str | Path | Reader) -> Reader:
    return ApiReader(source) if isinstance(source, str | Path) else source


# ---------------------------------------------------------------------- the checks
def check(
    kubeconfig_or_api: str | Path | Reader,
    namespace: str,
    *,
    created: Iterable[str] | None = None,
    deleted: Iterable[str] = (),
    completions: Iterable[Completion] | None = None,
    replay: Replay | None = None,
) -> Report:
    """Read the namespace's Tasks and Agents once and check I1-I5 on them.

    `kubeconfig_or_api` is a kubeconfig path (its current context is used) or a
    `Reader`. `created` names the tasks the test created: each must still exist
    unless it is in `deleted` (deleted on purpose). `completions` are the agent
    runtimes' records of completed handler calls (see `Completion`), e.g. read
    from a handler log. `replay` is I5's hook (see `Replay`); without it I5 is
    skipped and the report says so. Run it once the work has settled: a task
    still in flight must have a stated reason, and is checked for capacity and
    placement as it stands.
    """
    reader = _reader(kubeconfig_or_api)
    tasks, agents = list(reader.tasks(namespace)), list(reader.agents(namespace))
    report = check_bodies(tasks, agents, created=created, deleted=deleted, completions=completions)
    if replay is None:
        report.skipped.append("I5: no replay hook given")
    else:
        report.violations += _replayed(replay(namespace), tasks)
    return report


def check_bodies(
    tasks: Sequence[Body],
    agents: Sequence[Body],
    *,
    created: Iterable[str] | None = None,
    deleted: Iterable[str] = (),
    completions: Iterable[Completion] | None = None,
) -> Report:
    """I1-I4 over Task and Agent bodies already read (I5 needs `check`'s replay hook)."""
    report = Report(tasks=len(tasks), agents=len(agents))
    report.violations += attempts_violations(tasks)
    if completions is None:
        report.skipped.append("I1: no runtime completions given; checked from Task status only")
    else:
        report.violations += completion_violations(tasks, completions)
    report.violations += state_violations(tasks, created=created, deleted=deleted)
    report.violations += capacity_violations(tasks, agents)
    report.violations += placement_violations(tasks, agents)
    return report


def _name(body: Body) -> str:
    return str((body.get("metadata") or {}).get("name", ""))


def _task(body: Body) -> str:
    return f"Task/{_name(body)}"


def _status(body: Body) -> Mapping[str, Any]:
    return body.get("status") or {}


def _phase(body: Body) -> str:
    return str(_status(body).get("phase") or "")


def _history(body: Body) -> list[Mapping[str, Any]]:
    return list(_status(body).get("history") or ())


def _placements(body: Body) -> dict[int, set[str]]:
    """Attempt -> the agents the task's status places it on (history's Assigned/Running/ending entries, assignment)."""
    placed: dict[int, set[str]] = defaultdict(set)
    for entry in _history(body):
        attempt, agent = int(entry.get("attempt") or 0), str(entry.get("agent") or "")
        if attempt and agent and (entry.get("phase") in _HOLDING or entry.get("outcome")):
            placed[attempt].add(agent)
    assignment = _status(body).get("assignment") or {}
    if assignment.get("agent"):
        placed[int(assignment.get("attempt") or 1)].add(str(assignment["agent"]))
    return placed


def attempts_violations(tasks: Iterable[Body]) -> list[Violation]:
    """I1 from Task status: one ending and one agent per attempt; a Succeeded task has exactly one Succeeded attempt."""
    found: list[Violation] = []
    for body in tasks:
        history = _history(body)
        ended = Counter(int(h.get("attempt") or 0) for h in history if h.get("outcome"))
        for attempt, times in sorted(ended.items()):
            if times > 1:
                outcomes = [h["outcome"] for h in history if h.get("outcome") and int(h.get("attempt") or 0) == attempt]
                found.append(Violation("I1", _task(body), f"attempt {attempt} ended {times} times: {outcomes}"))
        for attempt, agents in sorted(_placements(body).items()):
            if len(agents) > 1:
                found.append(Violation("I1", _task(body), f"attempt {attempt} placed on {sorted(agents)} at once"))
        succeeded = [int(h.get("attempt") or 0) for h in history if h.get("outcome") == "Succeeded"]
        if len(succeeded) > 1:
            found.append(Violation("I1", _task(body), f"attempts {succeeded} all succeeded"))
        if _phase(body) == "Succeeded" and not succeeded:
            found.append(Violation("I1", _task(body), "Succeeded, but no attempt in its history succeeded"))
        elif succeeded and _phase(body) != "Succeeded":
            found.append(
                Violation("I1", _task(body), f"attempt {succeeded[0]} succeeded, but the task is {_phase(body)!r}")
            )
    return found


def _completion(record: Completion) -> tuple[str, int, str, str]:
    if isinstance(record, Mapping):
        return (
            str(record["task"]),
            int(record["attempt"]),
            str(record.get("agent") or ""),
            str(record.get("outcome") or "Succeeded"),
        )
    if len(record) == 4:  # noqa: PLR2004 - (task, attempt, agent, outcome)
        return str(record[0]), int(record[1]), str(record[2]), str(record[3])
    return str(record[0]), int(record[1]), str(record[2]), "Succeeded"


def completion_violations(tasks: Iterable[Body], completions: Iterable[Completion]) -> list[Violation]:
    """I1 from the agent runtimes' records: no (task, attempt) completes twice, no task succeeds twice.

    A completion on an agent other than the one the task's history places that
    attempt on is a violation too (the attempt ran on two agents).
    """
    found: list[Violation] = []
    records = [_completion(c) for c in completions]
    by_attempt = Counter((task, attempt) for task, attempt, _, _ in records)
    for (task, attempt), times in sorted(by_attempt.items()):
        if times > 1:
            agents = sorted({a for t, n, a, _ in records if (t, n) == (task, attempt)})
            found.append(Violation("I1", f"Task/{task}", f"attempt {attempt} completed {times} times (on {agents})"))
    successes: dict[str, list[int]] = defaultdict(list)
    for task, attempt, _, outcome in records:
        if outcome == "Succeeded":
            successes[task].append(attempt)
    for task, attempts in sorted(successes.items()):
        if len(set(attempts)) > 1:
            found.append(Violation("I1", f"Task/{task}", f"completed successfully in attempts {sorted(set(attempts))}"))
    placed = {_name(body): _placements(body) for body in tasks}
    for task, attempt, agent, _ in records:
        where = placed.get(task, {}).get(attempt, set())
        if agent and where and agent not in where:
            found.append(
                Violation(
                    "I1", f"Task/{task}", f"attempt {attempt} completed on {agent}, but was placed on {sorted(where)}"
                )
            )
    return found


def _scheduled(body: Body) -> Mapping[str, Any]:
    return next((c for c in _status(body).get("conditions") or () if c.get("type") == "Scheduled"), {})


def state_violations(
    tasks: Iterable[Body], *, created: Iterable[str] | None = None, deleted: Iterable[str] = ()
) -> list[Violation]:
    """I2: every task is final with a reason or waits with a stated reason; none of `created` is lost."""
    found: list[Violation] = []
    present: set[str] = set()
    for body in tasks:
        present.add(_name(body))
        phase, condition = _phase(body), _scheduled(body)
        reason, message = str(condition.get("reason") or ""), str(condition.get("message") or "")
        if not phase:
            found.append(Violation("I2", _task(body), "has no phase: the operator never answered it"))
        elif phase in FINAL_PHASES:
            if not reason:
                found.append(Violation("I2", _task(body), f"{phase} without a reason"))
        elif not reason or not message:
            found.append(
                Violation(
                    "I2",
                    _task(body),
                    f"waits in {phase} without a stated reason (reason={reason!r}, message={message!r})",
                )
            )
    gone = set(deleted)
    found += [
        Violation("I2", f"Task/{name}", "lost: created, not deleted, and no longer there")
        for name in sorted(set(created or ()) - present - gone)
    ]
    return found


def _capacity(agent: Body) -> int:
    return int((agent.get("spec") or {}).get("capacity") or 1)


def load(tasks: Iterable[Body]) -> Counter[str]:
    """Agent name -> how many tasks are Assigned or Running on it."""
    held: Counter[str] = Counter()
    for body in tasks:
        agent = (_status(body).get("assignment") or {}).get("agent")
        if _phase(body) in _HOLDING and agent:
            held[str(agent)] += 1
    return held


def capacity_violations(tasks: Iterable[Body], agents: Iterable[Body]) -> list[Violation]:
    """I3 at one instant: no agent holds more Assigned + Running tasks than its spec.capacity."""
    held = load(tasks)
    found = []
    for agent in agents:
        name, capacity = _name(agent), _capacity(agent)
        if held[name] > capacity:
            found.append(Violation("I3", f"Agent/{name}", f"holds {held[name]} tasks, capacity {capacity}"))
    return found


def placement_violations(tasks: Iterable[Body], agents: Iterable[Body]) -> list[Violation]:
    """I4: each Assigned or Running task's agent exists, is cleared, capable and selected."""
    by_name = {_name(a): a for a in agents}
    found: list[Violation] = []
    for body in tasks:
        agent_name = str((_status(body).get("assignment") or {}).get("agent") or "")
        if _phase(body) not in _HOLDING or not agent_name:
            continue
        agent = by_name.get(agent_name)
        if agent is None:
            found.append(Violation("I4", _task(body), f"{_phase(body)} on {agent_name}, which does not exist"))
            continue
        spec, agent_spec = body.get("spec") or {}, agent.get("spec") or {}
        classification = str(spec.get("classification") or Clearance.INTERNAL.value)
        clearance = str(agent_spec.get("clearance") or Clearance.INTERNAL.value)
        if Clearance.rank_of(clearance) < Clearance.rank_of(classification):
            found.append(
                Violation("I4", _task(body), f"{classification} task on {agent_name}, cleared only for {clearance}")
            )
        missing = sorted(set(spec.get("requires") or ()) - set(agent_spec.get("capabilities") or ()))
        if missing:
            found.append(Violation("I4", _task(body), f"on {agent_name}, which lacks {missing}"))
        selector = spec.get("agentSelector")
        if selector:
            labels = dict((agent.get("metadata") or {}).get("labels") or {})
            try:
                matches = LabelSelector.model_validate(selector).matches(labels)
            except ValidationError as exc:
                found.append(Violation("I4", _task(body), f"agentSelector unreadable: {exc.errors()[:1]}"))
                continue
            if not matches:
                found.append(
                    Violation("I4", _task(body), f"on {agent_name}, whose labels {labels} its selector rejects")
                )
    return found


def _replayed(reproduced: Mapping[str, str], tasks: Iterable[Body]) -> list[Violation]:
    """I5: the state the audit log's replay reproduced equals the tasks' phases."""
    observed = {_name(body): _phase(body) for body in tasks}
    found: list[Violation] = []
    for name in sorted(set(observed) | set(reproduced)):
        seen, replayed = observed.get(name), reproduced.get(name)
        if seen != replayed:
            found.append(
                Violation("I5", f"Task/{name}", f"is {seen!r}, but replaying the audit log gives {replayed!r}")
            )
    return found


# ---------------------------------------------------------------------- continuous sampling
class CapacitySampler:
    """I3 (and I1's one-agent-at-a-time) sampled continuously: a thread polling Tasks and Agents.

    Use it as a context manager around the part of a test where agents run::

        with CapacitySampler(kubeconfig, namespace, interval=0.1) as sampler:
            ...
        sampler.assert_ok()

    Every `interval` seconds it lists the namespace's Tasks and Agents and counts,
    per agent, the tasks Assigned or Running on it against `spec.capacity`. It
    records `peak` (agent -> the highest count seen), `samples`, every violation
    (each sample over capacity is one, so their number says how long it lasted),
    and an I1 violation when one (task uid, attempt) is seen on two agents across
    samples. Failed reads are counted in `errors` and otherwise ignored.
    """

    def __init__(self, kubeconfig_or_api: str | Path | Reader, namespace: str, *, interval: float = 0.1) -> None:
        """Poll `namespace` every `interval` seconds once started."""
        self._reader = _reader(kubeconfig_or_api)
        self.namespace = namespace
        self.interval = interval
        self.peak: dict[str, int] = {}
        self.samples = 0
        self.errors = 0
        self.violations: list[Violation] = []
        self._seen: dict[tuple[str, int], str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        """Start polling (one sample is taken before this returns)."""
        self.sample()
        self._thread = threading.Thread(target=self._run, name="qorch-capacity-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        """Take a last sample and stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        """Take one sample now."""
        try:
            tasks, agents = list(self._reader.tasks(self.namespace)), list(self._reader.agents(self.namespace))
        except Exception:  # noqa: BLE001 - a failed read is one sample fewer, not a violation
            self.errors += 1
            return
        self.record(tasks, agents)

    def record(self, tasks: Sequence[Body], agents: Sequence[Body]) -> None:
        """Account one sample of bodies (what `sample` does after reading)."""
        held = load(tasks)
        for agent in agents:
            name = _name(agent)
            self.peak[name] = max(self.peak.get(name, 0), held[name])
        self.violations += capacity_violations(tasks, agents)
        for body in tasks:
            assignment = _status(body).get("assignment") or {}
            if _phase(body) not in _HOLDING or not assignment.get("agent"):
                continue
            uid = str((body.get("metadata") or {}).get("uid") or _name(body))
            key, agent_name = (uid, int(assignment.get("attempt") or 1)), str(assignment["agent"])
            before = self._seen.setdefault(key, agent_name)
            if before != agent_name:
                self.violations.append(
                    Violation("I1", _task(body), f"attempt {key[1]} seen on {before}, then on {agent_name}")
                )
        self.samples += 1

    def report(self) -> Report:
        """The violations so far; one more when no sample was ever taken."""
        report = Report(violations=list(self.violations))
        if not self.samples:
            report.violations.append(Violation("I3", f"Namespace/{self.namespace}", "no sample was taken"))
        return report

    def assert_ok(self) -> None:
        """Raise AssertionError listing every violation seen."""
        self.report().assert_ok()

    def __iter__(self) -> Iterator[Violation]:
        """The violations so far."""
        return iter(list(self.violations))
