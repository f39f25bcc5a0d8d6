"""Tracing never costs a decision or an attempt: an exporter that fails is contained."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from qorch import tracing


class Broken(SpanExporter):
    """An exporter that raises on every span."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Fail loudly."""
        del spans
        raise RuntimeError("collector unreachable")


@pytest.fixture
def broken() -> Iterator[None]:
    """Tracing on, with the broken exporter, for one test."""
    tracing.configure("test", Broken())
    yield
    tracing.shutdown()


@pytest.mark.usefixtures("broken")
def test_a_failing_exporter_never_raises_into_the_caller() -> None:
    """step and task_ended swallow the exporter's error (the claim path and the loop call them)."""
    tracing.step("qorch.task.claimed", "8c9b7c1e-0f0e-4e0c-9d9d-1a2b3c4d5e6f", start=1.0, end=2.0, attributes={})
    tracing.task_ended("not-a-uuid", created=1.0, end=2.0, attributes={"qorch.task": "ns/t"})


def test_the_trace_id_is_the_uid() -> None:
    """A UUID uid is its own trace id; anything else hashes to a stable non-zero one."""
    assert tracing.trace_id("8c9b7c1e-0f0e-4e0c-9d9d-1a2b3c4d5e6f") == 0x8C9B7C1E0F0E4E0C9D9D1A2B3C4D5E6F
    assert tracing.trace_id("x") == tracing.trace_id("x") != 0
