"""Real processes: /metrics is served whenever a service runs, the registry exports its own
metrics, and the standard OTEL_* variables (service name, SDK off) reach exported spans.

Spans go to a real OTLP/HTTP receiver (tests.support.otlp); metrics are scraped over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanKind

from mesh import telemetry
from mesh.a2a import AgentServer, MeshClient, StaticReplicas
from mesh.a2a.client import GRPC, JSONRPC
from mesh.config import ServiceSpec, Settings, SkillSpec
from mesh.proto.slmesh.registry.v1 import registry_pb2 as pb
from mesh.registry import RegistryClient
from tests.conftest import ECHO_SERVICE
from tests.support.echo import EchoExecutor
from tests.support.otlp import OtlpReceiver
from tests.support.postgres import scratch_database
from tests.support.procs import ServiceProcess, start_registry, start_service
from tests.support.prometheus import sample

pytestmark = pytest.mark.integration

AGENT = "gen_ai_agent_name"
"""The agent label (gen_ai.agent.name) as Prometheus writes it."""


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


def _exporting(otlp: OtlpReceiver, **extra: str) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        **extra,
    }


def _metrics(proc: ServiceProcess) -> str:
    response = httpx.get(proc.http_url + "/metrics", timeout=5)
    assert response.status_code == 200
    return response.text


async def _until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Polls ``check`` until it holds; fails the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(0.1)


async def _send(proc: ServiceProcess, text: str) -> None:
    replicas = StaticReplicas.from_urls("echo", proc.http_url, f"grpc://{proc.grpc_target}")
    async with MeshClient(replicas, Settings(), bindings=[JSONRPC]) as client:
        await client.send_text("echo", text)


async def test_an_agent_serves_metrics_with_no_telemetry_variable_set(
    tmp_path: Path, no_otel_env: None
) -> None:
    echo = start_service(ECHO_SERVICE, tmp_path)
    try:
        await _send(echo, "hello")
        exposition = _metrics(echo)
    finally:
        echo.terminate()
    served = sample(
        exposition,
        "mesh_agent_request_duration_seconds_count",
        gen_ai_agent_name="echo",
        mesh_transport="JSONRPC",
    )
    assert served == 1


def _replica(replica_id: str, agent: str) -> pb.Replica:
    return pb.Replica(
        agent=agent,
        replica_id=replica_id,
        endpoints=[pb.Endpoint(transport="GRPC", url=f"{replica_id}:50051")],
        card_json=json.dumps({"name": agent}),
        version="1.0.0",
    )


@pytest.fixture(params=["memory", "postgres"])
def registry_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The registry's store: in memory, or PostgreSQL (the replicas gauge counts in SQL)."""
    env = {"SLMESH_REGISTRY_TTL_S": "1.5"}
    if request.param == "memory":
        yield env
        return
    with scratch_database("registry_metrics") as url:
        yield {**env, "SLMESH_REGISTRY_DATABASE": url}


async def test_the_registry_exports_replicas_registrations_expiries_and_watch_clients(
    tmp_path: Path, no_otel_env: None, registry_env: dict[str, str]
) -> None:
    registry = start_registry(tmp_path, env=registry_env)
    try:

        def value(metric: str, **labels: str) -> float | None:
            return sample(_metrics(registry), metric, **labels)

        assert value("mesh_registry_watch_clients") == 0
        assert value("mesh_registry_replicas", **{AGENT: "summarizer"}) is None
        async with RegistryClient(registry.grpc_target, timeout_s=5.0) as client:
            await client.register(_replica("s-1", "summarizer"))
            await client.register(_replica("s-2", "summarizer"))
            await client.register(_replica("t-1", "translator"))
            await _until(
                lambda: (
                    (
                        value("mesh_registry_replicas", **{AGENT: "summarizer"}),
                        value("mesh_registry_replicas", **{AGENT: "translator"}),
                    )
                    == (2, 1)
                )
            )
            registered = "mesh_registry_registrations_total"
            assert value(registered, **{AGENT: "summarizer"}) == 2
            assert value(registered, **{AGENT: "translator"}) == 1
            async with contextlib.aclosing(client.watch()) as events:
                await anext(events)
                await _until(lambda: value("mesh_registry_watch_clients") == 1)
                # No heartbeats: every replica expires after the TTL.
                await _until(lambda: value("mesh_registry_replicas", **{AGENT: "summarizer"}) == 0)
            await _until(lambda: value("mesh_registry_watch_clients") == 0)
        assert value("mesh_registry_replicas", **{AGENT: "translator"}) == 0
        assert value("mesh_registry_expiries_total", **{AGENT: "summarizer"}) == 2
        assert value("mesh_registry_expiries_total", **{AGENT: "translator"}) == 1
    finally:
        registry.terminate()


