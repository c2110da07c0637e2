"""The registry over real gRPC on 127.0.0.1: protocol, expiry, health, and client resilience."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mesh.config import Settings
from mesh.proto.slmesh.registry.v1 import registry_pb2 as pb
from mesh.proto.slmesh.registry.v1 import registry_pb2_grpc as pb_grpc
from mesh.registry import (
    Backoff,
    MemoryRegistryStore,
    Registration,
    RegistryClient,
    RegistryServer,
    RegistryView,
    start_registry_server,
)

pytestmark = pytest.mark.integration

ADDED, UPDATED, REMOVED, SYNCED = (
    pb.WatchEvent.ADDED,
    pb.WatchEvent.UPDATED,
    pb.WatchEvent.REMOVED,
    pb.WatchEvent.SYNCED,
)
REGISTRY = "slmesh.registry.v1.Registry"
FAST_RETRY = Backoff(initial_s=0.02, max_s=0.1)
T = TypeVar("T")


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "registry_ttl_s": 5.0,
        "heartbeat_interval_s": 0.1,
    }
    values.update(overrides)
    return Settings(**values)


def replica(replica_id: str, agent: str = "summarizer", skills: tuple[str, ...] = ()) -> pb.Replica:
    return pb.Replica(
        agent=agent,
        replica_id=replica_id,
        endpoints=[
            pb.Endpoint(transport="GRPC", url=f"{replica_id}:50051"),
            pb.Endpoint(transport="JSONRPC", url=f"http://{replica_id}:8080/"),
        ],
        card_json=json.dumps({"name": agent}),
        version="1.0.0",
        skills=list(skills),
    )


async def eventually(condition: Callable[[], object], timeout: float = 1.5) -> None:
    """Polls ``condition`` (sync or async) until it holds; fails the test after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


def async_check(
    fetch: Callable[[], Awaitable[T]], predicate: Callable[[T], bool]
) -> Callable[[], Awaitable[bool]]:
    """A condition for :func:`eventually` that fetches a value and tests it."""

    async def check() -> bool:
        return predicate(await fetch())

    return check


async def next_event(events: AsyncIterator[pb.WatchEvent]) -> pb.WatchEvent:
    return await asyncio.wait_for(anext(events), 1.0)


def summary(event: pb.WatchEvent) -> tuple[int, str]:
    return event.type, event.replica.replica_id


@pytest.fixture
async def server() -> AsyncIterator[RegistryServer]:
    running = await start_registry_server(settings(), port=0)
    yield running
    await running.stop(0)


@pytest.fixture
async def client(server: RegistryServer) -> AsyncIterator[RegistryClient]:
    async with RegistryClient(server.address, timeout_s=1.0) as registry:
        yield registry


async def test_server_reports_the_port_it_bound(server: RegistryServer) -> None:
    assert server.port > 0
    assert server.address == f"127.0.0.1:{server.port}"


async def test_second_registry_on_a_taken_port_fails_clearly(server: RegistryServer) -> None:
    with pytest.raises(OSError, match=f"could not bind 127.0.0.1:{server.port}"):
        await start_registry_server(settings(), port=server.port)


async def test_client_from_settings_dials_the_configured_registry(server: RegistryServer) -> None:
    async with RegistryClient.from_settings(settings(registry=f"grpc://{server.address}")) as c:
        assert c.address == server.address
        assert await c.list() == []
    with pytest.raises(ValueError, match=r"settings\.registry is not set"):
        RegistryClient.from_settings(settings())


async def test_register_list_heartbeat_deregister(client: RegistryClient) -> None:
    response = await client.register(replica("s-1", skills=("summarize",)))
    await client.register(replica("t-1", agent="translator", skills=("translate",)))

    assert response.ttl_seconds == 5.0
    assert response.heartbeat_interval_seconds == 0.1
    assert [r.replica_id for r in await client.list()] == ["s-1", "t-1"]
    assert [r.replica_id for r in await client.list(agent="translator")] == ["t-1"]
    assert [r.replica_id for r in await client.list(skill="summarize")] == ["s-1"]
    [listed] = await client.list(agent="summarizer")
    assert listed.registered_at.seconds > 0
    assert [e.transport for e in listed.endpoints] == ["GRPC", "JSONRPC"]

    assert await client.heartbeat("s-1", pb.Load(in_flight=3, queue_depth=1, capacity=8))
    assert not await client.heartbeat("nobody")
    [listed] = await client.list(agent="summarizer")
    assert listed.load == pb.Load(in_flight=3, queue_depth=1, capacity=8)

    assert await client.deregister("s-1")
    assert not await client.deregister("s-1")
    assert [r.replica_id for r in await client.list()] == ["t-1"]


