"""CustomResourceDefinitions generated from the pydantic models: one source of truth.

`render()` turns each kind's spec/status models into a structural OpenAPI v3
schema (refs inlined, Optional unwrapped, bounds and CEL rules carried over)
and wraps it with names, printer columns and selectable fields. `qorch crds
generate` writes the result to `crds/`, and a test fails when the files drift.
What this must never do: emit a schema the apiserver would call non-structural
(no `$ref`, no `anyOf`, no `additionalProperties` beside `properties`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from qorch.api import constants
from qorch.api.agent import AgentSpec, AgentStatus
from qorch.api.approval import ApprovalSpec, ApprovalStatus
from qorch.api.common import cel
from qorch.api.policy import SCORER_NAMES, SchedulingPolicySpec, SchedulingPolicyStatus
from qorch.api.task import TaskSpec, TaskStatus

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = ["KINDS", "Column", "KindDefinition", "render", "structural_schema"]

Schema = dict[str, Any]
_DROP = {"title", "$defs"}


@dataclass(frozen=True, slots=True)
class Column:
    """One `kubectl get` column; priority 1 shows only with `-o wide`."""

    name: str
    json_path: str
    type: str = "string"
    priority: int = 0
    description: str = ""


@dataclass(frozen=True, slots=True)
class KindDefinition:
    """Everything about a kind that is not in its spec/status models."""

    kind: str
    plural: str
    short_name: str
    scope: str
    description: str
    spec: type[BaseModel]
    status: type[BaseModel] | None
    columns: tuple[Column, ...]
    selectable: tuple[str, ...] = ()
    root_rules: tuple[Schema, ...] = ()
    spec_rules: tuple[Schema, ...] = ()
    spec_required: bool = True
    spec_default: Schema | None = field(default=None)

    @property
    def crd_name(self) -> str:
        """`<plural>.qorch.io`."""
        return f"{self.plural}.{constants.GROUP}"

    @property
    def filename(self) -> str:
        """`qorch.io_<plural>.yaml`, as kubebuilder names them."""
        return f"{constants.GROUP}_{self.plural}.yaml"


def _merge(base: Schema, extra: Schema) -> Schema:
    merged = dict(base)
    for key, value in extra.items():
        if key == "x-kubernetes-validations":
            merged[key] = [*base.get(key, []), *value]
        else:
            merged[key] = value
    return merged


def _key_rule(names: Schema) -> Schema | None:
    """CRDs have no propertyNames: turn key constraints into a CEL rule on the map."""
    checks = []
    if "maxLength" in names:
        checks.append(f"size(k) <= {names['maxLength']}")
    if "pattern" in names:
        checks.append(f"k.matches({json.dumps(names['pattern'])})")
    if not checks:
        return None
    detail = f"at most {names.get('maxLength', '?')} characters" if "maxLength" in names else ""
    return cel(
        f"self.all(k, {' && '.join(checks)})",
        f"every key must be {detail}{' and ' if detail else ''}match {names.get('pattern', '')}".strip(),
    )


def _resolve(ref: str, defs: Schema) -> Schema:
    return dict(defs[ref.rsplit("/", 1)[-1]])


def _unwrap(node: Schema, defs: Schema) -> Schema:
    """Inline `$ref`s and drop the null branch of Optional, keeping sibling keys."""
    while True:
        if "$ref" in node:
            rest = {k: v for k, v in node.items() if k != "$ref"}
            node = _merge(_resolve(node["$ref"], defs), rest)
            continue
        combinator = next((c for c in ("anyOf", "allOf", "oneOf") if c in node), None)
        if combinator is None:
            return node
        options = [o for o in node[combinator] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express {combinator} with {len(options)} branches structurally")
        rest = {k: v for k, v in node.items() if k != combinator}
        node = _merge(options[0], rest)


_STRUCTURE = {"properties", "items", "additionalProperties", "patternProperties", "propertyNames", "required"}


def _scalars(node: Schema, *, keep_defaults: bool) -> Schema:
    out: Schema = {}
    for key, value in node.items():
        if key in _DROP or key in _STRUCTURE:
            continue
        if key == "default":
            if keep_defaults and value not in (None, [], {}, ""):
                out[key] = value
            continue
        out[key] = value
    if isinstance(out.get("exclusiveMinimum"), (int, float)) and not isinstance(out["exclusiveMinimum"], bool):
        # JSON Schema 2020 writes the bound itself; OpenAPI v3.0 (CRDs) wants minimum + a flag.
        out["minimum"], out["exclusiveMinimum"] = out["exclusiveMinimum"], True
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def _map(node: Schema, defs: Schema, *, keep_defaults: bool) -> Schema:
    """A map: CRDs have additionalProperties only, so key rules become CEL."""
    names = dict(node.get("propertyNames") or {})
    values = node.get("additionalProperties")
    if "patternProperties" in node:  # pydantic's form for keys with a pattern
        ((pattern, values),) = node["patternProperties"].items()
        names["pattern"] = pattern
    if not isinstance(values, dict):
        raise TypeError("a map needs a schema for its values")
    out: Schema = {"type": "object", "additionalProperties": _convert(values, defs, keep_defaults=keep_defaults)}
    if rule := _key_rule(names):
        out["x-kubernetes-validations"] = [rule]
    return out


def _convert(node: Schema, defs: Schema, *, keep_defaults: bool) -> Schema:
    node = _unwrap(node, defs)
    out = _scalars(node, keep_defaults=keep_defaults)
    if "properties" in node:
        out["type"] = "object"
        out["properties"] = {
            name: _convert(sub, defs, keep_defaults=keep_defaults) for name, sub in node["properties"].items()
        }
        if node.get("required"):
            out["required"] = list(node["required"])
    elif isinstance(node.get("additionalProperties"), dict) or "patternProperties" in node:
        out = _merge(out, _map(node, defs, keep_defaults=keep_defaults))
    if "items" in node:
        out["items"] = _convert(node["items"], defs, keep_defaults=keep_defaults)
    return _order(out)


_KEY_ORDER = [
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "maxProperties",
    "required",
]


def _order(schema: Schema) -> Schema:
    ordered = {k: schema[k] for k in _KEY_ORDER if k in schema}
    ordered.update({k: v for k, v in schema.items() if k not in ordered})
    return ordered


def structural_schema(model: type[BaseModel], *, keep_defaults: bool) -> Schema:
    """The structural OpenAPI v3 schema of a pydantic model, as a CRD needs it."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _convert(raw, raw.get("$defs", {}), keep_defaults=keep_defaults)


