"""MeshClient's SendMessage fast paths (gRPC stub, JSON-RPC over its own HTTP/1.1 pool) against a
real mesh replica in this process: deadlines, failover, auth and parameter errors (the same
exceptions a2a-sdk's own transports raise), keep-alive reuse, big and concurrent replies."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
import pytest
from a2a.client import ClientCallContext
from a2a.client.transports import ClientTransport, GrpcTransport, JsonRpcTransport
from a2a.helpers.proto_helpers import new_text_message
from a2a.types import a2a_pb2 as pb
from a2a.utils.constants import PROTOCOL_VERSION_1_0, VERSION_HEADER
from a2a.utils.errors import InvalidParamsError

from mesh.a2a import AgentServer
from mesh.a2a.client import GRPC, JSONRPC, REST, MeshClient, Replica, StaticReplicas, text_of
from mesh.config import Settings
from mesh.errors import DeadlineExceededError, NoReplicaError
from tests.support.inproc import AGENT, replicas, start_mesh
from tests.support.procs import free_port
from tests.support.proxy import Proxy

T = TypeVar("T")
BINDINGS = pytest.mark.parametrize("binding", [GRPC, JSONRPC])
TOKEN = "sekret-token"


def text(words: str) -> pb.SendMessageRequest:
    return pb.SendMessageRequest(message=new_text_message(words, role=pb.Role.ROLE_USER))


async def bounded(awaitable: Any, timeout: float = 4.0) -> Any:
    return await asyncio.wait_for(awaitable, timeout)


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[AgentServer]:
    server = await start_mesh(tmp_path, drain_timeout_s=1.0)
    yield server
    await bounded(server.stop(), 10)


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[AgentServer]:
    server = await start_mesh(tmp_path, drain_timeout_s=1.0, api_token=TOKEN)
    yield server
    await bounded(server.stop(), 10)


def client_for(server: AgentServer, binding: str, **kwargs: Any) -> MeshClient:
    return MeshClient(replicas(server.http_port, server.grpc_port), bindings=[binding], **kwargs)


def sdk_transport(server: AgentServer, binding: str, http: httpx.AsyncClient) -> ClientTransport:
    """a2a-sdk's own transport for the binding: the behaviour the fast paths must reproduce."""
    card = pb.AgentCard(name=AGENT, capabilities=pb.AgentCapabilities(streaming=True))
    if binding == GRPC:
        return GrpcTransport(grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}"), card)
    return JsonRpcTransport(
        http, card, f"http://127.0.0.1:{server.http_port}/", is_shared_httpx=True
    )


def sdk_params(binding: str, token: str | None) -> dict[str, str]:
    params = {} if binding == GRPC else {VERSION_HEADER: PROTOCOL_VERSION_1_0}
    if token:
        params["authorization"] = f"Bearer {token}"
    return params


async def raised(awaitable: Any) -> BaseException:
    try:
        await bounded(awaitable)
    except Exception as exc:  # noqa: BLE001 - the exception is what is compared
        return exc
    raise AssertionError("expected the call to fail")


def same_error(ours: BaseException, theirs: BaseException) -> None:
    """Same type, message, data and cause type: what callers and is_retryable() look at."""
    assert type(ours) is type(theirs)
    assert str(ours) == str(theirs)
    assert getattr(ours, "data", None) == getattr(theirs, "data", None)
    assert type(ours.__cause__) is type(theirs.__cause__)


# -- deadlines ------------------------------------------------------------------------------------


@BINDINGS
async def test_a_timeout_is_deadline_exceeded(mesh: AgentServer, binding: str) -> None:
    async with client_for(mesh, binding) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            await bounded(client.send_message(AGENT, text("delay 1.0 slow"), timeout=0.2))
        assert time.monotonic() - started < 0.9  # the deadline, not the executor, ended the call
        # The timed-out request left nothing broken behind: the next call on the client works.
        assert (
            text_of(await bounded(client.send_message(AGENT, text("echo next"), timeout=3)))
            == "NEXT"
        )


