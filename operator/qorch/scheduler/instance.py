"""The offline scheduling contract: a JSON document in, a Result out (`qorch schedule`).

Parsing is strict and speaks the user's language: every error names the item
(`agents[3] "a-3"`), the field and what is wrong, and is raised as
`InstanceError` so the CLI can print one line and exit 2. Only `name` is
required; everything else defaults as in the CRDs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qorch.api.common import DNS_LABEL
from qorch.api.enums import Clearance, Strategy
from qorch.scheduler.policy import Policy
from qorch.scheduler.scorers import DEFAULT_WEIGHTS, REGISTRY
from qorch.scheduler.snapshot import BREAKER_CLOSED, BREAKER_HALF_OPEN, BREAKER_OPEN, Snapshot
from qorch.scheduler.tasks import TaskBatch

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Instance", "InstanceError", "parse"]

_LEVELS = [c.value for c in Clearance]
_CAPABILITY = re.compile(DNS_LABEL)
_MAX_NAMESPACE_WEIGHT = 1_000_000.0
_MAX_QUOTA = 1_000_000_000
_MAX_SCORER_WEIGHT = 1_000.0
_MIN_TEMPERATURE = 1e-3  # below this (but above 0) the softmax underflows to NaN
_BREAKER = {"Closed": BREAKER_CLOSED, "HalfOpen": BREAKER_HALF_OPEN, "Open": BREAKER_OPEN}
_AGENT_FIELDS = {
    "name",
    "capabilities",
    "capacity",
    "activeTasks",
    "clearance",
    "ready",
    "cordoned",
    "successRate",
    "costPerTask",
    "latencyMs",
    "labels",
    "entanglementGroup",
    "breaker",
}
_TASK_FIELDS = {
    "name",
    "requires",
    "priority",
    "classification",
    "deadlineSeconds",
    "waitedSeconds",
    "namespace",
    "agentSelector",
    "entanglementGroup",
    "avoidGroup",
    "avoidAgent",
    "maxCost",
    "key",
}
_POLICY_FIELDS = {
    "strategy",
    "temperature",
    "seed",
    "sample",
    "weights",
    "batchSize",
    "namespaceWeights",
    "quotas",
    "entanglementStrength",
    "couplings",
}


class InstanceError(ValueError):
    """The instance is malformed; the message names the item and field."""


@dataclass(frozen=True, slots=True)
class Instance:
    """A parsed instance, ready for `cycle.schedule`."""

    snapshot: Snapshot
    tasks: TaskBatch
    policy: Policy


class _Item:
    """Field access with typed checks for one agent or task dict."""

    def __init__(self, where: str, raw: object, allowed: set[str]) -> None:
        if not isinstance(raw, dict):
            raise InstanceError(f"{where}: must be an object, got {type(raw).__name__}")
        self.raw: dict[str, Any] = raw
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise InstanceError(f"{where}: 'name' is required and must be a non-empty string")
        self.where = f'{where} "{name}"'
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise InstanceError(f"{self.where}: unknown field '{unknown[0]}' (allowed: {', '.join(sorted(allowed))})")

    def fail(self, field: str, what: str) -> InstanceError:
        return InstanceError(f"{self.where}: '{field}' {what}, got {self.raw.get(field)!r}")

    def integer(self, field: str, default: int, low: int, high: int) -> int:
        value = self.raw.get(field, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(field, f"must be an integer from {low} to {high}")
        return value

    def number(self, field: str, default: float, low: float, high: float = math.inf) -> float:
        if field not in self.raw:
            return default
        value = self.raw[field]
        finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not finite or not max(low, -math.inf) <= value <= high:
            bounds = (f" >= {low:g}" if low > -math.inf else "") + (f" and <= {high:g}" if high < math.inf else "")
            raise self.fail(field, f"must be a finite number{bounds}")
        return float(value)

    def boolean(self, field: str, *, default: bool) -> bool:
        value = self.raw.get(field, default)
        if not isinstance(value, bool):
            raise self.fail(field, "must be true or false")
        return value

    def string(self, field: str, default: str = "") -> str:
        value = self.raw.get(field, default)
        if not isinstance(value, str):
            raise self.fail(field, "must be a string")
        return value

    def names(self, field: str) -> list[str]:
        """Capability names: DNS labels, each once, as the CRDs require."""
        value = self.raw.get(field, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(field, "must be a list of capability names")
        bad = next((v for v in value if len(v) > 63 or not _CAPABILITY.match(v)), None)  # noqa: PLR2004
        if bad is not None:
            raise InstanceError(
                f"{self.where}: '{field}' has {bad!r}: a capability is a DNS label "
                "(lowercase letters, digits and '-', at most 63)"
            )
        if len(set(value)) != len(value):
            twice = next(v for v in value if value.count(v) > 1)
            raise InstanceError(f"{self.where}: '{field}' lists {twice!r} twice")
        return value

    def level(self, field: str) -> int:
        value = self.raw.get(field, "internal")
        if value not in _LEVELS:
            raise self.fail(field, f"must be one of {', '.join(_LEVELS)}")
        return Clearance.rank_of(value)

    def labels(self, field: str) -> dict[str, str]:
        value = self.raw.get(field, {})
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise self.fail(field, "must be an object of string labels")
        return value


def _unique(items: list[_Item], kind: str) -> None:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        name = item.raw["name"]
        if name in seen:
            raise InstanceError(f'{kind}[{i}] "{name}": duplicate name (also {kind}[{seen[name]}])')
        seen[name] = i


def _policy(raw: object) -> Policy:
    if raw is None:
        return Policy()
    if not isinstance(raw, dict):
        raise InstanceError("policy: must be an object")
    unknown = sorted(set(raw) - _POLICY_FIELDS)
    if unknown:
        raise InstanceError(f"policy: unknown field '{unknown[0]}' (allowed: {', '.join(sorted(_POLICY_FIELDS))})")
    strategy = raw.get("strategy", "quantum")
    if not isinstance(strategy, str) or strategy not in {s.value for s in Strategy}:
        raise InstanceError(
            f"policy: 'strategy' must be one of {', '.join(s.value for s in Strategy)}, got {strategy!r}"
        )
    item = _Item("policy", {"name": "policy", **raw}, _POLICY_FIELDS | {"name"})
    batch = raw.get("batchSize")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise InstanceError(f"policy: 'batchSize' must be an integer >= 1, got {batch!r}")
    weights = _weights(_object(raw, "weights"))
    couplings = _couplings(raw.get("couplings") or [])
    temperature = item.number("temperature", 0.05, 0.0, 10.0)
    if 0.0 < temperature < _MIN_TEMPERATURE:
        raise InstanceError(f"policy: 'temperature' must be 0 or from {_MIN_TEMPERATURE:g} to 10, got {temperature!r}")
    return Policy(
        strategy=Strategy(strategy),
        temperature=temperature,
        seed=item.integer("seed", 0, 0, 2**63 - 1),
        sample=item.boolean("sample", default=False),
        weights=weights,
        batch_size=batch,
        namespace_weights=_namespace_weights(_object(raw, "namespaceWeights")),
        namespace_quota=_quotas(_object(raw, "quotas")),
        entanglement_strength=item.number("entanglementStrength", 1.0, 0.0, 10.0),
        couplings=couplings,
    )


def _object(raw: dict[str, Any], field: str) -> dict[str, Any]:
    value = raw.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InstanceError(f"policy: '{field}' must be an object, got {type(value).__name__}")
    return value


def _finite(value: object, low: float, high: float) -> bool:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return ok and low <= value <= high  # type: ignore[operator]


def _weights(raw: dict[str, Any]) -> dict[str, float]:
    weights = dict(DEFAULT_WEIGHTS)
    for key, value in raw.items():
        if key not in REGISTRY:
            raise InstanceError(f"policy: 'weights' has unknown scorer {key!r} (known: {', '.join(sorted(REGISTRY))})")
        if not _finite(value, 0.0, _MAX_SCORER_WEIGHT):
            raise InstanceError(
                f"policy: 'weights.{key}' must be a number from 0 to {_MAX_SCORER_WEIGHT:g}, got {value!r}"
            )
        weights[key] = float(value)
    return weights


def _namespace_weights(raw: dict[str, Any]) -> dict[str, float]:
    for key, value in raw.items():
        if not _finite(value, 0.0, _MAX_NAMESPACE_WEIGHT) or value <= 0:
            raise InstanceError(
                f"policy: 'namespaceWeights.{key}' must be a number > 0 and <= {_MAX_NAMESPACE_WEIGHT:g}, got {value!r}"
            )
    return {str(k): float(v) for k, v in raw.items()}


def _quotas(raw: dict[str, Any]) -> dict[str, int]:
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_QUOTA:
            raise InstanceError(
                f"policy: 'quotas.{key}' must be a whole number of concurrent tasks from 0 to {_MAX_QUOTA:,}, "
                f"got {value!r}"
            )
    return {str(k): int(v) for k, v in raw.items()}


def _couplings(raw: object) -> dict[tuple[str, str], float]:
    if not isinstance(raw, list):
        raise InstanceError(f"policy: 'couplings' must be a list of [groupA, groupB, strength], got {raw!r}")
    couplings: dict[tuple[str, str], float] = {}
    for entry in raw:
        ok = isinstance(entry, list) and len(entry) == 3  # noqa: PLR2004 - [groupA, groupB, strength]
        if not ok or not _finite(entry[2], 0.0, 1.0) or not all(isinstance(g, str) for g in entry[:2]):
            raise InstanceError(f"policy: each of 'couplings' must be [groupA, groupB, strength 0..1], got {entry!r}")
        couplings[(str(entry[0]), str(entry[1]))] = float(entry[2])
    return couplings


def _list(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise InstanceError(f"'{key}' must be a list")
    return value


def parse(doc: object) -> Instance:
    """Validate an instance document and build the scheduler's inputs."""
    if not isinstance(doc, dict):
        raise InstanceError("the instance must be a JSON object with 'agents', 'tasks' and optional 'policy'")
    unknown = sorted(set(doc) - {"agents", "tasks", "policy"})
    if unknown:
        raise InstanceError(f"unknown top-level field '{unknown[0]}' (allowed: agents, tasks, policy)")
    agents = [_Item(f"agents[{i}]", a, _AGENT_FIELDS) for i, a in enumerate(_list(doc, "agents"))]
    tasks = [_Item(f"tasks[{i}]", t, _TASK_FIELDS) for i, t in enumerate(_list(doc, "tasks"))]
    _unique(agents, "agents")
    _unique(tasks, "tasks")

    def col(items: list[_Item], fn: Callable[[_Item], Any]) -> list[Any]:
        return [fn(item) for item in items]

    snapshot = Snapshot.build(
        names=col(agents, lambda a: a.raw["name"]),
        capabilities=col(agents, lambda a: a.names("capabilities")),
        capacity=col(agents, lambda a: a.integer("capacity", 1, 1, 100_000)),
        active=col(agents, lambda a: a.integer("activeTasks", 0, 0, 10_000_000)),
        clearance=col(agents, lambda a: a.level("clearance")),
        ready=col(agents, lambda a: a.boolean("ready", default=True) and not a.boolean("cordoned", default=False)),
        breaker=col(agents, _breaker),
        success_rate=col(agents, lambda a: a.number("successRate", 1.0, 0.0, 1.0)),
        cost=col(agents, lambda a: a.number("costPerTask", 0.0, 0.0)),
        latency_ms=col(agents, lambda a: a.number("latencyMs", 0.0, 0.0)),
        groups=col(agents, lambda a: a.string("entanglementGroup")),
        labels=col(agents, lambda a: a.labels("labels")),
    )
    batch = TaskBatch.build(
        snapshot,
        names=col(tasks, lambda t: t.raw["name"]),
        requires=col(tasks, lambda t: t.names("requires")),
        priority=col(tasks, lambda t: t.integer("priority", 500, 0, 1000)),
        classification=col(tasks, lambda t: t.level("classification")),
        deadline_s=col(tasks, lambda t: t.number("deadlineSeconds", math.inf, -math.inf)),
        waited_s=col(tasks, lambda t: t.number("waitedSeconds", 0.0, 0.0)),
        namespaces=col(tasks, lambda t: t.string("namespace", "default")),
        selectors=col(tasks, _selector),
        groups=col(tasks, lambda t: t.string("entanglementGroup")),
        avoid_groups=col(tasks, lambda t: t.string("avoidGroup")),
        max_cost=col(tasks, lambda t: t.number("maxCost", math.inf, 0.0) if "maxCost" in t.raw else None),
        keys=col(tasks, lambda t: t.string("key", t.raw["name"])),
        avoid_agents=col(tasks, lambda t: t.string("avoidAgent")),
    )
    return Instance(snapshot, batch, _policy(doc.get("policy")))


def _breaker(item: _Item) -> int:
    value = item.raw.get("breaker", "Closed")
    if value not in _BREAKER:
        raise item.fail("breaker", "must be Closed, HalfOpen or Open")
    return _BREAKER[value]


def _selector(item: _Item) -> dict[str, Any] | None:
    value = item.raw.get("agentSelector")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise item.fail("agentSelector", "must be an object of labels (matchLabels) or a label selector")
    if "matchLabels" in value or "matchExpressions" in value:
        for expr in value.get("matchExpressions") or []:
            if not isinstance(expr, dict) or expr.get("operator") not in {"In", "NotIn", "Exists", "DoesNotExist"}:
                raise item.fail("agentSelector", "has a matchExpression without a valid operator")
        return value
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise item.fail("agentSelector", "must map label keys to string values")
    return value
