"""Malformed and hostile requests get the protocol's error, and the replica keeps serving."""

from __future__ import annotations

import os
from collections.abc import Callable

import grpc
import httpx
import pytest
from a2a.types import a2a_pb2 as pb

from mesh.a2a.client import MeshClient, StaticReplicas, text_of
from tests.conftest import ECHO_SERVICE
from tests.support.procs import ServiceProcess

LIMIT = 64 * 1024
V1 = {"A2A-Version": "1.0", "content-type": "application/json"}


@pytest.fixture
def echo(spawn: Callable[..., ServiceProcess]) -> ServiceProcess:
    return spawn(ECHO_SERVICE, env={"SLMESH_MAX_REQUEST_BYTES": str(LIMIT)})


async def _still_serves(proc: ServiceProcess) -> None:
    source = StaticReplicas.from_urls("echo", proc.http_url, f"grpc://{proc.grpc_target}")
    async with MeshClient(source) as client:
        assert text_of(await client.send_text("echo", "alive")) == "ALIVE"


JSONRPC_CASES = [
    pytest.param(b"{bad", -32700, id="not-json"),
    pytest.param(
        b'{"jsonrpc": "1.0", "id": 1, "method": "GetTask", "params": {"id": "x"}}',
        -32600,
        id="wrong-version",
    ),
    pytest.param(b"[1, 2]", -32600, id="array-of-non-objects"),
    pytest.param(
        b'{"jsonrpc": "2.0", "id": 1, "method": "Nope", "params": {}}', -32601, id="unknown-method"
    ),
    pytest.param(
        b'{"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": 5}}',
        -32602,
        id="wrong-params",
    ),
    pytest.param(
        b'{"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "missing"}}',
        -32001,
        id="unknown-task",
    ),
    pytest.param(
        b'{"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "\xff\xfe"}}',
        -32700,
        id="invalid-utf8",
    ),
    pytest.param(b'{"a":' * 5000 + b"1" + b"}" * 5000, -32600, id="deep-nesting"),
]


@pytest.mark.parametrize(("body", "code"), JSONRPC_CASES)
async def test_jsonrpc_errors(echo: ServiceProcess, body: bytes, code: int) -> None:
    async with httpx.AsyncClient(base_url=echo.http_url) as http:
        reply = await http.post("/", content=body, headers=V1)
        assert reply.json()["error"]["code"] == code
    await _still_serves(echo)


async def test_missing_version_header_is_rejected_by_default(echo: ServiceProcess) -> None:
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {}}'
    async with httpx.AsyncClient(base_url=echo.http_url) as http:
        reply = await http.post("/", content=body, headers={"content-type": "application/json"})
    assert reply.json()["error"]["code"] == -32009  # VersionNotSupportedError


async def test_v03_requests_accepted_when_enabled(spawn: Callable[..., ServiceProcess]) -> None:
    proc = spawn(ECHO_SERVICE, env={"SLMESH_ACCEPT_A2A_V03": "true"})
    legacy = {
        "jsonrpc": "2.0",
        "id": "1",
        "method": "message/send",
        "params": {
            "message": {
                "kind": "message",
                "messageId": "m1",
                "role": "user",
                "parts": [{"kind": "text", "text": "old client"}],
            }
        },
    }
    async with httpx.AsyncClient(base_url=proc.http_url) as http:
        reply = (await http.post("/", json=legacy)).json()
    assert "error" not in reply, reply
    assert reply["result"]["artifacts"][0]["parts"][0]["text"] == "OLD CLIENT"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversized_body_is_413(echo: ServiceProcess, chunked: bool) -> None:
    big = (
        b'{"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"x": "'
        + b"a" * (2 * LIMIT)
        + b'"}}'
    )

    async def stream():  # type: ignore[no-untyped-def]
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    async with httpx.AsyncClient(base_url=echo.http_url) as http:
        reply = await http.post("/", content=stream() if chunked else big, headers=V1)
    assert reply.status_code == 413
    assert "exceeds the limit" in reply.json()["error"]["message"]
    await _still_serves(echo)


async def test_rest_errors(echo: ServiceProcess) -> None:
    async with httpx.AsyncClient(base_url=echo.http_url, headers=V1) as http:
        bad = await http.post("/message:send", content=b'{"message": 7}')
        assert bad.status_code == 400
        assert bad.json()["error"]["status"] == "INVALID_ARGUMENT"
        missing = await http.get("/tasks/nope")
        assert missing.status_code == 404
        assert missing.json()["error"]["status"] == "NOT_FOUND"
        not_json = await http.post("/message:send", content=b"\x00\x01garbage")
        assert not_json.status_code == 400
    await _still_serves(echo)


async def test_grpc_garbage_and_oversize(echo: ServiceProcess) -> None:
    async with grpc.aio.insecure_channel(echo.grpc_target) as channel:
        raw = channel.unary_unary(
            "/lf.a2a.v1.A2AService/SendMessage",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        for payload in (os.urandom(64), b"\xff" * 16):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await raw(payload, timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(
                pb.SendMessageRequest(metadata={"x": "a" * (2 * LIMIT)}).SerializeToString(),
                timeout=5,
            )
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        get_task = channel.unary_unary(
            "/lf.a2a.v1.A2AService/GetTask",
            request_serializer=pb.GetTaskRequest.SerializeToString,
            response_deserializer=pb.Task.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await get_task(pb.GetTaskRequest(id="nope"), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        unknown = channel.unary_unary("/lf.a2a.v1.A2AService/Nope")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await unknown(b"", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    await _still_serves(echo)
