"""Tokens never reach the logs: a token-protected mesh at DEBUG level, right and wrong tokens
on every path (A2A over HTTP and gRPC, registry writes and reads), then every log is searched."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from a2a.types import a2a_pb2 as pb

from mesh.a2a.client import MeshClient, text_of
from mesh.a2a.discovery import snapshot
from mesh.config import Settings
from mesh.registry import RegistryClient
from tests.conftest import ECHO_SERVICE
from tests.support.procs import ROOT, ServiceProcess, start_registry

API = "api-secret-4f1d9c"
REGISTRATION = "registration-secret-7be20a"
GUESSES = ["guessed-api-token-91aa", "guessed-registration-token-c3d4"]
DEBUG = {
    "SLMESH_LOG_LEVEL": "DEBUG",
    "SLMESH_HEARTBEAT_INTERVAL_S": "0.3",
    "SLMESH_API_TOKEN": API,
    "SLMESH_REGISTRATION_TOKEN": REGISTRATION,
    "SLMESH_TASK_STORE": "memory",
}


async def test_no_token_appears_in_any_log(
    tmp_path: Path, spawn: Callable[..., ServiceProcess]
) -> None:
    registry = start_registry(tmp_path, env=DEBUG)
    try:
        agent = spawn(ECHO_SERVICE, env={**DEBUG, "SLMESH_REGISTRY": registry.grpc_target})
        impostor = spawn(
            ECHO_SERVICE,
            env={
                **DEBUG,
                "SLMESH_REGISTRY": registry.grpc_target,
                "SLMESH_REGISTRATION_TOKEN": GUESSES[1],
            },
        )
        async with RegistryClient(registry.grpc_target, token=API) as reader:
            deadline = time.monotonic() + 20
            while not await reader.list(agent="echo"):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        deadline = time.monotonic() + 20
        while "UNAUTHENTICATED" not in impostor.output():
            assert time.monotonic() < deadline, impostor.output()
            await asyncio.sleep(0.05)

        async with MeshClient(
            await snapshot(registry.grpc_target, "echo", API), Settings(api_token=API)
        ) as client:
            assert text_of(await client.send_text("echo", "hello")) == "HELLO"
        for token in (GUESSES[0], API + "x"):
            reply = httpx.post(
                agent.http_url + "/",
                headers={"authorization": f"Bearer {token}", "A2A-Version": "1.0"},
                json={"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {}},
            )
            assert reply.status_code == 401
            async with grpc.aio.insecure_channel(agent.grpc_target) as channel:
                call = channel.unary_unary(
                    "/lf.a2a.v1.A2AService/ListTasks",
                    request_serializer=pb.ListTasksRequest.SerializeToString,
                    response_deserializer=pb.ListTasksResponse.FromString,
                )
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call(
                        pb.ListTasksRequest(),
                        metadata=(("authorization", f"Bearer {token}"),),
                        timeout=5,
                    )
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        spoof = subprocess.run(
            [sys.executable, "-m", "tests.support.spoof", registry.grpc_target, "x", GUESSES[1]],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "UNAUTHENTICATED" in spoof.stdout
        for proc in (agent, impostor):
            proc.terminate()
    finally:
        registry.terminate()
    logs = {log.name: log.read_text(errors="replace") for log in tmp_path.glob("*.log")}
    assert len(logs) == 3
    assert all("DEBUG" in text for text in logs.values())
    for name, text in logs.items():
        for secret in (API, REGISTRATION, *GUESSES):
            assert secret not in text, f"{secret!r} logged in {name}"
    assert "refused a registry write" in logs[next(n for n in logs if n.startswith("registry"))]
