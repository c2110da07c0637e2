"""mesh.telemetry.otlp: hand-written OTLP bytes decode to what the SDK's encoder builds."""

from __future__ import annotations

import pytest
from opentelemetry.context import attach, detach
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.propagate import extract
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import Link, SpanKind, StatusCode, TraceState

from mesh.telemetry import otlp
from mesh.telemetry.tracer import LeanSpan, LeanTracerProvider
from tests.unit.telemetry.test_tracer import Kept

RESOURCE = Resource.create(
    {
        "service.name": "unit",
        "service.instance.id": "unit-1",
        "deployment.environment.name": "t",
        "numbers": (1, 2, 3),
    }
)


def _decoded(payload: bytes) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(payload)


def _as_sdk_writes(request: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    """``request`` less what the SDK's encoder leaves out: a link's trace state (OTLP has it)."""
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                for link in span.links:
                    link.ClearField("trace_state")
    return request


def _sdk(spans: list[LeanSpan]) -> ExportTraceServiceRequest:
    return encode_spans([otlp.to_readable(s, RESOURCE) for s in spans])


def _made(kept: Kept) -> list[LeanSpan]:
    """Spans with every kind of content the mesh writes (and some it does not)."""
    provider = LeanTracerProvider(RESOURCE, kept)
    tracer = provider.get_tracer("slmesh")
    other = provider.get_tracer(
        "other.scope", "1.2", "https://opentelemetry.io/schemas/1.26.0", {"lib": "x"}
    )
    remote = extract(
        {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "vendor=abc,other=1",
        }
    )
    token = attach(remote)
    try:
        with tracer.start_as_current_span(
            "invoke_agent echo",
            kind=SpanKind.SERVER,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "echo",
                "count": 3,
                "negative": -42,
                "big": 2**62,
                "ratio": 0.5,
                "flag": False,
                "empty": "",
                "ünicode": "naïve ✓",
                "strings": ["a", "b"],
                "ints": (1, 2),
                "floats": (0.25,),
                "bools": [True, False],
            },
        ) as server:
            server.add_event("escalation", {"from": "small", "to": "large"})
            server.add_event("bare")
            client = tracer.start_span("SendMessage tools", kind=SpanKind.CLIENT)
            client.record_exception(RuntimeError("boom"))
            client.set_status(StatusCode.ERROR, "RuntimeError: boom")
            client.end()
            linked = other.start_span(
                "batch",
                kind=SpanKind.CONSUMER,
                links=[Link(client.get_span_context(), {"why": "same batch"})],
            )
            linked.set_status(StatusCode.OK)
            linked.end()
            producer = tracer.start_span(
                "x" * 300, kind=SpanKind.PRODUCER, attributes={"long": "y" * 5000}
            )
            producer.end()
    finally:
        detach(token)
    return kept.spans


@pytest.fixture
def spans() -> list[LeanSpan]:
    return _made(Kept())


def test_the_request_decodes_to_what_the_sdk_encoder_builds(spans: list[LeanSpan]) -> None:
    ours = _decoded(otlp.Encoder(RESOURCE).spans(spans))
    (link,) = [link for s in ours.resource_spans[0].scope_spans[1].spans for link in s.links]
    assert link.trace_state == "vendor=abc,other=1"
    assert _as_sdk_writes(ours) == _sdk(spans)
    (resource_spans,) = ours.resource_spans
    assert [s.scope.name for s in resource_spans.scope_spans] == ["slmesh", "other.scope"]
    server = next(s for s in resource_spans.scope_spans[0].spans if s.name == "invoke_agent echo")
    assert server.parent_span_id == bytes.fromhex("b7ad6b7169203331")
    assert server.flags == 0x300
    assert server.trace_state == "vendor=abc,other=1"
    assert {
        a.key: a.value.int_value for a in server.attributes if a.key in ("negative", "big")
    } == {"negative": -42, "big": 2**62}


def test_each_span_alone_decodes_the_same_too(spans: list[LeanSpan]) -> None:
    encoder = otlp.Encoder(RESOURCE)
    for span in spans:
        assert _as_sdk_writes(_decoded(encoder.spans([span]))) == _sdk([span])
        assert _as_sdk_writes(_decoded(encoder.spans([span]))) == _sdk(
            [span]
        )  # again: from the caches


def test_values_otlp_cannot_carry_are_dropped_and_counted(spans: list[LeanSpan]) -> None:
    span = spans[0]
    span.attributes.update(
        {"object": object(), "huge": 2**80, "mixed": ("a", object()), "none": None}
    )  # type: ignore[attr-defined]
    decoded = (
        _decoded(otlp.Encoder(RESOURCE).spans([span])).resource_spans[0].scope_spans[0].spans[0]
    )
    keys = {a.key for a in decoded.attributes}
    assert not keys & {"object", "huge", "mixed", "none"}
    assert (
        decoded.dropped_attributes_count == 3
    )  # None is not an attribute at all (the SDK refuses it)


class Sent:
    """A fake of the SDK exporter's sending end: keeps the requests."""

    def __init__(self) -> None:
        self.requests: list[otlp.Encoded] = []
        self.closed = False

    def send(self, data: otlp.Encoded) -> bool:
        self.requests.append(data)
        return True

    def shutdown(self) -> None:
        self.closed = True


