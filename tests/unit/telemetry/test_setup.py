"""mesh.telemetry: metrics on and tracing off by default, the standard OTEL_* variables over their
SLMESH_ aliases, one's own span processors, context carried the way Ray tasks carry it."""

from __future__ import annotations

import logging
import pickle
import threading
from collections.abc import Iterator

import pytest
from opentelemetry.baggage import get_baggage, set_baggage
from opentelemetry.context import attach, detach
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mesh import telemetry
from mesh.config import Settings
from mesh.telemetry import genai, names


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert telemetry.configure(
        "unit",
        Settings(replica_id="unit-7", environment="test"),
        version="9.9.9",
        span_exporter=exporter,
    )
    yield exporter
    telemetry.shutdown()


def test_sdk_disabled_installs_nothing(monkeypatch: pytest.MonkeyPatch, no_otel_env: None) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert telemetry.configure("unit", Settings()) is False
    assert not telemetry.enabled()
    assert not telemetry.metered()
    assert genai.start_generation("m", provider="transformers", prompt="x") is None
    assert genai.start_tool("get_order", "c-1") is None
    assert telemetry.prometheus_text() is None
    with telemetry.get_tracer().start_as_current_span("nothing") as span:
        assert not span.is_recording()


def test_by_default_metrics_are_served_and_nothing_is_traced(no_otel_env: None) -> None:
    try:
        assert telemetry.configure("unit", Settings()) is False
        assert telemetry.metered()
        assert telemetry.tracer_provider() is None
        assert genai.start_tool("get_order", "c-1") is None
        assert telemetry.prometheus_text() is not None
    finally:
        telemetry.shutdown()


@pytest.mark.parametrize(
    ("env", "traces", "disabled"),
    [
        ({}, [], False),
        ({"SLMESH_OTEL_ENABLED": "true"}, ["otlp"], False),
        ({"SLMESH_OTEL_ENABLED": "true", "OTEL_TRACES_EXPORTER": "none"}, [], False),
        ({"SLMESH_OTEL_ENABLED": "true", "SLMESH_OTEL_EXPORT": "metrics"}, [], False),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ["otlp", "console"], False),
        ({"SLMESH_OTEL_ENABLED": "false"}, [], True),
        ({"SLMESH_OTEL_ENABLED": "false", "OTEL_SDK_DISABLED": "false"}, [], False),
        ({"SLMESH_OTEL_ENABLED": "true", "OTEL_SDK_DISABLED": "true"}, [], True),
    ],
)
def test_standard_variables_win_over_their_slmesh_aliases(
    monkeypatch: pytest.MonkeyPatch,
    no_otel_env: None,
    env: dict[str, str],
    traces: list[str],
    disabled: bool,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.exporters("traces") == traces
    assert settings.otel_disabled() is disabled


def test_protocol_and_content_aliases(monkeypatch: pytest.MonkeyPatch, no_otel_env: None) -> None:
    monkeypatch.setenv("SLMESH_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("SLMESH_TRACE_CONTENT", "true")
    assert Settings().otlp_protocol == "http/protobuf"
    assert Settings().trace_content is True
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "NO_CONTENT")
    assert Settings().otlp_protocol == "grpc"
    assert Settings().trace_content is False
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    assert Settings().trace_content is True


def test_an_unknown_exporter_is_refused(monkeypatch: pytest.MonkeyPatch, no_otel_env: None) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER: unknown exporters"):
        Settings()


def test_otel_service_name_and_resource_attributes_win(
    monkeypatch: pytest.MonkeyPatch, no_otel_env: None
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout-echo")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=prod,team=mesh")
    exporter = InMemorySpanExporter()
    telemetry.configure("unit", Settings(environment="test"), span_exporter=exporter)
    try:
        telemetry.get_tracer().start_span("one").end()
    finally:
        telemetry.shutdown()
    (span,) = exporter.get_finished_spans()
    assert span.resource.attributes["service.name"] == "checkout-echo"
    assert span.resource.attributes[names.DEPLOYMENT_ENVIRONMENT] == "prod"
    assert span.resource.attributes["team"] == "mesh"
    assert span.resource.attributes["service.namespace"] == "slmesh"


class _Seen(SpanProcessor):
    """A user's own processor: keeps the names of the spans that ended."""

    def __init__(self) -> None:
        self.ended: list[str] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span.name)


def test_an_added_span_processor_turns_tracing_on_and_sees_the_mesh_spans(
    no_otel_env: None,
) -> None:
    seen = _Seen()
    assert telemetry.configure("unit", Settings()) is False
    try:
        telemetry.add_span_processor(seen)
        assert telemetry.enabled()
        handle = genai.start_tool("get_order", "call-1")
        genai.end_tool(handle, outcome="ok")
    finally:
        telemetry.shutdown()
    assert seen.ended == ["execute_tool get_order"]


def test_a_span_processor_needs_configure_first() -> None:
    with pytest.raises(RuntimeError, match="configure"):
        telemetry.add_span_processor(_Seen())


def test_invalid_signal_list_is_refused(no_otel_env: None) -> None:
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


def test_logs_exporter_sends_records_with_their_trace_id(
    monkeypatch: pytest.MonkeyPatch, no_otel_env: None, capfd: pytest.CaptureFixture[str]
) -> None:
    """OTEL_LOGS_EXPORTER: records go out through the SDK's logs signal (still in its
    underscored ``opentelemetry.sdk._logs`` modules, the only path it offers) with trace ids."""
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "console")
    telemetry.configure("unit", Settings(prometheus=False), span_exporter=InMemorySpanExporter())
    try:
        with telemetry.get_tracer().start_as_current_span("logged") as span:
            logging.getLogger("unit.logs").warning("order looked up")
            trace_id = f"{span.get_span_context().trace_id:032x}"
    finally:
        telemetry.shutdown()
    out = capfd.readouterr().out
    assert "order looked up" in out
    assert trace_id in out
