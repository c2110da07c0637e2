"""mesh.telemetry.tracer: the lean provider behaves like the SDK's where a backend can tell."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import baggage, trace
from opentelemetry.context import Context, attach, detach
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import sampling
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from mesh.telemetry import propagation
from mesh.telemetry.tracer import MAX_EVENTS, LeanSpan, LeanTracerProvider


class Kept:
    """A sink that keeps what ends (the export thread's place)."""

    def __init__(self) -> None:
        self.spans: list[LeanSpan] = []

    def add(self, span: LeanSpan) -> None:
        self.spans.append(span)

    def force_flush(self, timeout_s: float) -> bool:
        return True

    def shutdown(self) -> None:
        pass


@pytest.fixture
def kept() -> Kept:
    return Kept()


def _tracer(kept: Kept, sampler: sampling.Sampler | None = None) -> trace.Tracer:
    return LeanTracerProvider(Resource.create({"service.name": "unit"}), kept, sampler).get_tracer(
        "unit"
    )


def test_children_share_the_trace_and_name_their_parent(kept: Kept) -> None:
    tracer = _tracer(kept)
    with tracer.start_as_current_span("root", kind=SpanKind.SERVER, attributes={"a": 1}) as root:
        child = tracer.start_span("child", attributes={"tags": ["x", "y"]})
        child.end()
    (first, second) = kept.spans
    assert first.name == "child"
    assert second.name == "root"
    assert first.span_context.trace_id == root.get_span_context().trace_id
    assert first.parent == root.get_span_context()
    assert second.parent is None
    assert first.attributes["tags"] == ("x", "y")  # lists are copied, like the SDK does
    assert second.kind is SpanKind.SERVER
    assert second.end_time >= second.start_time
    assert not root.is_recording()
    root.set_attribute("late", 1)  # ended: ignored
    assert "late" not in root.attributes  # type: ignore[attr-defined]


def test_an_exception_leaving_the_block_is_recorded_and_sets_the_status(kept: Kept) -> None:
    tracer = _tracer(kept)
    with pytest.raises(ValueError, match="bad input"), tracer.start_as_current_span("work"):
        raise ValueError("bad input")
    (span,) = kept.spans
    assert span.status is not None
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError: bad input"
    (event,) = span.events or []
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "ValueError"


def test_status_follows_the_sdk_rules(kept: Kept) -> None:
    span = _tracer(kept).start_span("s")
    span.set_status(StatusCode.UNSET)
    assert span.status is None  # type: ignore[attr-defined]
    span.set_status(Status(StatusCode.OK))
    span.set_status(StatusCode.ERROR, "ignored: OK is final")
    assert span.status.status_code is StatusCode.OK  # type: ignore[attr-defined]


def test_events_links_and_names_are_kept_within_limits(kept: Kept) -> None:
    tracer = _tracer(kept)
    other = tracer.start_span("other")
    span = tracer.start_span("before", links=[Link(other.get_span_context(), {"why": "batch"})])
    span.update_name("after")
    for i in range(MAX_EVENTS + 3):
        span.add_event("tick", {"i": i})
    span.add_link(trace.INVALID_SPAN_CONTEXT)  # invalid: not a link
    span.end()
    assert span.name == "after"  # type: ignore[attr-defined]
    assert len(span.events) == MAX_EVENTS
    assert span.dropped_events == 3
    assert [link.attributes["why"] for link in span.links] == ["batch"]  # type: ignore[attr-defined]


def test_start_as_current_span_decorates_sync_and_async_functions(kept: Kept) -> None:
    tracer = _tracer(kept)

    @tracer.start_as_current_span("sync")
    def work() -> int:
        return trace.get_current_span().get_span_context().span_id

    @tracer.start_as_current_span("async")
    async def awork() -> int:
        return trace.get_current_span().get_span_context().span_id

    assert work() != work()  # a span per call
    asyncio.run(awork())
    assert [s.name for s in kept.spans] == ["sync", "sync", "async"]


@pytest.mark.parametrize("ratio", [0.0, 0.25, 1.0])
def test_root_sampling_decides_like_the_sdk_sampler(kept: Kept, ratio: float) -> None:
    sdk = sampling.ParentBasedTraceIdRatio(ratio)
    tracer = _tracer(kept, sdk)
    for _ in range(400):
        span = tracer.start_span("root")
        context = span.get_span_context()
        decision = sdk.should_sample(None, context.trace_id, "root").decision.is_sampled()
        assert span.is_recording() is decision is context.trace_flags.sampled
        span.end()
    low, high = {0.0: (0, 0), 0.25: (50, 150), 1.0: (400, 400)}[ratio]
    assert low <= len(kept.spans) <= high


@pytest.mark.parametrize("sampled", [True, False])
def test_a_remote_parent_decides_for_its_children(kept: Kept, sampled: bool) -> None:
    tracer = _tracer(kept, sampling.ParentBasedTraceIdRatio(0.0 if sampled else 1.0))
    flags = "01" if sampled else "00"
    token = attach(
        extract({"traceparent": f"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-{flags}"})
    )
    try:
        span = tracer.start_span("hop")
    finally:
        detach(token)
    assert span.get_span_context().trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert span.is_recording() is sampled
    if sampled:
        assert span.parent.is_remote
        assert span.parent.span_id == 0xB7AD6B7169203331


def test_the_sampler_comes_from_otel_traces_sampler(
    kept: Kept, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    assert not _tracer(kept).start_span("root").is_recording()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    assert not _tracer(kept).start_span("root").is_recording()


def test_a_custom_sampler_is_asked(kept: Kept) -> None:
    class Named(sampling.Sampler):
        def should_sample(
            self,
            parent_context,
            trace_id,
            name,
            kind=None,
            attributes=None,
            links=None,  # type: ignore[no-untyped-def]
            trace_state=None,
        ):
            decision = (
                sampling.Decision.RECORD_AND_SAMPLE if name == "keep" else sampling.Decision.DROP
            )
            return sampling.SamplingResult(decision, {"sampled.by": "name"})

        def get_description(self) -> str:
            return "Named"

    tracer = _tracer(kept, Named())
    assert not tracer.start_span("drop").is_recording()
    span = tracer.start_span("keep")
    assert span.attributes["sampled.by"] == "name"  # type: ignore[attr-defined]


HEADERS = [
    {},
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"},
    {
        "traceparent": "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"
    },  # upper case: invalid
    {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},  # zero trace id
    {
        "traceparent": "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        "-what-the-future-holds"
    },
    {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "vendor=x,other=y",
    },
    {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "baggage": "tenant=acme",
    },
    {"traceparent": "garbage"},
]


@pytest.mark.parametrize("headers", HEADERS)
def test_the_inline_w3c_path_reads_what_the_propagators_read(headers: dict[str, str]) -> None:
    ours = propagation.from_grpc(headers.items())
    theirs = extract(headers)
    assert (
        trace.get_current_span(ours).get_span_context()
        == trace.get_current_span(theirs).get_span_context()
    )
    assert baggage.get_all(ours) == baggage.get_all(theirs)
    asgi = propagation.from_asgi({k.encode(): v.encode() for k, v in headers.items()})
    assert (
        trace.get_current_span(asgi).get_span_context()
        == trace.get_current_span(theirs).get_span_context()
    )
    assert baggage.get_all(asgi) == baggage.get_all(theirs)
    expected: dict[str, str] = {}
    inject(expected, context=theirs)
    assert propagation.carrier(ours) == expected


def test_carrier_is_empty_without_a_span_or_baggage() -> None:
    assert propagation.carrier(Context()) == {}
