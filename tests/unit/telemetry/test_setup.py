"""mesh.telemetry: off by default, configure() once, context carried the way Ray tasks carry it."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterator

import pytest
from opentelemetry.baggage import get_baggage, set_baggage
from opentelemetry.context import attach, detach
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mesh import telemetry
from mesh.config import Settings
from mesh.telemetry import genai, names


@pytest.fixture(params=["lean", "sdk"])
def spans(request: pytest.FixtureRequest) -> Iterator[InMemorySpanExporter]:
    """Each test runs on the mesh's lean tracer and on the SDK's (SLMESH_OTEL_TRACER)."""
    exporter = InMemorySpanExporter()
    assert telemetry.configure(
        "unit",
        Settings(replica_id="unit-7", environment="test", otel_tracer=request.param),
        version="9.9.9",
        span_exporter=exporter,
    )
    yield exporter
    telemetry.shutdown()


def test_off_by_default_installs_nothing() -> None:
    assert telemetry.configure("unit", Settings(otel_enabled=False)) is False
    assert not telemetry.enabled()
    assert genai.start_generation("m", provider="transformers", prompt="x") is None
    assert genai.start_tool("get_order", "c-1") is None
    assert telemetry.prometheus_text() is None
    with telemetry.get_tracer().start_as_current_span("nothing") as span:
        assert not span.is_recording()


def test_invalid_signal_list_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown signals"):
        Settings(otel_export="traces,profiles")


def test_configure_is_idempotent_and_sets_the_resource(spans: InMemorySpanExporter) -> None:
    assert telemetry.configure("other", Settings(otel_enabled=True)) is True
    with telemetry.get_tracer().start_as_current_span("one"):
        pass
    (span,) = spans.get_finished_spans()
    resource = span.resource.attributes
    assert resource["service.name"] == "unit"
    assert resource["service.instance.id"] == "unit-7"
    assert resource["service.version"] == "9.9.9"
    assert resource[names.DEPLOYMENT_ENVIRONMENT] == "test"
    assert resource[names.OPENINFERENCE_PROJECT] == "slmesh"


def test_carrier_and_attached_carry_a_trace_into_another_worker(
    spans: InMemorySpanExporter,
) -> None:
    """What the planner does for a Ray task: carrier() in the caller, attached() in the worker."""
    tracer = telemetry.get_tracer()
    token = attach(set_baggage("tenant", "acme"))
    try:
        with tracer.start_as_current_span("plan") as parent:
            carried = pickle.loads(pickle.dumps(telemetry.carrier()))
    finally:
        detach(token)
    assert "traceparent" in carried
    assert "baggage" in carried
    seen: dict[str, object] = {}

    def worker() -> None:  # a fresh thread has an empty context, like a Ray worker
        with telemetry.attached(carried):
            seen["tenant"] = get_baggage("tenant")
            with tracer.start_as_current_span("step"):
                pass

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    step = next(s for s in spans.get_finished_spans() if s.name == "step")
    assert step.context.trace_id == parent.get_span_context().trace_id
    assert step.parent is not None
    assert step.parent.span_id == parent.get_span_context().span_id
    assert seen["tenant"] == "acme"
    with telemetry.attached({}):  # nothing carried: the block runs in the current context
        pass


def test_prometheus_exposition_has_the_mesh_metrics(spans: InMemorySpanExporter) -> None:
    handle = genai.start_tool("get_order", "call-1")
    genai.end_tool(handle, outcome="ok")
    exposition = telemetry.prometheus_text()
    assert exposition is not None
    body, media_type = exposition
    assert b"mesh_tool_duration" in body
    assert media_type.startswith("text/plain")
    (span,) = spans.get_finished_spans()
    assert span.name == "execute_tool get_order"
    assert span.attributes[names.TOOL_CALL_ID] == "call-1"
