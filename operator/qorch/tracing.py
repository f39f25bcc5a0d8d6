"""OpenTelemetry tracing: a span per scheduling cycle, and each task's life as one trace.

Off unless configured: `configure()` installs an OTLP/HTTP exporter when the SDK's
own variables name an endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), or uses the exporter it is given (tests
pass the SDK's in-memory one). Off, every hook costs one attribute check.

A task's life crosses processes (operator replicas, agent runtimes) and may last
hours, so no process holds it open as one span. Its trace id is the task's uid
(the uid's 128 bits), and each step is a span of its own in that trace, a child
of a root span whose id is derived from the uid as well:
- the operator, when it writes a transition: `qorch.task.<Phase>` (Queued,
  Assigned, Running — the agent claimed it —, Retrying, Succeeded, ...), from the
  decision to the write landing;
- the agent runtime: `qorch.task.handler` around the user's handler, which runs
  with that span current, so spans the handler makes join the task's trace;
- the operator, when the task ends: the root `qorch.task`, from its creation to
  its end.
Any tracing backend then shows a task's life as one trace, found by its uid, and
nothing passes a trace context through the apiserver. The operator's
`qorch.cycle` spans are traces of their own.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import uuid
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.util.types import AttributeValue

__all__ = ["configure", "cycle", "enabled", "handler", "shutdown", "step", "task_ended", "trace_id"]

log = logging.getLogger(__name__)
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_NS = 1_000_000_000


class _TaskIds(IdGenerator):
    """Random ids, except for a task's root span, whose trace and span ids come from its uid."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()
        self._pending = threading.local()

    @contextlib.contextmanager
    def root(self, uid: str) -> Iterator[None]:
        """Within: the next root span started on this thread is the task's."""
        self._pending.ids = (trace_id(uid), _root_span_id(uid))
        try:
            yield
        finally:
            self._pending.ids = None

    def generate_trace_id(self) -> int:
        """The task's trace id while a root is pending, else a random one."""
        ids = getattr(self._pending, "ids", None)
        return ids[0] if ids else self._random.generate_trace_id()

    def generate_span_id(self) -> int:
        """The task's root span id while a root is pending, else a random one."""
        ids = getattr(self._pending, "ids", None)
        return ids[1] if ids else self._random.generate_span_id()


class _State:
    tracer: trace.Tracer | None = None
    provider: TracerProvider | None = None
    ids: _TaskIds | None = None


def configure(service: str, exporter: SpanExporter | None = None) -> bool:
    """Turn tracing on for this process when an endpoint is configured or an exporter given; whether it is on."""
    if exporter is None:
        if not any(os.environ.get(name) for name in _ENDPOINTS):
            return False
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

        processor: SpanProcessor = BatchSpanProcessor(OTLPSpanExporter())
    else:
        processor = SimpleSpanProcessor(exporter)  # a test's exporter sees every span as it ends
    ids = _TaskIds()
    provider = TracerProvider(resource=Resource.create({"service.name": service}), id_generator=ids)
    provider.add_span_processor(processor)
    _State.provider, _State.ids, _State.tracer = provider, ids, provider.get_tracer("qorch")
    with contextlib.suppress(Exception):  # the first provider set in a process wins; ours need not be it
        trace.set_tracer_provider(provider)
    log.info("tracing on: %s spans exported by %s", service, type(exporter).__name__)
    return True


def enabled() -> bool:
    """Whether spans are made at all."""
    return _State.tracer is not None


def shutdown() -> None:
    """Export what is buffered and turn tracing off."""
    provider = _State.provider
    _State.tracer = _State.provider = _State.ids = None
    if provider is not None:
        provider.shutdown()


def trace_id(uid: str) -> int:
    """A task's trace id: its uid's 128 bits (a hash of it when the uid is no UUID)."""
    try:
        value = uuid.UUID(uid).int
    except ValueError:
        value = int.from_bytes(hashlib.blake2b(uid.encode(), digest_size=16).digest(), "big")
    return value or 1


def _root_span_id(uid: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{uid}/root".encode(), digest_size=8).digest(), "big") or 1


def _task_context(uid: str) -> Context:
    parent = SpanContext(trace_id(uid), _root_span_id(uid), is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(parent))


def step(name: str, uid: str, *, start: float, end: float, attributes: Mapping[str, AttributeValue]) -> None:
    """One step of a task's life (wall times in seconds), in the task's trace."""
    tracer = _State.tracer
    if tracer is None:
        return
    try:
        span = tracer.start_span(name, context=_task_context(uid), start_time=int(start * _NS), attributes=attributes)
        span.end(end_time=int(max(end, start) * _NS))
    except Exception:  # tracing must never cost a decision or an attempt
        log.debug("span %s of task %s not recorded", name, uid, exc_info=True)


def task_ended(uid: str, *, created: float, end: float, attributes: Mapping[str, AttributeValue]) -> None:
    """The task's root span, from its creation to its end, once it ended."""
    tracer, ids = _State.tracer, _State.ids
    if tracer is None or ids is None:
        return
    try:
        with ids.root(uid):
            span = tracer.start_span(
                "qorch.task", context=trace.set_span_in_context(trace.INVALID_SPAN), start_time=int(created * _NS),
                attributes=attributes,
            )  # fmt: skip
        span.end(end_time=int(max(end, created) * _NS))
    except Exception:  # tracing must never cost a decision
        log.debug("root span of task %s not recorded", uid, exc_info=True)


@contextlib.contextmanager
def cycle() -> Iterator[dict[str, Any]]:
    """A scheduling cycle's span; what the caller puts in the yielded dict becomes its attributes."""
    tracer = _State.tracer
    found: dict[str, Any] = {}
    if tracer is None:
        yield found
        return
    with tracer.start_as_current_span("qorch.cycle", kind=SpanKind.INTERNAL) as span:
        yield found
        span.set_attributes(found)


@contextlib.contextmanager
def handler(uid: str, attributes: Mapping[str, AttributeValue]) -> Iterator[None]:
    """The span of a handler's run, current while it runs, in its task's trace."""
    tracer = _State.tracer
    if tracer is None:
        yield
        return
    with tracer.start_as_current_span("qorch.task.handler", context=_task_context(uid), attributes=attributes):
        yield
