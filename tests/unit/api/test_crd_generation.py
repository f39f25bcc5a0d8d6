"""The CRD files are generated from the models, up to date, structural and bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from qorch.api import crd
from qorch.api.task import RetryPolicy, TaskSpec

CRDS = Path(__file__).parents[3] / "crds"


def test_crd_files_are_up_to_date() -> None:
    """crds/ holds exactly what `qorch crds generate` writes; edit the models, then regenerate."""
    rendered = crd.render()
    assert sorted(p.name for p in CRDS.glob("*.yaml")) == sorted(rendered)
    for name, text in rendered.items():
        assert (CRDS / name).read_text() == text, f"{name} is stale: run `qorch crds generate`"


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        found += _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        found += _walk(schema["additionalProperties"], f"{path}[*]")
    if "items" in schema:
        found += _walk(schema["items"], f"{path}[]")
    return found


@pytest.mark.parametrize("defn", crd.KINDS, ids=[d.kind for d in crd.KINDS])
def test_every_string_list_and_map_is_bounded(defn: crd.KindDefinition) -> None:
    """Bounds on every string, list and map keep CEL costs and object sizes predictable."""
    doc = yaml.safe_load(crd.render()[defn.filename])
    root = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    unbounded = []
    for path, node in _walk(root):
        if path in {".apiVersion", ".kind", ".metadata"}:
            continue
        kind = node.get("type")
        if kind == "string" and not ({"maxLength", "enum"} & node.keys() or node.get("format") == "date-time"):
            unbounded.append(path)
        if kind == "array" and "maxItems" not in node:
            unbounded.append(path)
        if kind == "object" and "additionalProperties" in node and "maxProperties" not in node:
            unbounded.append(path)
        assert "$ref" not in node, path
        assert "anyOf" not in node, path
    assert unbounded == []


@pytest.mark.parametrize("defn", crd.KINDS, ids=[d.kind for d in crd.KINDS])
def test_every_field_has_a_description(defn: crd.KindDefinition) -> None:
    """`kubectl explain` can teach every field."""
    doc = yaml.safe_load(crd.render()[defn.filename])
    spec = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    missing = [path for path, node in _walk(spec, ".spec") if "description" not in node and not path.endswith("]")]
    assert missing == []


def test_every_cel_rule_has_a_message() -> None:
    """A CEL rule without a message would show the user the rule's source."""
    for text in crd.render().values():
        doc = yaml.safe_load(text)
        for _, node in _walk(doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]):
            for rule in node.get("x-kubernetes-validations", []):
                assert rule.get("message"), rule


def test_models_enforce_the_same_rules_as_the_crd() -> None:
    """The SDK-side models reject what the CRD rejects (same source of truth)."""
    with pytest.raises(ValidationError, match="maxBackoffSeconds must be at least backoffSeconds"):
        RetryPolicy(backoff_seconds=60, max_backoff_seconds=30)
    with pytest.raises(ValidationError, match="priority"):
        TaskSpec.model_validate({"goal": "x", "priority": 1001})
    with pytest.raises(ValidationError, match="duplicate entries: code"):
        TaskSpec.model_validate({"goal": "x", "requires": ["code", "code"]})
    with pytest.raises(ValidationError, match="colour"):
        TaskSpec.model_validate({"goal": "x", "colour": "blue"})
    spec = TaskSpec.model_validate({"goal": "x", "dependsOn": ["a"], "agentSelector": {"matchLabels": {"z": "a"}}})
    assert spec.depends_on == ["a"]
    assert spec.agent_selector is not None
    assert spec.agent_selector.matches({"z": "a"})
    assert not spec.agent_selector.matches({"z": "b"})
    assert spec.model_dump(exclude_defaults=True)["dependsOn"] == ["a"]
