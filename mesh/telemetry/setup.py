"""``configure()``: the OpenTelemetry SDK for one process, installed once at start-up.

Off (the default) installs nothing: the API's no-op providers stay in place and the mesh's
own hooks are skipped by one attribute check, so a request pays nothing. On, it installs a
tracer provider (sampler from ``OTEL_TRACES_SAMPLER``, parent-based always-on unless set;
the mesh's lean provider and OTLP encoder, :mod:`mesh.telemetry.tracer`, or with
``SLMESH_OTEL_TRACER=sdk`` the SDK's with its batch span processor), a meter provider
(periodic OTLP reader and/or a Prometheus registry) and a logger provider (a ``logging`` handler, so
log records carry trace ids), each with the same resource. Exporter endpoint, headers, timeouts and
compression are read by the OTLP exporters themselves from the standard ``OTEL_EXPORTER_OTLP_*``
variables.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace

from mesh.telemetry import names

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from prometheus_client import CollectorRegistry

    from mesh.config import Settings
    from mesh.telemetry.instruments import Instruments

log = logging.getLogger(__name__)

SCOPE = "slmesh"
"""Instrumentation scope of every span and instrument the mesh creates."""


@dataclass
class _State:
    """What :func:`configure` installed; ``tracer`` is None while telemetry is off."""

    tracer: trace.Tracer | None = None
    meter: metrics.Meter | None = None
    instruments: Instruments | None = None
    content: bool = False
    service: str = ""
    instance: str = ""
    prometheus: CollectorRegistry | None = None
    metric_readers: int = 0
    tracer_provider: Any = None  # the lean or the SDK provider: force_flush(ms), shutdown()
    meter_provider: MeterProvider | None = None
    logger_provider: Any = None
    log_handler: logging.Handler | None = None
    extra: dict[str, Any] = field(default_factory=dict)


STATE = _State()
_lock = threading.Lock()


def enabled() -> bool:
    """Whether :func:`configure` installed the SDK in this process."""
    return STATE.tracer is not None


def configure(
    service_name: str,
    settings: Settings | None = None,
    *,
    replica_id: str | None = None,
    version: str | None = None,
    span_exporter: SpanExporter | None = None,
    endpoint: str | None = None,
) -> bool:
    """Installs tracing, metrics and logs for this process; returns whether telemetry is on.

    Idempotent: a second call returns at once (the first call's service wins). With
    ``settings.otel_enabled`` false and no ``span_exporter`` nothing is installed.
    ``span_exporter`` (tests) replaces the OTLP span exporter, behind a simple
    (synchronous) processor so spans are visible as soon as they end. ``endpoint``
    overrides ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the CLI exporting to the local UI).
    """
    from mesh.config import Settings

    settings = settings or Settings()
    with _lock:
        if STATE.tracer is not None:
            return True
        if not settings.otel_enabled and span_exporter is None:
            return False
        _install(service_name, settings, replica_id, version, span_exporter, endpoint)
    return True


def _resource(
    service_name: str, settings: Settings, replica_id: str | None, version: str | None
) -> Any:
    from opentelemetry.sdk.resources import Resource

    from mesh import __version__

    instance = (
        replica_id or settings.replica_id or f"{service_name}-{socket.gethostname()}-{os.getpid()}"
    )
    return Resource.create(
        {
            "service.name": service_name,
            "service.namespace": "slmesh",
            "service.instance.id": instance,
            "service.version": version or __version__,
            names.DEPLOYMENT_ENVIRONMENT: settings.environment,
            names.OPENINFERENCE_PROJECT: settings.otel_project,
        }
    )


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
    signals = set(settings.otel_export.split(",")) if settings.otel_enabled else set()
    tracer_provider = _tracer_provider(resource, settings, signals, span_exporter, endpoint)
    meter_provider = _meter_provider(resource, settings, signals)
    if trace.get_tracer_provider().__class__.__name__ == "ProxyTracerProvider":
        trace.set_tracer_provider(tracer_provider)
    if metrics.get_meter_provider().__class__.__name__ == "_ProxyMeterProvider":
        metrics.set_meter_provider(meter_provider)
    if "logs" in signals:
        _install_logs(resource, settings)
    STATE.tracer_provider = tracer_provider
    STATE.meter_provider = meter_provider
    STATE.service = service_name
    STATE.instance = str(resource.attributes.get("service.instance.id", ""))
    STATE.content = settings.trace_content
    STATE.meter = meter_provider.get_meter(SCOPE)
    # Recording costs a few microseconds per measurement; skip it when nothing reads metrics.
    STATE.instruments = Instruments(STATE.meter) if STATE.metric_readers else None
    STATE.tracer = tracer_provider.get_tracer(SCOPE)
    log.info(
        "telemetry on for %s (%s); exporting %s over OTLP/%s",
        service_name,
        STATE.instance,
        ",".join(sorted(signals)) or "nothing",
        settings.otlp_protocol,
    )


def _tracer_provider(
    resource: Any,
    settings: Settings,
    signals: set[str],
    span_exporter: SpanExporter | None,
    endpoint: str | None,
) -> trace.TracerProvider:
    """The lean provider (default) or the SDK's; both sample per OTEL_TRACES_SAMPLER(_ARG)."""
    if settings.otel_tracer == "sdk":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        provider = TracerProvider(resource=resource)
        if span_exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        elif "traces" in signals:
            provider.add_span_processor(BatchSpanProcessor(_otlp("trace", settings, endpoint)))
        return provider
    from mesh.telemetry import otlp
    from mesh.telemetry.tracer import LeanTracerProvider, Limits, SpanSink

    limits = Limits.from_environment()  # OTEL_*_LIMIT
    sink: SpanSink
    if span_exporter is not None:
        sink = otlp.SdkExporterSink(span_exporter, resource)
    elif "traces" in signals:
        sink = otlp.BatchExporter(
            otlp.Encoder(resource, limits), _otlp("trace", settings, endpoint, encoded=True)
        )
    else:
        sink = otlp.DroppingSink()
    return LeanTracerProvider(resource, sink, limits=limits)


