"""One trace per task across agent hops on real sockets, with GenAI spans on models and tools.

The agents run in the test's process (real 127.0.0.1 ports, real transports, the mesh's
gates and handler), so one in-memory exporter sees every span of both sides of each hop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.types import a2a_pb2 as pb
from google.protobuf import struct_pb2
from google.protobuf.json_format import ParseDict
from opentelemetry.baggage import get_baggage, set_baggage
from opentelemetry.context import attach, detach, get_current
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from mesh import telemetry
from mesh.a2a import AgentServer, MeshClient, StaticReplicas
from mesh.a2a.client import GRPC, JSONRPC, REST, text_of
from mesh.config import ServiceSpec, Settings, SkillSpec
from mesh.telemetry import names
from tests.support.echo import EchoExecutor
from tests.support.prometheus import sample
from tests.support.relay import RelayExecutor


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert telemetry.configure("test-mesh", Settings(), span_exporter=exporter)
    yield exporter
    telemetry.shutdown()


def _spec(name: str) -> ServiceSpec:
    return ServiceSpec(
        name=name,
        description=f"{name} test agent",
        skills=[SkillSpec(id=name, name=name, description=name)],
    )


def _replicas(server: AgentServer) -> StaticReplicas:
    return StaticReplicas.from_urls(
        server.spec.name,
        f"http://127.0.0.1:{server.http_port}",
        f"grpc://127.0.0.1:{server.grpc_port}",
    )


async def _serve(tmp: Path, name: str, executor: Any) -> AgentServer:
    server = AgentServer(
        _spec(name), Settings(data_dir=tmp, task_store="memory"), executor=executor
    )
    await server.start()
    return server


async def _finished(exporter: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    """The finished spans once ``count`` have ended (a server span may end just after its reply)."""
    for _ in range(500):
        finished = exporter.get_finished_spans()
        ids = {s.context.span_id for s in finished}
        mesh = [s for s in finished if s.instrumentation_scope.name == telemetry.SCOPE]
        if len(mesh) >= count and all(
            s.parent is None or s.parent.span_id in ids for s in finished
        ):
            break
        await asyncio.sleep(0.01)
    _ALL.clear()
    _ALL.update({s.context.span_id: s for s in exporter.get_finished_spans()})
    return [
        s for s in exporter.get_finished_spans() if s.instrumentation_scope.name == telemetry.SCOPE
    ]


def _by_name(spans: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


_ALL: dict[int, ReadableSpan] = {}


def _parent(span: ReadableSpan) -> int | None:
    """The nearest ancestor span of the mesh's own scope.

    a2a-sdk's internal spans sit in between when a test module imported ``a2a`` before
    ``mesh.a2a`` switched them off (they are decided at import); they are not the mesh's.
    """
    parent = span.parent.span_id if span.parent is not None else None
    while (
        parent is not None
        and parent in _ALL
        and _ALL[parent].instrumentation_scope.name != telemetry.SCOPE
    ):
        above = _ALL[parent].parent
        parent = above.span_id if above is not None else None
    return parent


@pytest.fixture
async def two_hops(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[MeshClient, AgentServer, AgentServer]]:
    """client -(first binding)-> relay -(second binding)-> echo."""
    first, second, streaming = request.param
    echo = await _serve(tmp_path / "echo", "echo", EchoExecutor())
    inner = MeshClient(_replicas(echo), Settings(), bindings=[second])
    relay = await _serve(
        tmp_path / "relay", "relay", RelayExecutor(inner, "echo", streaming=streaming)
    )
    outer = MeshClient(_replicas(relay), Settings(), bindings=[first])
    try:
        yield outer, relay, echo
    finally:
        await outer.close()
        await inner.close()
        await relay.stop()
        await echo.stop()


HOPS = [
    (GRPC, JSONRPC, False),
    (JSONRPC, REST, False),
    (REST, GRPC, False),
    (GRPC, GRPC, True),
    (JSONRPC, JSONRPC, True),
]


@pytest.mark.parametrize(
    "two_hops",
    HOPS,
    indirect=True,
    ids=[f"{a}-then-{b}{'-stream' if s else ''}" for a, b, s in HOPS],
)
async def test_two_hops_over_different_transports_make_one_trace(
    spans: InMemorySpanExporter, two_hops: tuple[MeshClient, AgentServer, AgentServer]
) -> None:
    client, relay, _echo = two_hops
    tracer = telemetry.get_tracer()
    token = attach(set_baggage("tenant", "acme", get_current()))
    try:
        with tracer.start_as_current_span("caller") as root:
            response = await client.send_text("relay", "hello")
    finally:
        detach(token)
    assert text_of(response) == "relayed: HELLO"
    done = await _finished(spans, 5)
    trace_ids = {s.context.trace_id for s in done}
    assert trace_ids == {root.get_span_context().trace_id}, [s.name for s in done]

    by_name = _by_name(done)
    assert set(by_name) >= {
        "caller",
        "SendMessage relay",
        "invoke_agent relay",
        "invoke_agent echo",
    }
    outer_call = by_name["SendMessage relay"]
    relay_span = by_name["invoke_agent relay"]
    inner_call = next(
        s for n, s in by_name.items() if n.endswith(" echo") and s.kind == SpanKind.CLIENT
    )
    echo_span = by_name["invoke_agent echo"]
    # caller -> client span -> relay's server span -> relay's client span -> echo's server span
    assert _parent(outer_call) == root.get_span_context().span_id
    assert _parent(relay_span) == outer_call.context.span_id
    assert _parent(inner_call) == relay_span.context.span_id
    assert _parent(echo_span) == inner_call.context.span_id
    assert relay_span.kind == SpanKind.SERVER
    assert outer_call.kind == SpanKind.CLIENT

    # GenAI agent attributes; the task id finds the trace from either side of the hop
    task_id = response.task.id
    assert relay_span.attributes[names.OPERATION] == "invoke_agent"
    assert relay_span.attributes[names.AGENT_NAME] == "relay"
    assert relay_span.attributes[names.AGENT_ID] == relay.replica_id
    assert relay_span.attributes[names.TASK_ID] == task_id
    assert relay_span.attributes[names.CONTEXT_ID] == response.task.context_id
    assert relay_span.attributes[names.TASK_STATE] == "TASK_STATE_COMPLETED"
    assert outer_call.attributes[names.TASK_ID] == task_id
    assert echo_span.attributes[names.AGENT_NAME] == "echo"
    assert echo_span.attributes[names.TASK_ID] != task_id
    assert inner_call.attributes[names.TRANSPORT] in (GRPC, JSONRPC, REST)


@pytest.mark.parametrize("two_hops", [(GRPC, JSONRPC, False)], indirect=True)
async def test_baggage_crosses_both_hops(
    spans: InMemorySpanExporter,
    two_hops: tuple[MeshClient, AgentServer, AgentServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, _, _ = two_hops
    seen: list[str | None] = []
    original = EchoExecutor.execute

    async def spy(self: EchoExecutor, context: Any, queue: Any) -> None:
        seen.append(get_baggage("tenant"))  # type: ignore[arg-type]
        await original(self, context, queue)

    monkeypatch.setattr(EchoExecutor, "execute", spy)
    token = attach(set_baggage("tenant", "acme"))
    try:
        await client.send_text("relay", "x")
    finally:
        detach(token)
    assert seen == ["acme"]


async def test_a_call_without_a_caller_span_starts_the_trace(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    echo = await _serve(tmp_path, "echo", EchoExecutor())
    try:
        async with MeshClient(_replicas(echo), Settings(), bindings=[GRPC]) as client:
            await client.send_text("echo", "a")
            task = await client.send_text("echo", "b")
            await client.get_task("echo", task.task.id)
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://127.0.0.1:{echo.http_port}/metrics")).text
    finally:
        await echo.stop()
    # Prometheus exposition on the agent's HTTP port: requests per agent, transport and method
    served = "mesh_agent_request_duration_seconds_count"
    assert (
        sample(
            metrics,
            served,
            gen_ai_agent_name="echo",
            mesh_transport="GRPC",
            rpc_method="SendMessage",
        )
        == 2
    )
    assert (
        sample(
            metrics, served, gen_ai_agent_name="echo", mesh_transport="GRPC", rpc_method="GetTask"
        )
        == 1
    )
    assert sample(metrics, "mesh_client_request_duration_seconds_count", mesh_transport="GRPC") == 3
    assert sample(metrics, "mesh_agent_requests_in_flight", gen_ai_agent_name="echo") == 0
    done = await _finished(spans, 5)
    calls = [s for s in done if s.kind == SpanKind.CLIENT]
    assert [s.name for s in calls] == ["SendMessage echo", "SendMessage echo", "GetTask echo"]
    assert all(s.parent is None for s in calls)
    assert len({s.context.trace_id for s in calls}) == 3
    for call in calls[:2]:
        (server,) = [
            s for s in done if s.parent is not None and s.parent.span_id == call.context.span_id
        ]
        assert server.name == "invoke_agent echo"


async def test_tool_call_gets_an_execute_tool_span(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    from mesh.tools.executor import ToolsExecutor

    spec = _spec("tools")
    settings = Settings(data_dir=tmp_path, task_store="memory")
    server = AgentServer(spec, settings, executor=ToolsExecutor(spec, settings))
    await server.start()
    call = {"name": "get_order", "arguments": {"order_id": "ORD-100001"}}
    part = pb.Part(data=ParseDict(call, struct_pb2.Value()), media_type="application/json")
    try:
        async with MeshClient(_replicas(server), Settings(), bindings=[JSONRPC]) as client:
            response = await client.send_message(
                "tools",
                pb.SendMessageRequest(
                    message=pb.Message(role=pb.Role.ROLE_USER, message_id="m-1", parts=[part])
                ),
            )
    finally:
        await server.stop()
    assert response.task.status.state == pb.TaskState.TASK_STATE_COMPLETED
    by_name = _by_name(await _finished(spans, 3))
    tool = by_name["execute_tool get_order"]
    agent = by_name["invoke_agent tools"]
    assert _parent(tool) == agent.context.span_id
    assert tool.attributes[names.OPERATION] == "execute_tool"
    assert tool.attributes[names.TOOL_NAME] == "get_order"
    assert tool.attributes[names.TOOL_CALL_ID] == response.task.id
    assert tool.attributes[names.TOOL_OUTCOME] in ("ok", "refused")
    assert names.TOOL_CALL_ARGUMENTS not in tool.attributes  # content capture is off by default


async def test_generation_gets_a_genai_span_with_usage(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    from mesh.slm import SLMExecutor, TransformersBackend
    from tests.support.tiny_slm import save_tiny_model

    model = save_tiny_model(tmp_path / "model", "llama", "char")
    backend = TransformersBackend(str(model), max_wait_ms=1, threads=1)
    spec = ServiceSpec(
        name="classifier",
        executor="mesh.slm.executor:SLMExecutor",
        options={
            "model": str(model),
            "max_new_tokens": 8,
            "prompt": "Intent: {input}\n",
            "output": {"labels": ["refund", "status"]},
        },
    )
    settings = Settings(data_dir=tmp_path, task_store="memory")
    server = AgentServer(spec, settings, executor=SLMExecutor(spec, settings, backend=backend))
    await server.start()
    try:
        async with MeshClient(_replicas(server), Settings(), bindings=[GRPC]) as client:
            response = await client.send_text("classifier", "where is ORD-1?")
    finally:
        await server.stop()
        backend.engine.close()
    assert response.task.status.state == pb.TaskState.TASK_STATE_COMPLETED
    by_name = _by_name(await _finished(spans, 3))
    generation = by_name[f"text_completion {backend.model_name}"]
    agent = by_name["invoke_agent classifier"]
    assert _parent(generation) == agent.context.span_id
    attributes = generation.attributes
    assert attributes[names.OPERATION] == "text_completion"
    assert attributes[names.PROVIDER] == "transformers"
    assert attributes[names.REQUEST_MODEL] == backend.model_name
    assert attributes[names.REQUEST_MAX_TOKENS] == 8
    assert attributes[names.REQUEST_TEMPERATURE] == 0.0
    assert attributes[names.USAGE_INPUT_TOKENS] > 0
    assert attributes[names.USAGE_OUTPUT_TOKENS] > 0
    assert attributes[names.TIME_TO_FIRST_CHUNK] > 0
    assert attributes[names.BATCH_SIZE] >= 1
    assert attributes[names.QUEUE_WAIT] >= 0
    assert attributes[names.FINISH_REASONS] == ("stop",)
    assert names.INPUT_MESSAGES not in attributes  # content capture is off by default


async def test_a_remote_model_call_carries_the_generation_span(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    """An agent fronting an OpenAI-compatible server (vLLM, NIM, ...) sends the chat span along."""
    from mesh.slm import SLMExecutor, TransformersBackend, create_openai_app
    from mesh.slm.openai_backend import OpenAIBackend
    from tests.support.tiny_slm import save_tiny_model

    local = TransformersBackend(
        str(save_tiny_model(tmp_path / "model", "llama", "char")), max_wait_ms=1, threads=1
    )
    seen: list[str | None] = []
    app = create_openai_app(local)

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(dict(scope["headers"]).get(b"traceparent", b"").decode() or None)
        await app(scope, receive, send)

    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://model")
    remote = OpenAIBackend("http://model/v1", local.model_name, http=http)
    spec = ServiceSpec(
        name="remote",
        executor="mesh.slm.executor:SLMExecutor",
        options={
            "backend": "openai",
            "base_url": "http://model/v1",
            "model_name": local.model_name,
            "max_new_tokens": 4,
            "system": "Answer briefly.",
        },
    )
    settings = Settings(data_dir=tmp_path, task_store="memory")
    server = AgentServer(spec, settings, executor=SLMExecutor(spec, settings, backend=remote))
    await server.start()
    try:
        async with MeshClient(_replicas(server), Settings(), bindings=[GRPC]) as client:
            response = await client.send_text("remote", "hello")
    finally:
        await server.stop()
        await http.aclose()
        local.engine.close()
    assert response.task.status.state == pb.TaskState.TASK_STATE_COMPLETED
    finished = await _finished(spans, 4)
    chats = {
        s.kind: s for s in finished if s.name == f"chat {local.model_name}"
    }  # system + user: a chat
    chat = chats[SpanKind.CLIENT]
    assert chat.attributes[names.PROVIDER] == "openai"
    assert seen
    assert seen[0] is not None
    assert seen[0].split("-")[1] == f"{chat.context.trace_id:032x}"
    assert seen[0].split("-")[2] == f"{chat.context.span_id:016x}"
    assert _parent(chats[SpanKind.SERVER]) == chat.context.span_id  # the model server's own span


async def test_the_openai_server_continues_the_callers_trace(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    """A remote caller's traceparent makes the OpenAI-compatible server's chat span its child,
    streaming or not; a request without one starts a trace of its own."""
    import uvicorn
    from opentelemetry.trace import set_span_in_context

    from mesh.slm import TransformersBackend, create_openai_app
    from tests.support.procs import free_port
    from tests.support.tiny_slm import save_tiny_model

    local = TransformersBackend(
        str(save_tiny_model(tmp_path / "model", "llama", "char")), max_wait_ms=1, threads=1
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_openai_app(local),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
    )
    serving = asyncio.create_task(server.serve())  # created before any span: no context leaks in
    chat = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        caller = telemetry.get_tracer().start_span("remote caller", kind=SpanKind.CLIENT)
        traceparent = telemetry.carrier(set_span_in_context(caller))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1", timeout=60) as http:
            plain = await http.post("/chat/completions", json=chat, headers=traceparent)
            streamed = await http.post(
                "/chat/completions", json={**chat, "stream": True}, headers=traceparent
            )
            caller.end()
            untraced = await http.post("/chat/completions", json=chat)
    finally:
        server.should_exit = True
        await serving
        local.engine.close()
    assert plain.status_code == streamed.status_code == untraced.status_code == 200
    assert streamed.text.rstrip().endswith("data: [DONE]")
    served = [s for s in await _finished(spans, 4) if s.kind == SpanKind.SERVER]
    assert [s.name for s in served] == [f"chat {local.model_name}"] * 3
    joined, alone = served[:2], served[2]
    for span in joined:
        assert span.context.trace_id == caller.get_span_context().trace_id
        assert span.parent is not None
        assert span.parent.span_id == caller.get_span_context().span_id
        assert span.parent.is_remote  # read from the request's headers, not inherited in-process
        assert span.attributes[names.USAGE_OUTPUT_TOKENS] > 0
    assert alone.parent is None
    assert alone.context.trace_id != caller.get_span_context().trace_id