# -- failover -------------------------------------------------------------------------------------


class DeadFirst(random.Random):
    """Replica choice that always draws the dead replica first (so the retry must happen)."""

    def sample(self, population: Sequence[T], k: int, **kwargs: Any) -> list[T]:  # type: ignore[override]
        return sorted(population, key=lambda r: r.replica_id != "dead")[:k]  # type: ignore[attr-defined]


def dead_replica() -> Replica:
    """A replica whose ports nothing listens on: every connection is refused."""
    return Replica(
        AGENT,
        "dead",
        {
            GRPC: f"grpc://127.0.0.1:{free_port()}",
            JSONRPC: f"http://127.0.0.1:{free_port()}/",
            REST: f"http://127.0.0.1:{free_port()}",
        },
    )


@BINDINGS
async def test_connection_refused_is_retried_on_another_replica(
    mesh: AgentServer, binding: str
) -> None:
    live = replicas(mesh.http_port, mesh.grpc_port).replicas(AGENT)[0]
    source = StaticReplicas([dead_replica(), live])
    async with MeshClient(source, bindings=[binding], rng=DeadFirst(), backoff_s=0.01) as client:
        assert client.pick(AGENT).replica_id == "dead"
        replies = [
            await bounded(client.send_message(AGENT, text(f"echo m{i}"), timeout=3))
            for i in range(5)
        ]
        assert [text_of(r) for r in replies] == [f"M{i}" for i in range(5)]
    # With no other replica to go to, the refusal is a NoReplicaError naming the agent.
    async with MeshClient(
        StaticReplicas([dead_replica()]), bindings=[binding], backoff_s=0.01
    ) as client:
        with pytest.raises(NoReplicaError, match=AGENT):
            await bounded(client.send_message(AGENT, text("echo x"), timeout=3))


# -- errors, as a2a-sdk's transports raise them -------------------------------------------------


@BINDINGS
async def test_a_missing_or_wrong_token_is_refused(guarded: AgentServer, binding: str) -> None:
    async with httpx.AsyncClient() as http:
        sdk = sdk_transport(guarded, binding, http)
        try:
            for token in (None, "wrong"):
                async with client_for(
                    guarded, binding, settings=Settings(api_token=token)
                ) as client:
                    ours = await raised(client.send_message(AGENT, text("echo x"), timeout=3))
                theirs = await raised(
                    sdk.send_message(
                        text("echo x"),
                        context=ClientCallContext(
                            timeout=3, service_parameters=sdk_params(binding, token)
                        ),
                    )
                )
                same_error(ours, theirs)
                assert ("401" if binding == JSONRPC else "UNAUTHENTICATED") in str(ours)
            async with client_for(guarded, binding, settings=Settings(api_token=TOKEN)) as client:
                assert (
                    text_of(await bounded(client.send_message(AGENT, text("echo ok"), timeout=3)))
                    == "OK"
                )
        finally:
            await sdk.close()


@BINDINGS
async def test_invalid_params_is_the_sdk_error_type(mesh: AgentServer, binding: str) -> None:
    bad = text("echo x")
    bad.message.ClearField("message_id")  # a required field
    async with httpx.AsyncClient() as http, client_for(mesh, binding) as client:
        sdk = sdk_transport(mesh, binding, http)
        try:
            ours = await raised(client.send_message(AGENT, bad, timeout=3))
            theirs = await raised(
                sdk.send_message(
                    bad,
                    context=ClientCallContext(
                        timeout=3, service_parameters=sdk_params(binding, None)
                    ),
                )
            )
        finally:
            await sdk.close()
    assert isinstance(ours, InvalidParamsError)
    same_error(ours, theirs)
    assert ours.data == {
        "errors": [{"field": "message.message_id", "message": "Field is required."}]
    }


# -- the JSON-RPC connection pool -----------------------------------------------------------------


