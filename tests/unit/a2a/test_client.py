"""Replica choice and retry classification of the mesh client (no network)."""

from __future__ import annotations

import random

import grpc
import httpx
import pytest

from mesh.a2a.client import (
    GRPC,
    MeshClient,
    Replica,
    StaticReplicas,
    grpc_target,
    is_retryable,
    restore_ints,
)
from mesh.errors import NoReplicaError


def _replica(name: str, draining: bool = False) -> Replica:
    return Replica("agent", name, {GRPC: f"grpc://{name}:1"}, draining=draining)


async def test_pick_prefers_the_less_loaded_of_two() -> None:
    client = MeshClient(StaticReplicas([_replica("a"), _replica("b")]), rng=random.Random(0))
    for _ in range(5):
        client.outstanding.add("a")
    assert (client.outstanding.get("a"), client.outstanding.get("b")) == (5, 0)
    assert {client.pick("agent").replica_id for _ in range(50)} == {"b"}
    await client.close()


async def test_pick_spreads_evenly_when_idle_and_skips_draining() -> None:
    replicas = [_replica("a"), _replica("b"), _replica("c"), _replica("d", draining=True)]
    client = MeshClient(StaticReplicas(replicas), rng=random.Random(1))
    picks = [client.pick("agent").replica_id for _ in range(600)]
    assert "d" not in picks
    assert all(150 <= picks.count(r) <= 250 for r in "abc"), {r: picks.count(r) for r in "abc"}
    assert client.pick("agent", exclude={"a", "b"}).replica_id == "c"
    assert client.pick("agent", prefer="b").replica_id == "b"
    with pytest.raises(NoReplicaError, match="slmesh agents"):
        client.pick("missing")
    await client.close()


def test_only_failures_that_ran_nothing_are_retryable() -> None:
    request = httpx.Request("POST", "http://x/")

    def status(code: int) -> httpx.HTTPStatusError:
        return httpx.HTTPStatusError(
            "x", request=request, response=httpx.Response(code, request=request)
        )

    def wrapped(cause: BaseException) -> Exception:
        try:
            raise RuntimeError("transport error") from cause
        except RuntimeError as exc:
            return exc

    assert is_retryable(wrapped(httpx.ConnectError("refused")))
    assert is_retryable(wrapped(status(503)))
    assert not is_retryable(wrapped(status(500)))
    assert not is_retryable(wrapped(httpx.ReadTimeout("slow")))
    unavailable = grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, None, None)
    internal = grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, None, None)
    assert is_retryable(wrapped(unavailable))
    assert not is_retryable(wrapped(internal))


def test_plain_turns_whole_doubles_back_into_ints() -> None:
    assert restore_ints({"count": 2.0, "amount": "19.99", "xs": [1.0, 1.5]}) == {
        "count": 2,
        "amount": "19.99",
        "xs": [1, 1.5],
    }


@pytest.mark.parametrize(
    ("url", "target", "tls"),
    [
        ("localhost:7000", "localhost:7000", False),
        ("grpc://agent:7000", "agent:7000", False),
        ("http://agent:7000/", "agent:7000", False),
        ("grpcs://agent.example.com:443", "agent.example.com:443", True),
        ("https://grpc.example.com/a2a", "grpc.example.com", True),
        ("dns:///agent:7000", "dns:///agent:7000", False),
        ("ipv4:10.0.0.1:7000,10.0.0.2:7000", "ipv4:10.0.0.1:7000,10.0.0.2:7000", False),
    ],
)
def test_grpc_target_accepts_every_card_url_form(url: str, target: str, tls: bool) -> None:
    assert grpc_target(url) == (target, tls)