async def test_watch_streams_snapshot_synced_then_changes(client: RegistryClient) -> None:
    await client.register(replica("s-1"))
    async with contextlib.aclosing(client.watch()) as events:
        assert [summary(await next_event(events)) for _ in range(2)] == [
            (ADDED, "s-1"),
            (SYNCED, ""),
        ]

        await client.register(replica("s-2"))
        await client.heartbeat("s-1", pb.Load(in_flight=1))
        await client.heartbeat("s-1", pb.Load(in_flight=1))
        await client.heartbeat("s-1", pb.Load(in_flight=1), draining=True)
        await client.deregister("s-2")

        changes = [await next_event(events) for _ in range(4)]
        assert [summary(e) for e in changes] == [
            (ADDED, "s-2"),
            (UPDATED, "s-1"),
            (UPDATED, "s-1"),
            (REMOVED, "s-2"),
        ]
        assert changes[1].replica.load.in_flight == 1
        assert changes[2].replica.draining


async def test_closed_watch_stream_releases_its_subscription(
    server: RegistryServer, client: RegistryClient
) -> None:
    store = server.store
    assert isinstance(store, MemoryRegistryStore)
    async with contextlib.aclosing(client.watch()) as events:
        assert summary(await next_event(events)) == (SYNCED, "")
        assert store.watcher_count == 1

    await eventually(lambda: store.watcher_count == 0)


async def test_watch_filters_by_agent(client: RegistryClient) -> None:
    async with contextlib.aclosing(client.watch(agent="translator")) as events:
        assert summary(await next_event(events)) == (SYNCED, "")
        await client.register(replica("s-1", agent="summarizer"))
        await client.register(replica("t-1", agent="translator"))
        assert summary(await next_event(events)) == (ADDED, "t-1")


async def test_silent_replica_expires_and_watchers_hear_it() -> None:
    running = await start_registry_server(settings(registry_ttl_s=0.3), port=0)
    try:
        async with RegistryClient(running.address, timeout_s=1.0) as client:
            await client.register(replica("quiet"))
            async with contextlib.aclosing(client.watch()) as events:
                assert summary(await next_event(events)) == (ADDED, "quiet")
                assert summary(await next_event(events)) == (SYNCED, "")

                removed = await asyncio.wait_for(anext(events), 1.5)

            assert summary(removed) == (REMOVED, "quiet")
            assert await client.list() == []
            assert not await client.heartbeat("quiet")
    finally:
        await running.stop(0)