def _crd(defn: KindDefinition) -> Schema:
    spec = structural_schema(defn.spec, keep_defaults=True)
    if defn.spec_rules:
        spec["x-kubernetes-validations"] = [
            *spec.get("x-kubernetes-validations", []),
            *defn.spec_rules,
        ]
    if defn.spec_default is not None:
        spec["default"] = defn.spec_default
    properties: Schema = {
        "apiVersion": {"type": "string", "description": "APIVersion: qorch.io/v1alpha1."},
        "kind": {"type": "string", "description": f"Kind: {defn.kind}."},
        "metadata": {"type": "object"},
        "spec": spec,
    }
    if defn.status is not None:
        properties["status"] = structural_schema(defn.status, keep_defaults=False)
    root: Schema = {"description": defn.description, "type": "object", "properties": properties}
    if defn.spec_required:
        root["required"] = ["spec"]
    if defn.root_rules:
        root["x-kubernetes-validations"] = list(defn.root_rules)
    version: Schema = {
        "name": constants.VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": _order(root)},
        "additionalPrinterColumns": [
            {
                "name": c.name,
                "type": c.type,
                "jsonPath": c.json_path,
                **({"priority": c.priority} if c.priority else {}),
                **({"description": c.description} if c.description else {}),
            }
            for c in defn.columns
        ],
    }
    if defn.status is not None:
        version["subresources"] = {"status": {}}
    if defn.selectable:
        version["selectableFields"] = [{"jsonPath": p} for p in defn.selectable]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": defn.crd_name, "labels": {"app.kubernetes.io/part-of": "qorch"}},
        "spec": {
            "group": constants.GROUP,
            "names": {
                "kind": defn.kind,
                "listKind": f"{defn.kind}List",
                "plural": defn.plural,
                "singular": defn.kind.lower(),
                "shortNames": [defn.short_name],
                "categories": [constants.CATEGORY],
            },
            "scope": defn.scope,
            "versions": [version],
        },
    }


AGE = Column("Age", ".metadata.creationTimestamp", "date")

AGENT = KindDefinition(
    kind="Agent",
    plural="agents",
    short_name="qagent",
    scope="Namespaced",
    description="An AI agent, or a pool of identical agents, that runs Tasks. Spec is yours; status is the operator's.",
    spec=AgentSpec,
    status=AgentStatus,
    columns=(
        Column("Phase", ".status.phase"),
        Column("Active", ".status.activeTasks", "integer"),
        Column("Capacity", ".spec.capacity", "integer"),
        Column("Breaker", ".status.breaker.state"),
        Column("Clearance", ".spec.clearance"),
        AGE,
        Column("Capabilities", ".spec.capabilities", priority=1),
        Column("Provider", ".spec.provider.name", priority=1),
        Column("Model", ".spec.provider.model", priority=1),
        Column("Success", ".status.stats.successRate", "number", priority=1),
        Column("Group", ".spec.entanglementGroup", priority=1),
    ),
    selectable=(".status.phase", ".spec.clearance"),
)

