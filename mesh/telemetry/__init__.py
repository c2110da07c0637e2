"""OpenTelemetry for the mesh: one ``configure()`` per process, context across every hop.

Entry points call :func:`configure` once at start-up; library code only asks for a tracer
or meter. Tracing is off until ``OTEL_TRACES_EXPORTER`` names an exporter (or a span
processor is added): the mesh's hooks then cost one attribute check per request. Metrics are
recorded whenever something reads them (``/metrics``, always served, or
``OTEL_METRICS_EXPORTER``); ``OTEL_SDK_DISABLED=true`` installs nothing at all.

Public API::

    configure(service_name: str, settings: Settings | None = None, *,
              replica_id: str | None = None, version: str | None = None,
              span_exporter: SpanExporter | None = None) -> bool
        Installs the OpenTelemetry SDK's meter provider, and its tracer and logger providers
        where asked (idempotent); returns whether tracing is on. Resource: service.name,
        service.instance.id (replica id), service.version, deployment.environment.name,
        openinference.project.name; OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win.
        OTLP over gRPC or HTTP (OTEL_EXPORTER_OTLP_PROTOCOL); endpoint, headers and sampler
        from the standard OTEL_* variables (e.g. OTEL_TRACES_SAMPLER=parentbased_traceidratio,
        OTEL_TRACES_SAMPLER_ARG=0.1). ``span_exporter`` is for tests (e.g. an
        ``InMemorySpanExporter``).
    add_span_processor(processor: SpanProcessor) -> None
        Attaches one's own SDK span processor to the mesh's tracer provider (tracing turns on).
    tracer_provider() -> opentelemetry.sdk.trace.TracerProvider | None
    enabled() -> bool                               (tracing on)
    metered() -> bool                               (metrics recorded)
    get_tracer() -> opentelemetry.trace.Tracer     (a no-op tracer while tracing is off)
    get_meter() -> opentelemetry.metrics.Meter     (a no-op meter while telemetry is off)
    carrier(ctx: Context | None = None) -> dict[str, str]
        The current trace context + baggage (W3C headers) as a picklable dict.
    attached(carrier: Mapping[str, str] | None) -> ContextManager[Context]
        Makes a carried context current for a block; spans started inside are its children.
    prometheus_text() -> tuple[bytes, str] | None   (the /metrics body and its media type)
    MetricsServer(host, port)                       (/metrics on a port of its own: the registry)
    force_flush(timeout_s: float = 5.0) -> None;  shutdown() -> None

Carrying a trace into Ray (the planner)::

    from mesh import telemetry

    @ray.remote
    def run_step(step, trace_carrier):
        with telemetry.attached(trace_carrier):
            with telemetry.get_tracer().start_as_current_span("step classify"):
                ...   # MeshClient calls made here join the caller's trace

    ref = run_step.remote(step, telemetry.carrier())   # inside the caller's span

Span and attribute names are in :mod:`mesh.telemetry.names`; GenAI spans for generations and
tool calls in :mod:`mesh.telemetry.genai`; the agent-side and client-side hop spans live in
:mod:`mesh.a2a.tracing` (the only package that imports a2a-sdk).
"""

from __future__ import annotations

from opentelemetry import metrics, trace

from mesh.telemetry import names
from mesh.telemetry.propagation import attached, carrier
from mesh.telemetry.setup import (
    SCOPE,
    STATE,
    MetricsServer,
    add_span_processor,
    configure,
    enabled,
    force_flush,
    metered,
    prometheus_text,
    shutdown,
    tracer_provider,
)


def get_tracer() -> trace.Tracer:
    """The mesh's tracer: the SDK tracer, or the API's no-op tracer while tracing is off."""
    return STATE.tracer or trace.NoOpTracer()


def get_meter() -> metrics.Meter:
    """The mesh's meter: the configured SDK meter, or a no-op meter while off."""
    return STATE.meter or metrics.NoOpMeter(SCOPE)


__all__ = [
    "SCOPE",
    "MetricsServer",
    "add_span_processor",
    "attached",
    "carrier",
    "configure",
    "enabled",
    "force_flush",
    "get_meter",
    "get_tracer",
    "metered",
    "names",
    "prometheus_text",
    "shutdown",
    "tracer_provider",
]
