"""Building blocks shared by the kinds: bounded strings, CEL rules, conditions, selectors.

Every string, list and map in the API carries a bound here, because the CRD
schema is generated from these models and the apiserver's CEL cost estimator
(and etcd) need bounds. Validation rules are attached with `cel()` so that the
same declaration yields the CRD rule and its human message.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from qorch.api.enums import Clearance

__all__ = [
    "DNS_LABEL",
    "ApiModel",
    "Capability",
    "Condition",
    "LabelSelector",
    "LabelSelectorRequirement",
    "ObjectName",
    "ShortText",
    "SpecModel",
    "cel",
]

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
# Kubernetes label keys (optional prefix) and values.
LABEL_KEY = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$"


def cel(rule: str, message: str, *, field_path: str | None = None, reason: str | None = None) -> dict[str, Any]:
    """One `x-kubernetes-validations` entry; `message` must speak the user's language."""
    entry: dict[str, Any] = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def _no_duplicates(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        dupes = sorted({v for v in values if values.count(v) > 1})
        raise ValueError(f"duplicate entries: {', '.join(dupes)}")
    return values


Capability = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL,
        description="A capability name: a DNS label (lowercase letters, digits and '-', at most 63).",
    ),
]
ObjectName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="The name of an object in the namespace.",
    ),
]
ShortText = Annotated[str, Field(max_length=256)]
CapabilityList = Annotated[
    list[Capability],
    Field(max_length=32, json_schema_extra={"x-kubernetes-list-type": "set"}),
    AfterValidator(_no_duplicates),
]


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are kept out."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_enum_values=False,
        serialize_by_alias=True,
    )


class SpecModel(ApiModel):
    """User-written models reject unknown fields, as `kubectl apply` does."""

    model_config = ConfigDict(extra="forbid")


class LabelSelectorRequirement(SpecModel):
    """One expression of a label selector."""

    key: Annotated[str, Field(min_length=1, max_length=317, pattern=LABEL_KEY, description="The label key.")]
    operator: Annotated[
        str,
        Field(
            json_schema_extra={"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
            max_length=16,
            pattern=r"^(In|NotIn|Exists|DoesNotExist)$",
            description="In, NotIn, Exists or DoesNotExist.",
        ),
    ]
    values: Annotated[
        list[Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]],
        Field(max_length=64, description="Values for In and NotIn; empty for Exists and DoesNotExist."),
    ] = []


class LabelSelector(SpecModel):
    """Which agents a task may run on, by the Agent objects' labels (all terms must match)."""

    match_labels: Annotated[
        dict[
            Annotated[str, Field(max_length=317, pattern=LABEL_KEY)],
            Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)],
        ],
        Field(max_length=32, description="Labels the agent must carry with exactly these values."),
    ] = {}
    match_expressions: Annotated[
        list[LabelSelectorRequirement],
        Field(max_length=32, description="Set-based requirements on the agent's labels."),
    ] = []

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether an agent with these labels satisfies the selector."""
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
            if req.operator == "In" and labels.get(req.key) not in req.values:
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
        return True


class Condition(ApiModel):
    """A standard Kubernetes condition (the shape of metav1.Condition)."""

    type: Annotated[str, Field(max_length=316, description="The condition type, e.g. Scheduled or Ready.")]
    status: Annotated[
        str,
        Field(
            max_length=8,
            json_schema_extra={"enum": ["True", "False", "Unknown"]},
            description="True, False or Unknown.",
        ),
    ]
    reason: Annotated[str, Field(max_length=1024, description="A CamelCase reason, e.g. NoCapableAgent.")] = ""
    message: Annotated[str, Field(max_length=32768, description="A human-readable explanation.")] = ""
    last_transition_time: Annotated[dt.datetime | None, Field(description="When the status last changed.")] = None
    observed_generation: Annotated[
        int | None, Field(ge=0, description="The .metadata.generation the condition was set for.")
    ] = None


Conditions = Annotated[
    list[Condition],
    Field(
        max_length=16,
        description="Standard conditions, keyed by type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]

ClearanceField = Annotated[Clearance, Field(description="public < internal < confidential < secret < topsecret.")]
