"""OpenTelemetry for the mesh: one ``configure()`` per process, context across every hop.

Entry points call :func:`configure` once at start-up; library code only asks for a tracer
or meter. With ``SLMESH_OTEL_ENABLED`` unset nothing is installed and the mesh's hooks cost
one attribute check per request.

Public API::

    configure(service_name: str, settings: Settings | None = None, *,
              replica_id: str | None = None, version: str | None = None,
              span_exporter: SpanExporter | None = None) -> bool
        Installs tracer, meter and logger providers (idempotent); returns whether telemetry
        is on. The tracer provider is the mesh's lean one (:mod:`mesh.telemetry.tracer`,
        OTLP encoded by :mod:`mesh.telemetry.otlp`) unless SLMESH_OTEL_TRACER=sdk. Resource:
        service.name, service.instance.id (replica id), service.version,
        deployment.environment.name, openinference.project.name. OTLP over gRPC or HTTP
        (SLMESH_OTLP_PROTOCOL); endpoint, headers and sampler from the standard OTEL_*
        variables (e.g. OTEL_TRACES_SAMPLER=parentbased_traceidratio,
        OTEL_TRACES_SAMPLER_ARG=0.1). ``span_exporter`` is for tests (e.g. an
        ``InMemorySpanExporter``).
    enabled() -> bool
    get_tracer() -> opentelemetry.trace.Tracer     (a no-op tracer while telemetry is off)
    get_meter() -> opentelemetry.metrics.Meter     (a no-op meter while telemetry is off)
    carrier(ctx: Context | None = None) -> dict[str, str]
        The current trace context + baggage (W3C headers) as a picklable dict.
    attached(carrier: Mapping[str, str] | None) -> ContextManager[Context]
        Makes a carried context current for a block; spans started inside are its children.
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
    configure,
    enabled,
    force_flush,
    prometheus_text,
    shutdown,
)


def get_tracer() -> trace.Tracer:
    """The mesh's tracer: the configured SDK tracer, or the API's no-op tracer while off."""
    return STATE.tracer or trace.NoOpTracer()


def get_meter() -> metrics.Meter:
    """The mesh's meter: the configured SDK meter, or a no-op meter while off."""
    return STATE.meter or metrics.NoOpMeter(SCOPE)


__all__ = [
    "SCOPE",
    "attached",
    "carrier",
    "configure",
    "enabled",
    "force_flush",
    "get_meter",
    "get_tracer",
    "names",
    "prometheus_text",
    "shutdown",
]
