"""The registry only takes registrations carrying the registration token (agent spoofing test).

Everything runs as real processes: the registry, a legitimate echo agent, an agent started
with a wrong token, and a hostile process that tries to replace, drain or remove the
legitimate replica.
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
from mesh.config import Settings
from mesh.registry import RegistryClient
from tests.conftest import ECHO_SERVICE
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


def _spoof(address: str, victim: str, token: str | None) -> dict[str, str]:
    args = [
        sys.executable,
        "-m",
        "tests.support.spoof",
        address,
        victim,
        *([token] if token else []),
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
        assert len(outcome) == 5
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
