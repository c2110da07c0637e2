"""The registry only takes registrations carrying the registration token (agent spoofing test),
and, with per-agent identity, only under the agent names the caller's credential is bound to.

Everything runs as real processes: the registry, a legitimate echo agent, an agent started
with a wrong token, and a hostile process that tries to replace, drain or remove the
legitimate replica (with no token, a wrong one, the API token, or a valid credential for
another agent).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from mesh.a2a.client import MeshClient, text_of
from mesh.a2a.discovery import snapshot
from mesh.a2a.signing import UntrustedCardError
from mesh.config import Settings
from mesh.registry import Endpoint, RegistryClient, Replica
from tests.conftest import ECHO_SERVICE
from tests.support.keys import new_key, write_bundle
from tests.support.procs import ROOT, ServiceProcess, start_registry

REGISTRATION = "reg-t0ken-for-tests"
API = "api-t0ken-for-tests"
FAST = {"SLMESH_HEARTBEAT_INTERVAL_S": "0.3", "SLMESH_REGISTRY_TTL_S": "30"}


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ServiceProcess]:
    proc = start_registry(
        tmp_path, env={**FAST, "SLMESH_REGISTRATION_TOKEN": REGISTRATION, "SLMESH_API_TOKEN": API}
    )
    try:
        yield proc
    finally:
        proc.kill()


def _agent(
    spawn: Callable[..., ServiceProcess],
    registry: ServiceProcess,
    replica: str,
    registration_token: str,
) -> ServiceProcess:
    return spawn(
        ECHO_SERVICE,
        env={
            **FAST,
            "SLMESH_REGISTRY": registry.grpc_target,
            "SLMESH_REPLICA_ID": replica,
            "SLMESH_REGISTRATION_TOKEN": registration_token,
            "SLMESH_API_TOKEN": API,
            "SLMESH_TASK_STORE": "memory",
        },
    )


async def _listed(address: str, timeout: float = 20.0) -> dict[str, list[str]]:
    deadline = time.monotonic() + timeout
    async with RegistryClient(address, token=API) as client:
        while True:
            entries = await client.list(agent="echo")
            if entries or time.monotonic() > deadline:
                return {e.replica_id: sorted(p.url for p in e.endpoints) for e in entries}
            await asyncio.sleep(0.05)


def _spoof(
    address: str, victim: str, token: str | None, identity: tuple[Path, str] | None = None
) -> dict[str, str]:
    args = [
        sys.executable,
        "-m",
        "tests.support.spoof",
        address,
        victim,
        *([token] if token else []),
        *([str(identity[0]), identity[1]] if identity else []),
    ]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


async def test_a_stranger_cannot_register_replace_drain_or_remove_an_agent(
    spawn: Callable[..., ServiceProcess], registry: ServiceProcess
) -> None:
    real = _agent(spawn, registry, "echo-real", REGISTRATION)
    before = await _listed(registry.grpc_target)
    assert list(before) == ["echo-real"]

    impostor = _agent(spawn, registry, "echo-impostor", "guessed-token")
    deadline = time.monotonic() + 20
    while "UNAUTHENTICATED" not in impostor.output():
        assert time.monotonic() < deadline, impostor.output()
        await asyncio.sleep(0.05)

    for token in (None, "wrong-token"):
        outcome = await asyncio.to_thread(_spoof, registry.grpc_target, "echo-real", token)
        assert outcome == dict.fromkeys(outcome, "UNAUTHENTICATED"), outcome
        assert len(outcome) == 6
    # An API token lets a caller read the registry, not write it.
    outcome = await asyncio.to_thread(_spoof, registry.grpc_target, "echo-real", API)
    assert outcome.pop("list") == "OK"
    assert outcome == dict.fromkeys(outcome, "UNAUTHENTICATED"), outcome

    async with RegistryClient(registry.grpc_target, token=API) as client:
        entries = await client.list(agent="echo")
    assert [(e.replica_id, e.draining) for e in entries] == [("echo-real", False)]
    assert {p.url for p in entries[0].endpoints} == set(before["echo-real"])
    assert "registered echo-impostor" not in impostor.output()  # never acknowledged
    source = await snapshot(registry.grpc_target, "echo", API)
    async with MeshClient(source, Settings(api_token=API)) as client:
        assert text_of(await client.send_text("echo", "still me")) == "STILL ME"
    assert real.popen.poll() is None


async def test_the_token_holder_can_deregister(
    spawn: Callable[..., ServiceProcess], registry: ServiceProcess
) -> None:
    _agent(spawn, registry, "echo-own", REGISTRATION)
    assert list(await _listed(registry.grpc_target)) == ["echo-own"]
    async with RegistryClient(registry.grpc_target, token=REGISTRATION) as client:
        assert await client.deregister("echo-own")


async def test_reads_need_a_mesh_token_when_the_mesh_has_one(registry: ServiceProcess) -> None:
    async with RegistryClient(registry.grpc_target) as anonymous:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await anonymous.list()
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        watch = anonymous.watch()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await anext(watch)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for token in (API, REGISTRATION):
        async with RegistryClient(registry.grpc_target, token=token) as member:
            assert await member.list() == []


async def test_a_credential_for_one_agent_cannot_replace_drain_or_remove_another_agents_replica(
    spawn: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    echo_file, echo_key = new_key(tmp_path, "echo")
    other_file, other_key = new_key(tmp_path, "other")
    bundle = write_bundle(tmp_path / "bundle.json", (echo_key, ["echo"]), (other_key, ["other"]))
    trust = {"SLMESH_TRUST_BUNDLE": str(bundle), "SLMESH_REQUIRE_SIGNED_CARDS": "true"}
    registry = start_registry(
        tmp_path,
        env={
            **FAST,
            **trust,
            "SLMESH_REGISTRATION_TOKEN": REGISTRATION,
            "SLMESH_API_TOKEN": API,
            "SLMESH_REGISTRATION_IDENTITY": "agent",
        },
    )
    try:
        real = spawn(
            ECHO_SERVICE,
            env={
                **FAST,
                **trust,
                "SLMESH_REGISTRY": registry.grpc_target,
                "SLMESH_REPLICA_ID": "echo-real",
                "SLMESH_REGISTRATION_TOKEN": REGISTRATION,
                "SLMESH_API_TOKEN": API,
                "SLMESH_TASK_STORE": "memory",
                "SLMESH_SIGNING_KEYS": str(echo_file),
            },
        )
        before = await _listed(registry.grpc_target)
        assert list(before) == ["echo-real"], real.output()

        # A valid credential for agent "other" (and the registration token) gets nowhere on echo.
        outcome = await asyncio.to_thread(
            _spoof, registry.grpc_target, "echo-real", REGISTRATION, (other_file, "other")
        )
        assert outcome.pop("list") == "OK"
        assert outcome == dict.fromkeys(outcome, "PERMISSION_DENIED"), outcome
        assert len(outcome) == 5
        # The registration token alone is no longer enough to write.
        outcome = await asyncio.to_thread(_spoof, registry.grpc_target, "echo-real", REGISTRATION)
        assert outcome.pop("list") == "OK"
        assert outcome == dict.fromkeys(outcome, "PERMISSION_DENIED"), outcome
        assert "no credential bound to an agent name" in registry.output()

        # The echo key's holder may write echo's replicas, but not with an unsigned card.
        replica = Replica(
            agent="echo",
            replica_id="echo-unsigned",
            endpoints=[Endpoint(transport="JSONRPC", url="http://127.0.0.1:9/")],
            card_json='{"name": "echo"}',
        )
        async with RegistryClient(
            registry.grpc_target, token=REGISTRATION, identity=(echo_key, "echo")
        ) as owner:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await owner.register(replica)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "agent card of 'echo' refused: the card is not signed" in info.value.details()

            async with RegistryClient(registry.grpc_target, token=API) as reader:
                [entry] = await reader.list(agent="echo")
            assert (entry.replica_id, entry.draining) == ("echo-real", False)
            assert {p.url for p in entry.endpoints} == set(before["echo-real"])

            # The mesh client verifies the card it is given before calling.
            source = await snapshot(registry.grpc_target, "echo", API)
            pinned = Settings(api_token=API, trust_bundle=bundle, require_signed_cards=True)
            async with MeshClient(source, pinned) as client:
                assert text_of(await client.send_text("echo", "signed")) == "SIGNED"
            wrong = write_bundle(tmp_path / "wrong.json", (other_key, ["echo"]))
            async with MeshClient(source, Settings(api_token=API, trust_bundle=wrong)) as client:
                with pytest.raises(UntrustedCardError, match="not in the trust bundle"):
                    await client.send_text("echo", "unsigned?")
            assert await owner.deregister("echo-real")
    finally:
        registry.kill()
