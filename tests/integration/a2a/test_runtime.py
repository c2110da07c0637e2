"""The agent runtime as a real process, driven by the official a2a-sdk client on every transport."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from a2a.client import A2ACardResolver, ClientConfig, create_client
from a2a.helpers.proto_helpers import new_text_message
from a2a.types import a2a_pb2 as pb

from tests.conftest import ECHO_SERVICE
from tests.support.procs import ServiceProcess

BINDINGS = ["GRPC", "JSONRPC", "HTTP+JSON"]
V1 = {"A2A-Version": "1.0"}


def _config(binding: str, **headers: str) -> ClientConfig:
    """Official client config: a plain grpc channel factory dials the card's gRPC URL as it is."""
    return ClientConfig(
        supported_protocol_bindings=[binding],
        grpc_channel_factory=grpc.aio.insecure_channel,
        httpx_client=httpx.AsyncClient(headers=headers) if headers else None,
    )


@pytest.fixture
def echo(spawn: Callable[..., ServiceProcess]) -> ServiceProcess:
    return spawn(ECHO_SERVICE, env={"SLMESH_TASK_STORE": "sqlite"})


async def _events(client, request) -> list[pb.StreamResponse]:  # type: ignore[no-untyped-def]
    return [event async for event in client.send_message(request)]


@pytest.mark.parametrize("binding", BINDINGS)
async def test_official_client_full_task_lifecycle(echo: ServiceProcess, binding: str) -> None:
    async with httpx.AsyncClient() as http:
        card = await A2ACardResolver(http, echo.http_url).get_agent_card()
    client = await create_client(card, _config(binding))
    try:
        assert {i.protocol_binding for i in card.supported_interfaces} == set(BINDINGS)
        assert card.capabilities.streaming
        assert [s.id for s in card.skills] == ["echo"]

        events = await _events(
            client, pb.SendMessageRequest(message=new_text_message(f"hi {binding}"))
        )
        kinds = [e.WhichOneof("payload") for e in events]
        assert kinds[0] == "task"
        assert "artifact_update" in kinds
        assert events[-1].status_update.status.state == pb.TaskState.TASK_STATE_COMPLETED
        task_id = events[0].task.id
        artifact = next(e.artifact_update.artifact for e in events if e.HasField("artifact_update"))
        assert artifact.parts[0].text == f"HI {binding}"

        task = await client.get_task(pb.GetTaskRequest(id=task_id))
        assert task.status.state == pb.TaskState.TASK_STATE_COMPLETED
        assert task.artifacts[0].parts[0].text == f"HI {binding}"

        listed = await client.list_tasks(pb.ListTasksRequest())
        assert task_id in {t.id for t in listed.tasks}

        # A slow task: subscribe from a second stream, then cancel it.
        stream = client.send_message(pb.SendMessageRequest(message=new_text_message("sleep:5")))
        first = await anext(stream)
        slow_id = first.task.id
        subscription = client.subscribe(pb.SubscribeToTaskRequest(id=slow_id))
        sub_first = await asyncio.wait_for(anext(subscription), 5)
        assert sub_first.WhichOneof("payload") in {"task", "status_update"}
        canceled = await client.cancel_task(pb.CancelTaskRequest(id=slow_id))
        assert canceled.status.state == pb.TaskState.TASK_STATE_CANCELED
        await stream.aclose()
        await subscription.aclose()
        assert (
            await client.get_task(pb.GetTaskRequest(id=slow_id))
        ).status.state == pb.TaskState.TASK_STATE_CANCELED
    finally:
        await client.close()


@pytest.mark.parametrize("binding", BINDINGS)
async def test_unknown_task_is_task_not_found(echo: ServiceProcess, binding: str) -> None:
    from a2a.utils.errors import TaskNotFoundError

    client = await create_client(echo.http_url, _config(binding))
    try:
        with pytest.raises(TaskNotFoundError):
            await client.get_task(pb.GetTaskRequest(id="no-such-task"))
    finally:
        await client.close()


async def test_card_and_health_endpoints(echo: ServiceProcess) -> None:
    async with httpx.AsyncClient(base_url=echo.http_url) as http:
        card = (await http.get("/.well-known/agent-card.json")).json()
        assert card["name"] == "echo"
        urls = {i["protocolBinding"]: i["url"] for i in card["supportedInterfaces"]}
        assert urls["GRPC"] == f"localhost:{echo.grpc_port}"
        assert urls["JSONRPC"].startswith("http://localhost:")
        assert (await http.get("/healthz")).json()["status"] == "ok"
        assert (await http.get("/readyz")).json()["ready"] is True
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(echo.grpc_target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="lf.a2a.v1.A2AService"), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_a_replica_is_not_ready_until_its_warm_up_has_run(
    tmp_path: Path, spawn: Callable[..., ServiceProcess]
) -> None:
    spec = yaml.safe_load((ECHO_SERVICE / "agent.yaml").read_text())
    spec["options"] = {"warm_up_s": 3}
    service = tmp_path / "slow-echo"
    service.mkdir()
    (service / "agent.yaml").write_text(yaml.safe_dump(spec))
    proc = spawn(service, wait=False)
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while not seen or seen[-1] != 200:
        assert time.monotonic() < deadline, proc.output()
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(proc.http_url + "/readyz", timeout=1)
            seen.append(response.status_code)
            if response.status_code == 503:
                assert response.json()["warming_up"] is True
        time.sleep(0.05)
    assert 503 in seen  # served, but not ready, while it warmed up
    assert "warmed up" in proc.output()


async def test_tasks_survive_a_restart_in_the_sqlite_store(
    spawn: Callable[..., ServiceProcess],
) -> None:
    first = spawn(ECHO_SERVICE)
    client = await create_client(first.http_url, _config("JSONRPC"))
    events = await _events(client, pb.SendMessageRequest(message=new_text_message("keep me")))
    await client.close()
    task_id = events[0].task.id
    assert first.terminate() == 0
    data_dir = first.log.parent / "data"
    second = spawn(ECHO_SERVICE, env={"SLMESH_DATA_DIR": str(data_dir)})
    client = await create_client(second.http_url, _config("GRPC"))
    try:
        task = await client.get_task(pb.GetTaskRequest(id=task_id))
        assert task.artifacts[0].parts[0].text == "KEEP ME"
    finally:
        await client.close()
