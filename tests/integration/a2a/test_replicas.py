"""Several replicas behind the registry: balancing, failover on a dead replica, graceful drain."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable

import grpc
import httpx
import pytest
from a2a.helpers.proto_helpers import new_text_message
from a2a.types import a2a_pb2 as pb
from a2a.types import a2a_pb2_grpc

from mesh.a2a.client import MeshClient, StaticReplicas, text_of
from mesh.a2a.discovery import RegistryReplicas, replica_from_registry
from mesh.config import Settings
from mesh.registry import RegistryClient, RegistryServer, RegistryView, start_registry_server
from tests.conftest import ECHO_SERVICE
from tests.support.procs import ServiceProcess
from tests.support.proxy import RoundRobinProxy


@pytest.fixture
async def registry() -> AsyncIterator[RegistryServer]:
    server = await start_registry_server(Settings(registry_ttl_s=60.0), port=0)
    yield server
    await server.stop(grace=0)


async def _registered(address: str, count: int, timeout: float = 15.0) -> list[str]:
    async with RegistryClient(address) as client:
        for _ in range(int(timeout / 0.05)):
            entries = await client.list(agent="echo")
            if len(entries) == count:
                return sorted(e.replica_id for e in entries)
            await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} echo replicas in the registry")


def _replica(
    spawn: Callable[..., ServiceProcess], registry: RegistryServer, name: str
) -> ServiceProcess:
    return spawn(
        ECHO_SERVICE,
        env={
            "SLMESH_REGISTRY": registry.address,
            "SLMESH_REPLICA_ID": name,
            "SLMESH_TASK_STORE": "memory",
        },
    )


async def test_balances_and_fails_over(
    spawn: Callable[..., ServiceProcess], registry: RegistryServer
) -> None:
    a, b = _replica(spawn, registry, "echo-a"), _replica(spawn, registry, "echo-b")
    assert await _registered(registry.address, 2) == ["echo-a", "echo-b"]
    view = RegistryView(RegistryClient(registry.address))
    view.start()
    assert await view.wait_synced(5)
    async with MeshClient(RegistryReplicas(view)) as client:
        replies = await asyncio.gather(*(client.send_text("echo", f"m{i}") for i in range(60)))
        assert sorted(text_of(r) for r in replies) == sorted(f"M{i}" for i in range(60))
        counts = {}
        for proc, name in ((a, "echo-a"), (b, "echo-b")):
            single = StaticReplicas.from_urls("echo", proc.http_url, f"grpc://{proc.grpc_target}")
            async with MeshClient(single) as direct:
                counts[name] = len((await direct.list_tasks("echo")).tasks)
        assert counts["echo-a"] + counts["echo-b"] >= 60
        assert min(counts.values()) >= 10, counts  # both replicas took a real share

        a.kill()  # SIGKILL: no deregistration, still listed until its TTL
        assert "echo-a" in {r.replica_id for r in RegistryReplicas(view).replicas("echo")}
        replies = await asyncio.gather(*(client.send_text("echo", f"after{i}") for i in range(20)))
        assert sorted(text_of(r) for r in replies) == sorted(f"AFTER{i}" for i in range(20))
    await view.stop()


async def test_sigterm_drains_in_flight_and_deregisters(
    spawn: Callable[..., ServiceProcess], registry: RegistryServer
) -> None:
    proc = _replica(spawn, registry, "echo-drain")
    await _registered(registry.address, 1)
    async with RegistryClient(registry.address) as reg:
        source = StaticReplicas([replica_from_registry(e) for e in await reg.list(agent="echo")])
    async with MeshClient(source, max_attempts=1) as client:
        slow = asyncio.create_task(client.send_text("echo", "sleep:1.5"))
        for _ in range(100):
            ready = httpx.get(proc.http_url + "/readyz").json()
            if ready["in_flight"] == 1:
                break
            await asyncio.sleep(0.02)
        assert ready["in_flight"] == 1
        proc.popen.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        assert httpx.get(proc.http_url + "/readyz").status_code == 503
        refused = httpx.post(
            proc.http_url + "/",
            json={"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {}},
            headers={"A2A-Version": "1.0"},
        )
        assert refused.status_code == 503  # new work goes elsewhere (retryable)
        assert text_of(await slow) == "SLEEP:1.5"  # the accepted request still finished
    assert await asyncio.to_thread(proc.popen.wait, 15) == 0
    async with RegistryClient(registry.address) as reg:
        assert await reg.list(agent="echo") == []  # deregistered, not left to expire


async def test_grpc_connections_age_out_so_a_balancer_spreads_one_channel(
    spawn: Callable[..., ServiceProcess],
) -> None:
    """A client keeps one gRPC channel; behind an L4 balancer it reaches both replicas when
    connections age out (SLMESH_GRPC_MAX_CONNECTION_AGE_S), and no call fails for it."""
    env = {"SLMESH_GRPC_MAX_CONNECTION_AGE_S": "0.3"}
    replicas = [spawn(ECHO_SERVICE, env=env), spawn(ECHO_SERVICE, env=env)]
    proxy = RoundRobinProxy([r.grpc_port for r in replicas])
    await proxy.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{proxy.port}") as channel:
            stub = a2a_pb2_grpc.A2AServiceStub(channel)
            for i in range(20):
                reply = await stub.SendMessage(
                    pb.SendMessageRequest(message=new_text_message(f"call {i}")), timeout=10
                )
                assert reply.task.artifacts[0].parts[0].text == f"CALL {i}"
                await asyncio.sleep(0.1)
    finally:
        await proxy.stop()
    assert sorted(proxy.per_target) == sorted(r.grpc_port for r in replicas)  # both reached
