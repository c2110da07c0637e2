"""With SLMESH_API_TOKEN set, every A2A call on every transport needs the bearer token."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import httpx
import pytest
from a2a.types import a2a_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.a2a.client import DEFAULT_BINDINGS, MeshClient, StaticReplicas, text_of
from mesh.config import Settings
from tests.conftest import ECHO_SERVICE
from tests.support.procs import ServiceProcess

TOKEN = "s3cret-token"
BODY = {"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {}}


@pytest.fixture
def guarded(spawn: Callable[..., ServiceProcess]) -> ServiceProcess:
    return spawn(ECHO_SERVICE, env={"SLMESH_API_TOKEN": TOKEN})


async def test_card_is_public_and_declares_bearer(guarded: ServiceProcess) -> None:
    async with httpx.AsyncClient(base_url=guarded.http_url) as http:
        card = (await http.get("/.well-known/agent-card.json")).json()
        assert card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"] == "Bearer"
        assert card["securityRequirements"] == [{"schemes": {"bearer": {}}}]
        assert (await http.get("/healthz")).status_code == 200


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic czNjcmV0LXRva2Vu", TOKEN])
async def test_http_requires_the_token(guarded: ServiceProcess, auth: str | None) -> None:
    headers = {"A2A-Version": "1.0", **({"authorization": auth} if auth else {})}
    async with httpx.AsyncClient(base_url=guarded.http_url, headers=headers) as http:
        rpc = await http.post("/", json=BODY)
        rest = await http.get("/tasks")
    for reply in (rpc, rest):
        assert reply.status_code == 401
        assert reply.headers["www-authenticate"].startswith("Bearer")


async def test_grpc_requires_the_token(guarded: ServiceProcess) -> None:
    async with grpc.aio.insecure_channel(guarded.grpc_target) as channel:
        list_tasks = channel.unary_unary(
            "/lf.a2a.v1.A2AService/ListTasks",
            request_serializer=pb.ListTasksRequest.SerializeToString,
            response_deserializer=pb.ListTasksResponse.FromString,
        )
        for metadata in ((), (("authorization", "Bearer nope"),)):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await list_tasks(pb.ListTasksRequest(), metadata=metadata, timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = await list_tasks(
            pb.ListTasksRequest(), metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=5
        )
        assert isinstance(ok, pb.ListTasksResponse)
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("binding", DEFAULT_BINDINGS)
async def test_mesh_client_sends_the_token(guarded: ServiceProcess, binding: str) -> None:
    source = StaticReplicas.from_urls("echo", guarded.http_url, f"grpc://{guarded.grpc_target}")
    async with MeshClient(source, Settings(api_token=TOKEN), bindings=[binding]) as client:
        assert text_of(await client.send_text("echo", "with token")) == "WITH TOKEN"
    async with MeshClient(source, Settings(), bindings=[binding]) as client:
        with pytest.raises(Exception) as info:  # noqa: PT011 - each transport maps 401 its own way
            await client.send_text("echo", "without token")
        assert "401" in str(info.value) or "UNAUTHENTICATED" in str(info.value)