def endpoint_replica(*endpoints: pb.Endpoint, card_json: str = "") -> pb.Replica:
    return pb.Replica(agent="a", replica_id="r", endpoints=endpoints, card_json=card_json)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (pb.Replica(agent="a", endpoints=[pb.Endpoint(transport="GRPC", url="x:1")]), "replica_id"),
        (replica("r-1", agent=""), "replica.agent is required"),
        (pb.Replica(agent="a", replica_id="r"), "replica.endpoints needs at least one"),
        (endpoint_replica(pb.Endpoint(transport="SOAP", url="x:1")), "transport is 'SOAP'"),
        (endpoint_replica(pb.Endpoint(transport="GRPC")), "endpoints[0].url is required"),
        (
            endpoint_replica(pb.Endpoint(transport="GRPC", url="x:1"), card_json="{not json"),
            "card_json is not valid JSON",
        ),
        (
            endpoint_replica(pb.Endpoint(transport="GRPC", url="x:1"), card_json="[]"),
            "card_json must be a JSON object",
        ),
    ],
)
async def test_invalid_registration_is_rejected(
    client: RegistryClient, bad: pb.Replica, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.register(bad)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details()
    assert await client.list() == []


async def test_register_without_a_replica_is_rejected(server: RegistryServer) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.RegistryStub(channel).Register(pb.RegisterRequest(), timeout=1)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "replica is required"


async def test_heartbeat_and_deregister_need_a_replica_id(client: RegistryClient) -> None:
    for call in (client.heartbeat(""), client.deregister("")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "replica_id is required" in caught.value.details()


async def test_oversized_request_is_refused() -> None:
    running = await start_registry_server(settings(max_request_bytes=16 * 1024), port=0)
    try:
        async with RegistryClient(running.address, timeout_s=1.0) as client:
            big = replica("big")
            big.card_json = json.dumps({"name": "x" * 32 * 1024})
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await client.register(big)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert await client.list() == []
    finally:
        await running.stop(0)


async def test_health_is_serving_then_not_serving_on_stop() -> None:
    running = await start_registry_server(settings(), port=0)
    async with grpc.aio.insecure_channel(running.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", REGISTRY):
            response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=1)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND

        watch = health.Watch(health_pb2.HealthCheckRequest(service=REGISTRY))
        first = await asyncio.wait_for(watch.read(), 1)
        stopping = asyncio.create_task(running.stop(grace=1.0))
        second = await asyncio.wait_for(watch.read(), 1)
        watch.cancel()
        await stopping

    assert first.status == health_pb2.HealthCheckResponse.SERVING
    assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_lists_the_registry(server: RegistryServer) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=1
        )
        response = await call.read()

    names = {s.name for s in response.list_services_response.service}
    assert {REGISTRY, "grpc.health.v1.Health"} <= names


async def test_stop_ends_open_watch_streams_promptly() -> None:
    running = await start_registry_server(settings(), port=0)
    client = RegistryClient(running.address, timeout_s=1.0)
    async with client, contextlib.aclosing(client.watch()) as events:
        assert summary(await next_event(events)) == (SYNCED, "")
        loop = asyncio.get_running_loop()
        started = loop.time()
        await running.stop(grace=5.0)

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await next_event(events)

    assert loop.time() - started < 1.0
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in caught.value.details()


async def test_view_keeps_last_view_while_registry_is_down_then_resyncs() -> None:
    first = await start_registry_server(settings(), port=0)
    second: RegistryServer | None = None
    changes: list[tuple[int, str]] = []
    admin = RegistryClient(first.address, timeout_s=1.0, wait_for_ready=True)
    watcher = RegistryClient(first.address, timeout_s=1.0)
    view = RegistryView(watcher, on_change=lambda e: changes.append(summary(e)), backoff=FAST_RETRY)
    try:
        await admin.register(replica("s-1"))
        await admin.register(replica("t-1", agent="translator"))
        view.start()
        assert await view.wait_synced(1.0)
        assert view.agents() == ["summarizer", "translator"]
        assert [r.replica_id for r in view.replicas("translator")] == ["t-1"]

        await first.stop(0)
        await eventually(lambda: not view.synced)
        assert [r.replica_id for r in view.replicas()] == ["s-1", "t-1"]
        assert view.agents() == ["summarizer", "translator"]

        changes.clear()
        second = await start_registry_server(settings(), port=first.port)
        await admin.register(replica("s-2"))
        await eventually(lambda: [r.replica_id for r in view.replicas()] == ["s-2"])

        assert view.synced
        assert view.agents() == ["summarizer"]
        assert sorted(changes) == sorted(
            [(REMOVED, "s-1"), (REMOVED, "t-1"), (ADDED, "s-2"), (SYNCED, "")]
        )

        await admin.deregister("s-2")
        await eventually(lambda: view.replicas() == [])
    finally:
        await view.stop()
        await admin.close()
        await watcher.close()
        await first.stop(0)
        if second is not None:
            await second.stop(0)


async def test_view_without_a_registry_stays_empty_and_unsynced(server: RegistryServer) -> None:
    port = server.port
    await server.stop(0)
    async with RegistryClient(f"127.0.0.1:{port}", timeout_s=0.5) as nowhere:
        view = RegistryView(nowhere, backoff=FAST_RETRY)
        view.start()
        try:
            assert not await view.wait_synced(0.2)
            assert view.replicas() == []
            assert view.agents() == []
        finally:
            await view.stop()


async def test_registration_heartbeats_drains_and_deregisters(client: RegistryClient) -> None:
    load = pb.Load(in_flight=0, capacity=4)
    registration = Registration(client, replica("s-1"), lambda: load, backoff=FAST_RETRY)

    async def listed() -> list[pb.Replica]:
        return await client.list()

    try:
        registration.start()
        assert await registration.wait_registered(1.0)
        assert [r.load for r in await listed()] == [pb.Load(in_flight=0, capacity=4)]

        load = pb.Load(in_flight=2, capacity=4)
        await eventually(async_check(listed, lambda rs: rs[0].load.in_flight == 2))

        registration.set_draining()
        assert registration.draining
        await eventually(async_check(listed, lambda rs: rs[0].draining), timeout=0.5)
    finally:
        await registration.stop()

    assert await client.list() == []
    assert not registration.registered


async def test_registration_survives_a_registry_restart() -> None:
    first = await start_registry_server(settings(), port=0)
    second: RegistryServer | None = None
    agent_side = RegistryClient(first.address, timeout_s=0.5)
    admin = RegistryClient(first.address, timeout_s=1.0, wait_for_ready=True)
    registration = Registration(agent_side, replica("s-1"), backoff=FAST_RETRY)
    try:
        registration.start()
        assert await registration.wait_registered(1.0)

        await first.stop(0)
        await eventually(lambda: not registration.registered)
        second = await start_registry_server(settings(), port=first.port)

        assert await registration.wait_registered(1.5)
        assert [r.replica_id for r in await admin.list()] == ["s-1"]
        await registration.stop()
        assert await admin.list() == []
    finally:
        await registration.stop()
        await agent_side.close()
        await admin.close()
        await first.stop(0)
        if second is not None:
            await second.stop(0)


async def test_registration_reregisters_when_the_registry_forgets_it(
    server: RegistryServer, client: RegistryClient
) -> None:
    registration = Registration(client, replica("s-1"), backoff=FAST_RETRY)
    try:
        registration.start()
        assert await registration.wait_registered(1.0)
        assert await server.store.deregister("s-1")
        assert await client.list() == []

        await eventually(async_check(client.list, lambda rs: [r.replica_id for r in rs] == ["s-1"]))
    finally:
        await registration.stop()