def test_the_batch_exporter_drops_and_counts_beyond_its_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "4")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "3")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")  # only flushes and full batches send
    sent = Sent()
    exporter = otlp.BatchExporter(otlp.Encoder(RESOURCE), sent)  # type: ignore[arg-type]
    tracer = LeanTracerProvider(RESOURCE, exporter).get_tracer("slmesh")
    for i in range(4):
        tracer.start_span(f"s{i}").end()
    assert exporter.force_flush(5.0)
    for i in range(4, 10):  # the worker may drain a full batch meanwhile; the rest waits
        tracer.start_span(f"s{i}").end()
    assert exporter.force_flush(5.0)
    names = [
        s.name
        for r in sent.requests
        for s in _decoded(r.payload).resource_spans[0].scope_spans[0].spans
    ]
    assert names[:4] == ["s0", "s1", "s2", "s3"]
    assert [r.count for r in sent.requests][:2] == [3, 1]  # batches of at most 3
    assert len(names) + exporter.dropped == 10
    assert exporter.exported == len(names)
    exporter.shutdown()
    assert sent.closed


def test_shutdown_exports_what_is_left() -> None:
    sent = Sent()
    provider = LeanTracerProvider(RESOURCE, otlp.BatchExporter(otlp.Encoder(RESOURCE), sent))  # type: ignore[arg-type]
    provider.get_tracer("slmesh").start_span("last").end()
    provider.shutdown()
    assert [
        s.name
        for r in sent.requests
        for s in _decoded(r.payload).resource_spans[0].scope_spans[0].spans
    ] == ["last"]
    assert not provider.get_tracer("slmesh").start_span("after").is_recording()


def test_trace_state_is_written_as_its_header() -> None:
    # The encoder's field writer, checked alone: a span carrying trace state needs a full
    # protobuf decode to read it back, which the exporter tests do.
    header = otlp._trace_state(b"\x1a", TraceState([("a", "1"), ("b", "2")]))  # noqa: SLF001 - see above
    assert header == b"\x1a\x07a=1,b=2"
    assert otlp._trace_state(b"\x1a", TraceState()) == b""  # noqa: SLF001 - see above


def _limited_span(tracer: object) -> None:
    """The same calls on either provider's tracer: more than the limits below allow."""
    span = tracer.start_span(
        "limited",
        attributes={  # type: ignore[attr-defined]
            "c": 3,
            "d": True,
            "a": "x" * 20,
            "b": ["y" * 20, "q"],
        },
    )
    other = span.get_span_context()
    for i in range(3):
        span.add_event(f"e{i}", {"k1": "z" * 20, "k2": 1, "k3": 2}, timestamp=1_000 + i)
    span.add_link(other, {"l1": "w" * 20, "l2": 2, "l3": 3})
    span.add_link(other, {"l1": "v"})
    span.end(end_time=2_000)


def test_otel_limit_variables_apply_as_in_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    for name, value in {
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "2",
        "OTEL_SPAN_EVENT_COUNT_LIMIT": "2",
        "OTEL_SPAN_LINK_COUNT_LIMIT": "1",
        "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT": "1",
        "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT": "2",
        "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "5",
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "3",
    }.items():
        monkeypatch.setenv(name, value)
    memory = InMemorySpanExporter()
    sdk = TracerProvider(resource=RESOURCE)
    sdk.add_span_processor(SimpleSpanProcessor(memory))
    _limited_span(sdk.get_tracer("slmesh"))
    kept = Kept()
    _limited_span(LeanTracerProvider(RESOURCE, kept).get_tracer("slmesh"))
    theirs = encode_spans(memory.get_finished_spans()).resource_spans[0].scope_spans[0].spans[0]
    ours = (
        _decoded(otlp.Encoder(RESOURCE).spans(kept.spans)).resource_spans[0].scope_spans[0].spans[0]
    )
    assert [(a.key, a.value) for a in ours.attributes] == [
        (a.key, a.value) for a in theirs.attributes
    ]
    assert [a.key for a in ours.attributes] == ["a", "b"]
    assert ours.attributes[0].value.string_value == "xxxxx"
    assert [v.string_value for v in ours.attributes[1].value.array_value.values] == ["yyyyy", "q"]
    assert ours.dropped_attributes_count == theirs.dropped_attributes_count == 2
    assert [(e.name, list(e.attributes), e.dropped_attributes_count) for e in ours.events] == [
        (e.name, list(e.attributes), e.dropped_attributes_count) for e in theirs.events
    ]
    assert [e.name for e in ours.events] == ["e1", "e2"]
    assert ours.events[0].attributes[0].value.int_value == 2
    assert ours.events[0].dropped_attributes_count == 2
    assert ours.dropped_events_count == theirs.dropped_events_count == 1
    assert [(list(link.attributes), link.dropped_attributes_count) for link in ours.links] == [
        (list(link.attributes), link.dropped_attributes_count) for link in theirs.links
    ]
    assert ours.dropped_links_count == theirs.dropped_links_count == 1