def _otlp(
    signal: str, settings: Settings, endpoint: str | None = None, *, encoded: bool = False
) -> Any:
    """The OTLP exporter for one signal; it reads its endpoint etc. from OTEL_EXPORTER_OTLP_*.

    ``encoded``: the trace exporter sends requests the lean tracer encoded (same settings).
    """
    if settings.otlp_protocol == "grpc":
        if signal == "trace":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter: type[OTLPSpanExporter] = OTLPSpanExporter
            if encoded:
                from mesh.telemetry.otlp import GrpcBytesExporter

                exporter = GrpcBytesExporter
            return exporter(endpoint=endpoint, insecure=True) if endpoint else exporter()
        if signal == "metric":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            return OTLPMetricExporter()
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter()
    if signal == "trace":
        if encoded:
            from mesh.telemetry.otlp import HttpBytesExporter

            return HttpBytesExporter()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpans,
        )

        return HttpSpans()
    if signal == "metric":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpMetrics,
        )

        return HttpMetrics()
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs

    return HttpLogs()


def _meter_provider(resource: Any, settings: Settings, signals: set[str]) -> MeterProvider:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader

    readers: list[MetricReader] = []
    if "metrics" in signals:
        readers.append(
            PeriodicExportingMetricReader(_otlp("metric", settings))
        )  # OTEL_METRIC_EXPORT_INTERVAL
    if settings.prometheus:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry

        STATE.prometheus = CollectorRegistry()
        readers.append(PrometheusMetricReader(registry=STATE.prometheus))
    STATE.metric_readers = len(readers)
    return MeterProvider(resource=resource, metric_readers=readers)


def _install_logs(resource: Any, settings: Settings) -> None:
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(BatchLogRecordProcessor(_otlp("log", settings)))
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