async def test_keep_alive_connections_are_reused_and_survive_the_server_closing_them(
    mesh: AgentServer,
) -> None:
    """The proxy stands in for the server's side of the connection: it closes idle keep-alive
    connections on demand, as uvicorn does after ``timeout_keep_alive`` (5 s, not configurable
    in the mesh; waiting for it would make the test slow)."""
    proxy = await Proxy(mesh.http_port).start()
    try:
        source = StaticReplicas([Replica(AGENT, "via-proxy", {JSONRPC: proxy.url + "/"})])
        async with MeshClient(source, bindings=[JSONRPC]) as client:
            for i in range(5):
                assert text_of(await bounded(client.send_message(AGENT, text(f"echo {i}")))) == str(
                    i
                )
            assert proxy.accepted == 1  # one connection, kept alive and reused

            proxy.close_all()  # the server closes the idle connection...
            await asyncio.sleep(0.05)  # ...and the client has long seen the FIN
            assert text_of(await bounded(client.send_message(AGENT, text("echo later")))) == "LATER"
            assert proxy.accepted == 2

            # The FIN has reached the client's socket but the event loop has not run the
            # connection's callbacks yet: the pool must still not reuse the closed connection.
            for i in range(10):
                proxy.close_all()
                await asyncio.sleep(0)
                assert (
                    text_of(await bounded(client.send_message(AGENT, text(f"echo again{i}"))))
                    == f"AGAIN{i}"
                )
            assert proxy.accepted == 12

            # Concurrent calls take the idle connection and open the rest; the pool keeps all
            # of them, and the next burst reuses them without connecting again.
            assert proxy.open_connections == 1
            replies = await bounded(
                asyncio.gather(
                    *(client.send_message(AGENT, text(f"delay 0.2 c{i}")) for i in range(16))
                )
            )
            assert sorted(text_of(r) for r in replies) == sorted(f"C{i}" for i in range(16))
            assert proxy.accepted == 12 + 15
            assert proxy.open_connections == 16
            replies = await bounded(
                asyncio.gather(
                    *(client.send_message(AGENT, text(f"delay 0.2 d{i}")) for i in range(16))
                )
            )
            assert sorted(text_of(r) for r in replies) == sorted(f"D{i}" for i in range(16))
            assert proxy.accepted == 12 + 15
    finally:
        await proxy.stop()


# -- size and concurrency -------------------------------------------------------------------------


@BINDINGS
async def test_a_one_megabyte_artifact_and_request(mesh: AgentServer, binding: str) -> None:
    size = 1024 * 1024
    async with client_for(mesh, binding) as client:
        reply = await bounded(client.send_message(AGENT, text(f"big {size}")))
        assert reply.task.status.state == pb.TaskState.TASK_STATE_COMPLETED
        assert text_of(reply) == "x" * size
        payload = "ab" * (size // 2)
        reply = await bounded(client.send_message(AGENT, text(f"echo {payload}")))
        assert text_of(reply) == payload.upper()
        assert reply.task.history[0].parts[0].text == f"echo {payload}"


@BINDINGS
async def test_64_requests_in_flight_each_get_their_own_reply(
    mesh: AgentServer, binding: str
) -> None:
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, mesh.admission.in_flight)
            await asyncio.sleep(0.005)

    async with client_for(mesh, binding) as client:
        watcher = asyncio.create_task(watch())
        try:
            # Each request waits 2 s: on a loaded machine admitting all 64 can take longer
            # than 0.5 s (a clean-clone CI run saw a peak of 58 with 0.5 s).
            replies = await bounded(
                asyncio.gather(
                    *(client.send_message(AGENT, text(f"delay 2 r{i}")) for i in range(64))
                ),
                10,
            )
        finally:
            watcher.cancel()
    assert [text_of(r) for r in replies] == [f"R{i}" for i in range(64)]
    assert len({r.task.id for r in replies}) == 64
    assert peak == 64  # all of them really were in flight at once
