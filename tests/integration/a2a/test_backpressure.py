"""An agent at its concurrency limit sheds new work with a retryable error, and stays bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from a2a.types import a2a_pb2 as pb

from mesh.a2a.client import MeshClient, Replica, StaticReplicas, text_of
from tests.conftest import ECHO_SERVICE
from tests.support.procs import ServiceProcess

LIMIT = 4
V1 = {"A2A-Version": "1.0", "content-type": "application/json"}


def _limited(spawn: Callable[..., ServiceProcess], limit: int = LIMIT) -> ServiceProcess:
    return spawn(
        ECHO_SERVICE, env={"SLMESH_MAX_IN_FLIGHT": str(limit), "SLMESH_TASK_STORE": "memory"}
    )


def _send(i: int, text: str) -> dict:  # type: ignore[type-arg]
    return {
        "jsonrpc": "2.0",
        "id": i,
        "method": "SendMessage",
        "params": {
            "message": {"messageId": f"m{i}", "role": "ROLE_USER", "parts": [{"text": text}]}
        },
    }


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _busy(proc: ServiceProcess, count: int) -> None:
    while True:
        ready = httpx.get(proc.http_url + "/readyz").json()
        if ready["in_flight"] >= count:
            return
        await asyncio.sleep(0.02)


async def test_a_burst_is_shed_with_503_and_every_accepted_request_completes(
    spawn: Callable[..., ServiceProcess],
) -> None:
    proc = _limited(spawn)
    burst = 300
    pad = "x" * 16_000  # 16 KB per request: a queue of bodies would show in the RSS
    before = _rss_kib(proc.popen.pid)
    limits = httpx.Limits(max_connections=burst, max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=proc.http_url, headers=V1, limits=limits, timeout=60
    ) as http:
        replies = await asyncio.gather(
            *(http.post("/", json=_send(i, f"sleep:0.5 n{i} {pad}")) for i in range(burst))
        )
    after = _rss_kib(proc.popen.pid)
    ok = [(i, r) for i, r in enumerate(replies) if r.status_code == 200]
    shed = [r for r in replies if r.status_code == 503]
    print(
        f"\nBACKPRESSURE burst={burst} limit={LIMIT} completed={len(ok)} shed={len(shed)} "
        f"rss_kib before={before} after={after}"
    )
    assert len(ok) + len(shed) == burst
    assert LIMIT <= len(ok) < burst
    assert shed
    for i, reply in ok:
        assert (
            reply.json()["result"]["task"]["artifacts"][0]["parts"][0]["text"]
            == f"SLEEP:0.5 N{i} {pad.upper()}"
        )
    for reply in shed:
        assert reply.headers["retry-after"] == "1"
        assert "concurrency limit" in reply.json()["error"]["message"]
    # Shed requests are refused before their body is read: memory does not grow with the burst.
    assert after - before < 64 * 1024, (before, after)
    assert httpx.get(proc.http_url + "/readyz").json()["in_flight"] == 0


async def test_grpc_sheds_with_unavailable_and_a_retry_hint(
    spawn: Callable[..., ServiceProcess],
) -> None:
    proc = _limited(spawn, limit=1)
    async with httpx.AsyncClient(base_url=proc.http_url, headers=V1, timeout=30) as http:
        hold = asyncio.create_task(http.post("/", json=_send(1, "sleep:2 hold")))
        await _busy(proc, 1)
        async with grpc.aio.insecure_channel(proc.grpc_target) as channel:
            send = channel.unary_unary(
                "/lf.a2a.v1.A2AService/SendMessage",
                request_serializer=pb.SendMessageRequest.SerializeToString,
                response_deserializer=pb.SendMessageResponse.FromString,
            )
            request = pb.SendMessageRequest(
                message=pb.Message(
                    message_id="g1", role=pb.Role.ROLE_USER, parts=[pb.Part(text="refused")]
                )
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await send(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "concurrency limit" in info.value.details()
        assert ("retry-after", "1") in tuple(info.value.trailing_metadata() or ())
        assert (await hold).status_code == 200


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON", "GRPC"])
async def test_the_client_retries_a_shedding_replica_elsewhere(
    spawn: Callable[..., ServiceProcess], binding: str
) -> None:
    full, free = _limited(spawn, limit=1), _limited(spawn, limit=1)
    source = StaticReplicas()
    for proc in (full, free):
        source.add(
            Replica(
                agent="echo",
                replica_id=proc.http_url,
                urls={
                    "JSONRPC": proc.http_url + "/",
                    "HTTP+JSON": proc.http_url,
                    "GRPC": f"grpc://{proc.grpc_target}",
                },
            )
        )
    async with httpx.AsyncClient(base_url=full.http_url, headers=V1, timeout=30) as http:
        hold = asyncio.create_task(http.post("/", json=_send(1, "sleep:3 hold")))
        await _busy(full, 1)
        async with MeshClient(source, bindings=[binding]) as client:
            for i in range(8):
                assert text_of(await client.send_text("echo", f"m{i}")) == f"M{i}"
        assert (await hold).status_code == 200
    async with MeshClient(StaticReplicas.from_urls("echo", free.http_url)) as client:
        assert len((await client.list_tasks("echo")).tasks) == 8
