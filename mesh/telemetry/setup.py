"""``configure()``: the OpenTelemetry SDK for one process, installed once at start-up.

Metrics are always on (unless ``OTEL_SDK_DISABLED``): a meter provider with a Prometheus
registry behind ``/metrics`` and, where ``OTEL_METRICS_EXPORTER`` asks, a periodic OTLP reader.
Tracing is on when ``OTEL_TRACES_EXPORTER`` names an exporter (or a span processor is added,
:func:`add_span_processor`): the SDK's ``TracerProvider`` (sampler from ``OTEL_TRACES_SAMPLER``,
parent-based always-on unless set) with a batch span processor per exporter. Off, no tracer
provider exists and the mesh's own hooks are skipped by one attribute check. Logs go through a
``logging`` handler, so records carry trace ids, where ``OTEL_LOGS_EXPORTER`` asks. Each
provider has the same resource. Exporter endpoint, headers, timeouts and compression are read
by the OTLP exporters themselves from the standard ``OTEL_EXPORTER_OTLP_*`` variables.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace

from mesh.telemetry import names

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from prometheus_client import CollectorRegistry

    from mesh.config import Settings
    from mesh.telemetry.instruments import Instruments

log = logging.getLogger(__name__)

SCOPE = "slmesh"
"""Instrumentation scope of every span and instrument the mesh creates."""


@dataclass
class _State:
    """What :func:`configure` installed; ``tracer`` is None while tracing is off."""

    tracer: trace.Tracer | None = None
    meter: metrics.Meter | None = None
    instruments: Instruments | None = None
    content: bool = False
    service: str = ""
    instance: str = ""
    resource: Resource | None = None
    prometheus: CollectorRegistry | None = None
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    logger_provider: Any = None
    log_handler: logging.Handler | None = None


STATE = _State()
_lock = threading.Lock()


def enabled() -> bool:
    """Whether this process traces (configure() found a traces exporter, or a processor was
    added)."""
    return STATE.tracer is not None


def metered() -> bool:
    """Whether this process records the mesh's metrics (something reads them: /metrics, OTLP)."""
    return STATE.instruments is not None


def configure(
    service_name: str,
    settings: Settings | None = None,
    *,
    replica_id: str | None = None,
    version: str | None = None,
    span_exporter: SpanExporter | None = None,
    endpoint: str | None = None,
) -> bool:
    """Installs metrics, and tracing and logs where asked; returns whether tracing is on.

    Idempotent: a second call returns at once (the first call's service wins). With
    ``OTEL_SDK_DISABLED`` (or its alias ``SLMESH_OTEL_ENABLED=false``) and no ``span_exporter``
    nothing is installed. ``span_exporter`` (tests) gets every span at once, through a simple
    (synchronous) processor. ``endpoint`` overrides ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the CLI
    exporting to the local UI).
    """
    from mesh.config import Settings

    settings = settings or Settings()
    with _lock:
        if STATE.resource is not None:
            return STATE.tracer is not None
        if settings.otel_disabled() and span_exporter is None:
            return False
        _install(service_name, settings, replica_id, version, span_exporter, endpoint)
    return STATE.tracer is not None


def add_span_processor(processor: SpanProcessor) -> None:
    """Attaches ``processor`` to the mesh's tracer provider: it sees every span the mesh makes.

    The public way to add one's own processing (filtering, enrichment, another exporter).
    Tracing turns on if no exporter had turned it on; a server started before this call
    traces its hops only if tracing was on when it started. :func:`configure` must have run
    (the resource comes from it).
    """
    with _lock:
        if STATE.resource is None:
            raise RuntimeError("mesh.telemetry.configure() must run before add_span_processor()")
        _tracing().add_span_processor(processor)


def tracer_provider() -> TracerProvider | None:
    """The SDK tracer provider the mesh traces with; None while tracing is off."""
    return STATE.tracer_provider


def _resource(
    service_name: str, settings: Settings, replica_id: str | None, version: str | None
) -> Resource:
    """The mesh's resource; the standard OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win."""
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource

    from mesh import __version__

    instance = (
        replica_id or settings.replica_id or f"{service_name}-{socket.gethostname()}-{os.getpid()}"
    )
    mesh = Resource.create(
        {
            "service.name": service_name,
            "service.namespace": "slmesh",
            "service.instance.id": instance,
            "service.version": version or __version__,
            names.DEPLOYMENT_ENVIRONMENT: settings.environment,
            names.OPENINFERENCE_PROJECT: settings.otel_project,
        }
    )
    return mesh.merge(OTELResourceDetector().detect())


