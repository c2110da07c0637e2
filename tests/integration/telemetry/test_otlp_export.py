"""OTLP export over real sockets: the standard endpoint, headers and protocol variables."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.trace import SpanKind

from mesh import telemetry
from mesh.config import Settings
from tests.support.otlp import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.integration

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class GrpcReceiver:
    """An OTLP/gRPC TraceService on a free 127.0.0.1 port that keeps spans and request metadata."""

    def __init__(self) -> None:
        self.http = OtlpReceiver()  # reuses its request-to-spans reading
        self.metadata: list[dict[str, str]] = []

        def export(
            request: ExportTraceServiceRequest, context: grpc.ServicerContext
        ) -> ExportTraceServiceResponse:
            self.metadata.append(
                {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
            )
            self.http._add(request)  # noqa: SLF001 - a test helper's own recorder, shared
            return ExportTraceServiceResponse()

        service, method = EXPORT_METHOD.split("/")[1:]
        handler = grpc.method_handlers_generic_handler(
            service,
            {
                method: grpc.unary_unary_rpc_method_handler(
                    export,
                    request_deserializer=ExportTraceServiceRequest.FromString,
                    response_serializer=ExportTraceServiceResponse.SerializeToString,
                )
            },
        )
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=(handler,))
        self.endpoint = f"http://127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"
        self._server.start()

    def stop(self) -> None:
        self._server.stop(0).wait()


@pytest.fixture
def grpc_receiver() -> Iterator[GrpcReceiver]:
    receiver = GrpcReceiver()
    yield receiver
    receiver.stop()


def _one_trace() -> None:
    tracer = telemetry.get_tracer()
    with tracer.start_as_current_span(
        "invoke_agent echo",
        kind=SpanKind.SERVER,
        attributes={"gen_ai.agent.name": "echo", "mesh.slm.batch_size": 4},
    ):
        tracer.start_span(
            "execute_tool get_order", attributes={"gen_ai.tool.name": "get_order"}
        ).end()
    telemetry.force_flush()


def _check(spans: list[ReceivedSpan]) -> None:
    by_name = {s.name: s for s in spans}
    server, tool = by_name["invoke_agent echo"], by_name["execute_tool get_order"]
    assert server.service == tool.service == "exporter-test"
    assert tool.parent_id == server.span_id
    assert tool.trace_id == server.trace_id
    assert server.parent_id == ""
    assert server.attributes == {"gen_ai.agent.name": "echo", "mesh.slm.batch_size": 4}


def test_otlp_grpc_export_sends_the_spans_with_the_configured_headers(
    grpc_receiver: GrpcReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", grpc_receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    settings = Settings(prometheus=False)
    assert telemetry.configure("exporter-test", settings)
    try:
        _one_trace()
    finally:
        telemetry.shutdown()
    _check(grpc_receiver.http.snapshot())
    assert grpc_receiver.metadata
    assert all(m.get("x-tenant") == "acme" for m in grpc_receiver.metadata)


def test_otlp_http_export_posts_the_spans_by_the_deprecated_aliases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("SLMESH_OTEL_ENABLED", "true")
        monkeypatch.setenv("SLMESH_OTEL_EXPORT", "traces")
        monkeypatch.setenv("SLMESH_OTLP_PROTOCOL", "http/protobuf")
        settings = Settings(prometheus=False)
        assert telemetry.configure("exporter-test", settings)
        try:
            _one_trace()
        finally:
            telemetry.shutdown()
        _check(receiver.snapshot())