async def test_otel_service_name_names_the_exported_spans(
    tmp_path: Path, no_otel_env: None, otlp: OtlpReceiver
) -> None:
    env = _exporting(otlp, OTEL_SERVICE_NAME="echo-blue", OTEL_RESOURCE_ATTRIBUTES="team=mesh")
    echo = start_service(ECHO_SERVICE, tmp_path, env=env)
    try:
        await _send(echo, "hello")
        await _until(lambda: any(s.name == "invoke_agent echo" for s in otlp.snapshot()))
    finally:
        echo.terminate()
    spans = otlp.snapshot()
    assert {s.service for s in spans} == {"echo-blue"}


async def test_otel_sdk_disabled_exports_no_span_and_serves_empty_metrics(
    tmp_path: Path, no_otel_env: None, otlp: OtlpReceiver
) -> None:
    echo = start_service(ECHO_SERVICE, tmp_path, env=_exporting(otlp, OTEL_SDK_DISABLED="true"))
    try:
        await _send(echo, "hello")
        exposition = _metrics(echo)
    finally:
        assert echo.terminate() == 0  # a graceful stop flushes whatever was recorded
    assert exposition == ""
    assert otlp.snapshot() == []


class _Seen(SpanProcessor):
    """One's own span processor: keeps the spans that ended."""

    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


async def test_a_span_processor_added_through_telemetry_sees_both_sides_of_a_hop(
    tmp_path: Path, no_otel_env: None
) -> None:
    """No exporter configured: the processor alone turns tracing on."""
    assert telemetry.configure("test-mesh", Settings()) is False
    seen = _Seen()
    telemetry.add_span_processor(seen)
    spec = ServiceSpec(
        name="echo", description="echo", skills=[SkillSpec(id="echo", name="echo", description="e")]
    )
    echo = AgentServer(spec, Settings(data_dir=tmp_path, task_store="memory"), EchoExecutor())
    await echo.start()
    try:
        replicas = StaticReplicas.from_urls(
            "echo", f"http://127.0.0.1:{echo.http_port}", f"grpc://127.0.0.1:{echo.grpc_port}"
        )
        async with MeshClient(replicas, Settings(), bindings=[GRPC]) as client:
            await client.send_text("echo", "hello")
        await _until(lambda: any(s.kind is SpanKind.SERVER for s in seen.ended))
    finally:
        await echo.stop()
        telemetry.shutdown()
    by_kind = {s.kind: s for s in seen.ended}
    server, client_span = by_kind[SpanKind.SERVER], by_kind[SpanKind.CLIENT]
    assert server.name == "invoke_agent echo"
    assert client_span.name == "SendMessage echo"
    assert server.parent is not None
    assert server.parent.span_id == client_span.context.span_id


def test_a_registry_whose_metrics_port_is_taken_stops_and_says_which(
    tmp_path: Path, no_otel_env: None
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"registry metrics could not bind .*:{port}"):
            start_registry(tmp_path, env={"SLMESH_METRICS_PORT": str(port)})
