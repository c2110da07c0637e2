"""Mutual TLS: a registry and an agent as real processes with certificates from a throwaway CA;
the mesh client reaches the agent on every transport, strangers without a certificate from
that CA are refused at the handshake."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh import probe
from mesh.a2a.client import (
    DEFAULT_BINDINGS,
    GRPC,
    MeshClient,
    Replica,
    StaticReplicas,
    text_of,
)
from mesh.a2a.discovery import snapshot
from mesh.config import Settings
from mesh.launch import MeshState, stop_processes
from mesh.registry import RegistryClient
from mesh.tls import TlsFiles
from tests.conftest import ECHO_SERVICE
from tests.support.pki import issue, wait_serving
from tests.support.procs import ROOT, ServiceProcess


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    folder = tmp_path / "pki"
    folder.mkdir()
    ca = issue(folder, "ca", None)
    issue(folder, "mesh", ca)
    rogue = issue(folder, "rogue-ca", None)
    issue(folder, "rogue", rogue)
    return folder


def _tls_env(pki: Path, name: str = "mesh") -> dict[str, str]:
    return {
        "SLMESH_TLS_CERT_FILE": str(pki / f"{name}.pem"),
        "SLMESH_TLS_KEY_FILE": str(pki / f"{name}.key"),
        "SLMESH_TLS_CA_FILE": str(pki / "ca.pem"),
    }


def _settings(pki: Path, name: str = "mesh") -> Settings:
    return Settings(
        tls_cert_file=pki / f"{name}.pem",
        tls_key_file=pki / f"{name}.key",
        tls_ca_file=pki / "ca.pem",
    )


async def test_a_mutual_tls_mesh(
    tmp_path: Path, pki: Path, spawn: Callable[..., ServiceProcess]
) -> None:
    tls = TlsFiles.from_settings(_settings(pki))
    assert tls is not None
    registry = spawn(ROOT / "services" / "registry", env=_tls_env(pki), wait=False)
    wait_serving(registry, tls.grpc_channel_credentials())
    agent = spawn(
        ECHO_SERVICE,
        wait=False,
        env={
            **_tls_env(pki),
            "SLMESH_REGISTRY": registry.grpc_target,
            "SLMESH_TASK_STORE": "memory",
            "SLMESH_REPLICA_ID": "echo-tls",
        },
    )
    wait_serving(agent, tls.grpc_channel_credentials())
    https = f"https://127.0.0.1:{agent.http_port}"

    async with RegistryClient(registry.grpc_target, tls=tls) as reg:
        deadline = time.monotonic() + 20
        while not (entries := await reg.list(agent="echo")):
            assert time.monotonic() < deadline, agent.output()
            await asyncio.sleep(0.05)
    urls = {e.transport: e.url for e in entries[0].endpoints}
    assert urls["JSONRPC"].startswith("https://")
    assert urls["HTTP+JSON"].startswith("https://")

    source = await snapshot(registry.grpc_target, "echo", tls=tls)
    for binding in DEFAULT_BINDINGS:
        async with MeshClient(source, _settings(pki), bindings=[binding]) as client:
            assert (
                text_of(await client.send_text("echo", f"over {binding}"))
                == f"OVER {binding}".upper()
            )

    # A card may say grpcs:// as well: the mesh client dials it with its TLS settings.
    grpcs = f"grpcs://localhost:{agent.grpc_port}"
    card_form = StaticReplicas([Replica(agent="echo", replica_id="tls", urls={GRPC: grpcs})])
    async with MeshClient(card_form, _settings(pki), bindings=[GRPC]) as client:
        assert text_of(await client.send_text("echo", "over grpcs")) == "OVER GRPCS"

    # Strangers: no client certificate, or one from another CA, are refused at the handshake.
    no_cert = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    rogue = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    rogue.load_cert_chain(str(pki / "rogue.pem"), str(pki / "rogue.key"))
    for context in (no_cert, rogue):
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.get(https + "/readyz", verify=context, timeout=5).raise_for_status()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{agent.http_port}/readyz", timeout=5).raise_for_status()
    server_only = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes())
    rogue_grpc = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / "rogue.key").read_bytes(),
        certificate_chain=(pki / "rogue.pem").read_bytes(),
    )
    for target in (registry.grpc_target, agent.grpc_target):
        for credentials in (server_only, rogue_grpc):
            with (
                grpc.secure_channel(target, credentials) as channel,
                pytest.raises(grpc.RpcError) as info,
            ):
                health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError):
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert httpx.get(https + "/healthz", verify=tls.client_context(), timeout=5).status_code == 200
    # The container health check speaks TLS with the service's own certificate.
    for target in (registry.grpc_target, agent.grpc_target):
        assert probe.check(target, tls=tls, host="localhost")
        assert not probe.check(target)


def test_slmesh_up_agents_send_down_with_mutual_tls_and_tokens(tmp_path: Path, pki: Path) -> None:
    """The CLI's own path: `slmesh up` waits for TLS health, `agents` and `send` speak mTLS
    and carry the tokens, `down` stops everything."""
    services = tmp_path / "services"
    for name in ("registry", "tools"):
        shutil.copytree(ROOT / "services" / name, services / name)
    env = {
        **os.environ,
        **_tls_env(pki),
        "SLMESH_DATA_DIR": str(tmp_path / "mesh"),
        "SLMESH_UI": "false",
        "SLMESH_API_TOKEN": "cli-api-token",
        "SLMESH_REGISTRATION_TOKEN": "cli-registration-token",
    }
    env.pop("SLMESH_REGISTRY", None)

    def slmesh(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mesh", *args],
            cwd=ROOT,
            env=env,
            text=True,
            capture_output=True,
            timeout=120,
        )

    try:
        up = slmesh("up", "--detach", "--services", str(services))
        assert up.returncode == 0, up.stdout + up.stderr
        listed = slmesh("agents", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [e["agent"] for e in json.loads(listed.stdout)] == ["tools"]
        for binding in DEFAULT_BINDINGS:
            sent = slmesh(
                "send",
                "tools",
                "--binding",
                binding,
                "--data",
                '{"name": "get_order", "arguments": {"order_id": "ORD-621221"}}',
            )
            assert sent.returncode == 0, sent.stdout + sent.stderr
            assert "Fitness Tracker" in sent.stdout, sent.stdout + sent.stderr
        down = slmesh("down")
        assert down.returncode == 0, down.stderr
    finally:
        state = MeshState.load(tmp_path / "mesh" / "mesh.json")
        if state is not None:
            stop_processes(state.processes, timeout_s=5)
