"""Rolling upgrade without loss: an agent's replicas are replaced one by one (start the new
one, SIGTERM the old one: it refuses new work, finishes what it accepted, deregisters, exits)
while clients keep a steady load on it through the MeshClient and the registry's live view."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable

import pytest

from mesh.a2a.client import MeshClient, text_of
from mesh.a2a.discovery import RegistryReplicas
from mesh.config import Settings
from mesh.registry import RegistryClient, RegistryServer, RegistryView, start_registry_server
from tests.conftest import ECHO_SERVICE
from tests.support.procs import ServiceProcess

pytestmark = pytest.mark.integration

WORKERS = 6


@pytest.fixture
async def registry() -> AsyncIterator[RegistryServer]:
    server = await start_registry_server(Settings(registry_ttl_s=60.0), port=0)
    yield server
    await server.stop(grace=0)


async def _replica_ids(address: str) -> set[str]:
    async with RegistryClient(address) as client:
        return {e.replica_id for e in await client.list(agent="echo") if not e.draining}


async def _until(predicate: Callable[[], object], what: str, polls: int = 600) -> None:
    for _ in range(polls):
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


async def test_replacing_replicas_one_by_one_loses_no_request(
    spawn: Callable[..., ServiceProcess], registry: RegistryServer
) -> None:
    def start(name: str) -> ServiceProcess:
        return spawn(
            ECHO_SERVICE,
            env={
                "SLMESH_REGISTRY": registry.address,
                "SLMESH_REPLICA_ID": name,
                "SLMESH_TASK_STORE": "memory",
                "SLMESH_HEARTBEAT_INTERVAL_S": "0.5",
            },
        )

    old = [start("echo-v1-a"), start("echo-v1-b")]

    async def both_registered() -> bool:
        return await _replica_ids(registry.address) == {"echo-v1-a", "echo-v1-b"}

    await _until(both_registered, "v1 replicas")
    view = RegistryView(RegistryClient(registry.address))
    view.start()
    assert await view.wait_synced(10)
    sent, answered, failures = 0, 0, []
    stop = asyncio.Event()

    async def load(client: MeshClient, worker: int) -> None:
        nonlocal sent, answered
        i = 0
        while not stop.is_set():
            text = f"sleep:0.05 w{worker}-{i}"
            sent += 1
            try:
                reply = await client.send_text("echo", text, timeout=30)
                assert text_of(reply) == text.upper()
                answered += 1
            except Exception as exc:  # noqa: BLE001 - every lost request is recorded and fails the test
                failures.append(f"{text}: {exc!r}")
            i += 1

    async with MeshClient(RegistryReplicas(view), max_attempts=4) as client:
        workers = [asyncio.create_task(load(client, w)) for w in range(WORKERS)]
        try:
            for n, proc in enumerate(old):
                before = answered
                new_id = f"echo-v2-{'ab'[n]}"
                start(new_id)
                await _until(
                    lambda new_id=new_id: (
                        new_id in {r.replica_id for r in RegistryReplicas(view).replicas("echo")}
                    ),
                    f"{new_id} in the client's view",
                )
                # SIGTERM: drain in-flight work, deregister, exit 0; the load never pauses.
                assert await asyncio.to_thread(proc.terminate, 30.0) == 0
                await _until(lambda before=before: answered > before + 20, "traffic after the swap")
        finally:
            stop.set()
            await asyncio.gather(*workers)
        assert await _replica_ids(registry.address) == {"echo-v2-a", "echo-v2-b"}
        served = {r.replica_id for r in RegistryReplicas(view).replicas("echo")}
        assert served == {"echo-v2-a", "echo-v2-b"}
    await view.stop()
    assert failures == []
    assert answered == sent
    assert sent > 50