def _install(
    service_name: str,
    settings: Settings,
    replica_id: str | None,
    version: str | None,
    span_exporter: SpanExporter | None,
    endpoint: str | None,
) -> None:
    from mesh.telemetry.instruments import Instruments

    resource = _resource(service_name, settings, replica_id, version)
    STATE.resource = resource
    STATE.service = str(resource.attributes.get("service.name", service_name))
    STATE.instance = str(resource.attributes.get("service.instance.id", ""))
    STATE.content = settings.trace_content
    meter_provider, readers = _meter_provider(resource, settings)
    if metrics.get_meter_provider().__class__.__name__ == "_ProxyMeterProvider":
        metrics.set_meter_provider(meter_provider)
    STATE.meter_provider = meter_provider
    STATE.meter = meter_provider.get_meter(SCOPE)
    # Recording costs a few microseconds per measurement; skip it when nothing reads metrics.
    STATE.instruments = Instruments(STATE.meter) if readers else None
    traces = settings.exporters("traces")
    if span_exporter is not None or traces:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        provider = _tracing()
        if span_exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        for name in traces:
            exporter = _exporter("trace", name, settings, endpoint)
            provider.add_span_processor(
                SimpleSpanProcessor(exporter) if name == "console" else BatchSpanProcessor(exporter)
            )
    logs = settings.exporters("logs")
    if logs:
        _install_logs(resource, settings, logs)
    log.info(
        "telemetry for %s (%s): traces to %s, metrics to %s, logs to %s (OTLP over %s)",
        STATE.service,
        STATE.instance,
        ",".join(traces) or "nowhere",
        ",".join((["/metrics"] if settings.prometheus else []) + settings.exporters("metrics"))
        or "nowhere",
        ",".join(logs) or "nowhere",
        settings.otlp_protocol,
    )


def _tracing() -> TracerProvider:
    """The SDK tracer provider, created (and made global and the mesh's) on first use."""
    provider = STATE.tracer_provider
    if provider is None:
        from opentelemetry.sdk.trace import TracerProvider

        provider = STATE.tracer_provider = TracerProvider(resource=STATE.resource)
        if trace.get_tracer_provider().__class__.__name__ == "ProxyTracerProvider":
            trace.set_tracer_provider(provider)
        STATE.tracer = provider.get_tracer(SCOPE)
    return provider


def _exporter(signal: str, name: str, settings: Settings, endpoint: str | None = None) -> Any:
    """The exporter ``name`` (otlp, console) for one signal; OTLP reads its endpoint etc. from
    OTEL_EXPORTER_OTLP_*."""
    if name == "console":
        if signal == "trace":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            return ConsoleSpanExporter()
        if signal == "metric":
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

            return ConsoleMetricExporter()
        from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter

        return ConsoleLogRecordExporter()
    if settings.otlp_protocol == "grpc":
        if signal == "trace":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            return (
                OTLPSpanExporter(endpoint=endpoint, insecure=True)
                if endpoint
                else OTLPSpanExporter()
            )
        if signal == "metric":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            return OTLPMetricExporter()
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter()
    if signal == "trace":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpans,
        )

        return HttpSpans(endpoint=f"{endpoint.rstrip('/')}/v1/traces") if endpoint else HttpSpans()
    if signal == "metric":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpMetrics,
        )

        return HttpMetrics()
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs

    return HttpLogs()


def _meter_provider(resource: Resource, settings: Settings) -> tuple[MeterProvider, int]:
    """The meter provider and how many readers it has (Prometheus, pushed exporters)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader

    readers: list[MetricReader] = [
        PeriodicExportingMetricReader(_exporter("metric", name, settings))  # OTEL_METRIC_EXPORT_*
        for name in settings.exporters("metrics")
        if name != "prometheus"  # the pull exporter: /metrics below
    ]
    if settings.prometheus:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry

        STATE.prometheus = CollectorRegistry()
        readers.append(PrometheusMetricReader(registry=STATE.prometheus))
    return MeterProvider(resource=resource, metric_readers=readers), len(readers)


def _install_logs(resource: Resource, settings: Settings, exporters: list[str]) -> None:
    # The SDK's logs signal still lives in underscored modules (opentelemetry.sdk._logs, the
    # exporters' _log_exporter): the only path it offers; tests/unit/telemetry/test_setup.py
    # exports a record through it.
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider(resource=resource)
    for name in exporters:
        provider.add_log_record_processor(BatchLogRecordProcessor(_exporter("log", name, settings)))
    set_logger_provider(provider)
    handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    logging.getLogger().addHandler(handler)
    STATE.logger_provider = provider
    STATE.log_handler = handler


def prometheus_text() -> tuple[bytes, str] | None:
    """The Prometheus exposition of this process's metrics, or None when not collected."""
    registry = STATE.prometheus
    if registry is None:
        return None
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), CONTENT_TYPE_LATEST


class MetricsServer:
    """``/metrics`` on its own HTTP port, for a process that serves no HTTP otherwise (the
    registry). prometheus_client's server, in a thread of its own."""

    def __init__(self, host: str, port: int) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = STATE.prometheus or CollectorRegistry()  # empty while OTEL_SDK_DISABLED
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.port: int = self._server.server_address[1]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)


def force_flush(timeout_s: float = 5.0) -> None:
    """Exports every finished span now (tests, benchmarks, short-lived CLI commands)."""
    if STATE.tracer_provider is not None:
        STATE.tracer_provider.force_flush(int(timeout_s * 1000))


def shutdown() -> None:
    """Flushes and stops the providers; telemetry is off afterwards (a new configure() may
    follow)."""
    with _lock:
        state = STATE
        if state.log_handler is not None:
            logging.getLogger().removeHandler(state.log_handler)
        for provider in (state.tracer_provider, state.meter_provider, state.logger_provider):
            if provider is not None:
                provider.shutdown()
        state.__init__()  # type: ignore[misc]  # reset in place: modules hold this object
