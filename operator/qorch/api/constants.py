"""Names fixed by the design: API group, field managers, Lease names, label keys."""

from __future__ import annotations

__all__ = [
    "AGENT_FIELD_MANAGER",
    "AGENT_LEASE_PREFIX",
    "API_VERSION",
    "AUDIT_ANCHOR_ANNOTATION",
    "AUDIT_KEY_ANNOTATION",
    "CATEGORY",
    "CLIENT_FIELD_MANAGER",
    "DEFAULT_POLICY_NAME",
    "GROUP",
    "LEADER_LEASE",
    "METRICS_PREFIX",
    "OPERATOR_FIELD_MANAGER",
    "OPERATOR_NAMESPACE",
    "VERSION",
]

GROUP = "qorch.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "qorch"

OPERATOR_NAMESPACE = "qorch-system"
LEADER_LEASE = "qorch-operator"
AGENT_LEASE_PREFIX = "qorch-agent-"
OPERATOR_FIELD_MANAGER = "qorch-operator"
AGENT_FIELD_MANAGER = "qorch-agent"
#: The CLI and the SDK: a user's `qorch submit`, `qorch cancel`, `qorch dlq redrive`, `qorch approve`.
CLIENT_FIELD_MANAGER = "qorch-client"
METRICS_PREFIX = "qorch_"
DEFAULT_POLICY_NAME = "default"
#: On the leader Lease: `SEQ:HASH` of the audit chain's anchored head, and the id of the key that signs after it.
AUDIT_ANCHOR_ANNOTATION = f"{GROUP}/audit-anchor"
AUDIT_KEY_ANNOTATION = f"{GROUP}/audit-key"