TASK = KindDefinition(
    kind="Task",
    plural="tasks",
    short_name="qtask",
    scope="Namespaced",
    description="A unit of work for an AI agent. Spec is yours; status is the operator's (execution is the agent's).",
    spec=TaskSpec,
    status=TaskStatus,
    columns=(
        Column("Phase", ".status.phase"),
        Column("Agent", ".status.assignment.agent"),
        Column("Priority", ".spec.priority", "integer"),
        Column("Class", ".spec.classification"),
        Column("Attempts", ".status.attempts", "integer"),
        AGE,
        Column("Reason", '.status.conditions[?(@.type=="Scheduled")].reason', priority=1),
        Column("Score", ".status.assignment.score", "number", priority=1),
        Column("Epoch", ".status.assignment.epoch", "integer", priority=1),
        Column("Goal", ".spec.goal", priority=1),
    ),
    selectable=(".status.phase", ".status.assignment.agent", ".spec.classification"),
    root_rules=(
        cel(
            "!has(self.spec.dependsOn) || !(self.metadata.name in self.spec.dependsOn)",
            "a task cannot depend on itself: remove its own name from spec.dependsOn",
            field_path=".spec.dependsOn",
        ),
    ),
)

APPROVAL = KindDefinition(
    kind="Approval",
    plural="approvals",
    short_name="qapproval",
    scope="Namespaced",
    description="A person's decision on a Task that requires approval. Immutable once created.",
    spec=ApprovalSpec,
    status=ApprovalStatus,
    columns=(
        Column("Task", ".spec.taskRef"),
        Column("Decision", ".spec.decision"),
        Column("Approver", ".spec.approver"),
        AGE,
        Column("Reason", ".spec.reason", priority=1),
        Column("Task-UID", ".spec.taskUID", priority=1),
    ),
    selectable=(".spec.taskRef",),
    spec_rules=(
        cel(
            "self == oldSelf",
            "an Approval cannot be changed once made: delete it and create a new one",
        ),
        cel(
            "self.decision != 'Approve' || (has(self.taskUID) && self.taskUID != '' && has(self.taskGeneration))",
            "an Approve must name the Task incarnation and generation it approves: set spec.taskUID and "
            "spec.taskGeneration to the Task's metadata.uid and metadata.generation, or run `qorch approve TASK`",
            field_path=".taskUID",
            reason="FieldValueRequired",
        ),
    ),
)

POLICY = KindDefinition(
    kind="SchedulingPolicy",
    plural="schedulingpolicies",
    short_name="qpolicy",
    scope="Cluster",
    description="Cluster-wide scheduling settings. There is exactly one, named 'default'.",
    spec=SchedulingPolicySpec,
    status=SchedulingPolicyStatus,
    columns=(
        Column("Strategy", ".spec.strategy"),
        Column("Temperature", ".spec.temperature", "number"),
        Column("Batch", ".spec.batchSize", "integer"),
        Column("Coherence", ".status.observables.coherence", "number"),
        Column("Leader", ".status.leader"),
        AGE,
        Column("Entropy", ".status.observables.entropy", "number", priority=1),
        Column("Fidelity", ".status.observables.fidelity", "number", priority=1),
        Column("Last-Cycle", ".status.lastCycleAt", "date", priority=1),
    ),
    root_rules=(
        cel(
            "self.metadata.name == 'default'",
            "a SchedulingPolicy must be named 'default': there is one per cluster, edit that one",
            reason="FieldValueInvalid",
        ),
    ),
    spec_required=False,
    spec_default={},
    spec_rules=(
        cel(
            "!has(self.temperature) || self.temperature == 0.0 || self.temperature >= 0.001",
            "spec.temperature must be 0 (the deterministic optimum) or from 0.001 to 10: "
            "below 0.001 the softmax underflows",
            field_path=".temperature",
        ),
        cel(
            "!has(self.weights) || self.weights.all(k, k in [" + ", ".join(f"'{n}'" for n in SCORER_NAMES) + "])",
            "spec.weights names an unknown scorer: use " + ", ".join(SCORER_NAMES),
            field_path=".weights",
        ),
    ),
)

KINDS: tuple[KindDefinition, ...] = (AGENT, TASK, APPROVAL, POLICY)


def render() -> dict[str, str]:
    """File name -> YAML text of every CRD, exactly as `crds/` should hold them."""
    header = "# Generated by `qorch crds generate` from qorch.api. Do not edit by hand.\n"
    return {
        defn.filename: header + yaml.safe_dump(_crd(defn), sort_keys=False, width=120, allow_unicode=True)
        for defn in KINDS
    }
