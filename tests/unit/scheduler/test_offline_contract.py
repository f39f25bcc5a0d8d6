"""`qorch schedule` honours the offline contract: JSON in, JSON out, exit 2 with one line on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qorch.scheduler import InstanceError, parse, schedule
from qorch.scheduler.strategies import ScheduleError

EXAMPLE = {
    "agents": [
        {
            "name": "a-0",
            "capabilities": ["code"],
            "capacity": 4,
            "activeTasks": 1,
            "clearance": "secret",
            "ready": True,
            "successRate": 0.97,
            "costPerTask": 0.5,
            "labels": {"zone": "a"},
            "entanglementGroup": "g1",
        }
    ],
    "tasks": [
        {
            "name": "t-0",
            "requires": ["code"],
            "priority": 700,
            "classification": "internal",
            "deadlineSeconds": 120,
            "agentSelector": {"zone": "a"},
            "entanglementGroup": "g1",
        },
        {"name": "t-9", "requires": ["gpu"]},
    ],
    "policy": {"strategy": "quantum", "temperature": 0.05, "seed": 7},
}


def qorch(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the qorch CLI as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "qorch.cli", *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_design_example_round_trips(tmp_path: Path) -> None:
    """The DESIGN.md example schedules t-0 on a-0 and explains t-9, in the documented shape."""
    src = tmp_path / "in.json"
    src.write_text(json.dumps(EXAMPLE))
    out = tmp_path / "out.json"
    done = qorch("schedule", str(src), "-o", str(out))
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert set(doc) == {"assignments", "unassigned", "observables", "stats"}
    (assignment,) = doc["assignments"]
    assert assignment["task"] == "t-0"
    assert assignment["agent"] == "a-0"
    assert 0 < assignment["probability"] <= 1
    assert 0 <= assignment["score"] <= 1
    assert doc["unassigned"][0]["task"] == "t-9"
    assert doc["unassigned"][0]["reason"] == "NoCapableAgent"
    assert set(doc["observables"]) == {"entropy", "coherence", "fidelity"}
    assert doc["stats"]["strategy"] == "quantum"
    assert doc["stats"]["seconds"] >= 0


def test_stdin_and_stdout_work_too() -> None:
    """`-` (the default) reads standard input and writes standard output."""
    done = qorch("schedule", stdin=json.dumps(EXAMPLE))
    assert done.returncode == 0
    assert json.loads(done.stdout)["assignments"][0]["agent"] == "a-0"


BAD: list[Any] = [
    pytest.param({"agents": [{"capabilities": []}]}, "agents[0]: 'name' is required", id="missing-name"),
    pytest.param({"agents": [{"name": "a"}, {"name": "a"}]}, 'agents[1] "a": duplicate name', id="duplicate-agent"),
    pytest.param({"tasks": [{"name": "t"}, {"name": "t"}]}, 'tasks[1] "t": duplicate name', id="duplicate-task"),
    pytest.param({"agents": [{"name": "a", "capacity": -1}]}, "'capacity' must be an integer", id="negative-capacity"),
    pytest.param({"agents": [{"name": "a", "capacity": "4"}]}, "'capacity' must be an integer", id="capacity-string"),
    pytest.param({"agents": [{"name": "a", "clearance": "ultra"}]}, "'clearance' must be one of", id="bad-clearance"),
    pytest.param(
        {"tasks": [{"name": "t", "classification": 3}]}, "'classification' must be one of", id="bad-classification"
    ),
    pytest.param(
        {"tasks": [{"name": "t", "priority": 1001}]},
        "'priority' must be an integer from 0 to 1000",
        id="priority-range",
    ),
    pytest.param({"tasks": [{"name": "t", "requires": "code"}]}, "'requires' must be a list", id="requires-string"),
    pytest.param({"agents": [{"name": "a", "ready": "yes"}]}, "'ready' must be true or false", id="ready-string"),
    pytest.param(
        {"agents": [{"name": "a", "successRate": 2}]}, "'successRate' must be a finite number", id="rate-range"
    ),
    pytest.param({"agents": [{"name": "a", "colour": "red"}]}, "unknown field 'colour'", id="unknown-agent-field"),
    pytest.param({"tasks": [{"name": "t", "agentSelector": "zone=a"}]}, "'agentSelector'", id="selector-string"),
    pytest.param({"policy": {"strategy": "magic"}}, "'strategy' must be one of", id="bad-strategy"),
    pytest.param({"policy": {"weights": {"vibes": 1}}}, "unknown scorer 'vibes'", id="bad-weight"),
    pytest.param({"policy": {"batchSize": 0}}, "'batchSize' must be an integer >= 1", id="bad-batch"),
    pytest.param({"agents": {"name": "a"}}, "'agents' must be a list", id="agents-not-list"),
    pytest.param([1, 2], "must be a JSON object", id="not-an-object"),
    pytest.param({"agents": [], "extra": 1}, "unknown top-level field 'extra'", id="unknown-top-level"),
]


@pytest.mark.parametrize(("doc", "message"), BAD)
def test_malformed_input_is_named(doc: Any, message: str) -> None:
    """The parser raises InstanceError whose message names the item and field."""
    with pytest.raises(InstanceError) as err:
        parse(doc)
    assert message in str(err.value)


@pytest.mark.parametrize(("doc", "message"), BAD[:6])
def test_cli_exits_2_with_one_line_and_no_traceback(doc: Any, message: str) -> None:
    """Exit code 2, a single 'error:' line, never a traceback."""
    done = qorch("schedule", stdin=json.dumps(doc))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: ")
    assert message in done.stderr
    assert "Traceback" not in done.stderr


EASY = {"agents": [{"name": "a", "capabilities": ["c"]}], "tasks": [{"name": "t", "requires": ["c"]}]}
HOSTILE: list[Any] = [  # issue 10, finding 7: each crashed, wrote NaN, or was silently accepted
    pytest.param({"namespaceWeights": [1, 2]}, "'namespaceWeights' must be an object", id="ns-weights-list"),
    pytest.param({"quotas": "x"}, "'quotas' must be an object", id="quotas-string"),
    pytest.param({"quotas": {"default": 1e400}}, "'quotas.default' must be a whole number", id="quota-1e400"),
    pytest.param({"weights": [1]}, "'weights' must be an object", id="weights-list"),
    pytest.param({"weights": {"cost": float("nan")}}, "'weights.cost' must be a number from 0", id="weight-nan"),
    pytest.param({"weights": {"cost": float("inf")}}, "'weights.cost' must be a number from 0", id="weight-inf"),
    pytest.param({"temperature": 1e-310}, "'temperature' must be 0 or from", id="temperature-tiny"),
    pytest.param({"namespaceWeights": {"default": -1}}, "'namespaceWeights.default' must be", id="ns-weight-neg"),
    pytest.param({"namespaceWeights": {"default": 0}}, "'namespaceWeights.default' must be", id="ns-weight-zero"),
    pytest.param({"quotas": {"default": -1}}, "'quotas.default' must be a whole number", id="quota-negative"),
]
HOSTILE_ITEMS: list[Any] = [
    pytest.param({"name": "a", "capabilities": ["c", "c"]}, "'capabilities' lists 'c' twice", id="dup-capability"),
    pytest.param({"name": "a", "capabilities": ["C_x!"]}, "a capability is a DNS label", id="capability-not-dns"),
    pytest.param({"name": "a", "latencyMs": float("inf")}, "'latencyMs' must be a finite number", id="inf-latency"),
    pytest.param({"name": "a", "costPerTask": float("inf")}, "'costPerTask' must be a finite number", id="inf-cost"),
]


def one_error_line(done: subprocess.CompletedProcess[str], message: str) -> None:
    """Exit 2, one line naming the problem, no traceback, nothing on stdout."""
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: ")
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(("policy", "message"), HOSTILE)
def test_a_hostile_policy_is_one_line_naming_the_field(policy: dict[str, Any], message: str) -> None:
    """Through the CLI, as a user runs it."""
    one_error_line(qorch("schedule", stdin=json.dumps({**EASY, "policy": policy})), message)


@pytest.mark.parametrize(("agent", "message"), HOSTILE_ITEMS)
def test_a_hostile_agent_is_one_line_naming_the_field(agent: dict[str, Any], message: str) -> None:
    """Through the CLI, as a user runs it."""
    one_error_line(qorch("schedule", stdin=json.dumps({**EASY, "agents": [agent]})), message)


def test_deep_nesting_and_a_missing_output_folder_are_one_line() -> None:
    """Neither a RecursionError nor a FileNotFoundError reaches the user."""
    one_error_line(qorch("schedule", stdin="[" * 100_000 + "]" * 100_000), "nested too deeply")
    one_error_line(qorch("schedule", "-o", "/does/not/exist/out.json", stdin=json.dumps(EASY)), "cannot write")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
_FIELDS = ["strategy", "temperature", "weights", "batchSize", "namespaceWeights", "quotas", "couplings", "seed"]


@settings(max_examples=300, deadline=None)
@given(
    policy=st.dictionaries(st.sampled_from(_FIELDS), _JSON, max_size=4),
    agent=st.dictionaries(st.sampled_from(["capabilities", "capacity", "latencyMs", "successRate"]), _JSON, max_size=2),
)
def test_fuzzed_documents_parse_or_fail_cleanly(policy: dict[str, Any], agent: dict[str, Any]) -> None:
    """Whatever the document, parse raises InstanceError or the result is finite JSON."""
    doc = {"agents": [{"name": "a", "capabilities": ["c"], **agent}], "tasks": EASY["tasks"], "policy": policy}
    try:
        inst = parse(doc)
        result = schedule(inst.snapshot, inst.tasks, inst.policy)
    except (InstanceError, ScheduleError):
        return
    json.dumps(result.to_contract(), allow_nan=False)


@pytest.mark.parametrize(
    ("stdin", "args", "message"),
    [
        pytest.param("{not json", (), "is not valid JSON", id="invalid-json"),
        pytest.param(None, ("/does/not/exist.json",), "cannot read", id="missing-file"),
    ],
)
def test_cli_reports_unreadable_input(stdin: str | None, args: tuple[str, ...], message: str) -> None:
    """Invalid JSON and missing files are one-line errors with exit code 2."""
    done = qorch("schedule", *args, stdin=stdin)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_the_crd_knows_exactly_the_scorers_the_scheduler_ships() -> None:
    """The SchedulingPolicy CRD refuses unknown scorer names from this list, so it must match the registry."""
    from qorch.api.policy import SCORER_NAMES  # noqa: PLC0415 - the api layer's copy, checked here
    from qorch.scheduler.scorers import DEFAULT_WEIGHTS, REGISTRY  # noqa: PLC0415

    assert set(SCORER_NAMES) == set(REGISTRY) == set(DEFAULT_WEIGHTS)
