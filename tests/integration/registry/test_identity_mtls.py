"""Registration identity by client certificate: a registry process with mutual TLS and
``SLMESH_REGISTRATION_IDENTITY=agent`` takes writes under exactly the names the caller's
certificate carries as URI SANs ``slmesh://agent/NAME``: not under another name, not from a
certificate without one, and not from one whose *DNS* SAN is spelled like the URI. Also
pins what gRPC reports for a URI SAN (the auth-context property the registry reads)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.registry import Endpoint, RegistryClient, Replica
from mesh.registry.identity import SAN_PREFIX, URI_SAN_PROPERTY
from mesh.tls import TlsFiles
from tests.support.pki import issue, wait_serving
from tests.support.procs import ROOT, ServiceProcess

pytestmark = pytest.mark.integration

TOKEN = "reg-t0ken-for-tests"


def _tls(pki: Path, name: str) -> TlsFiles:
    return TlsFiles(cert=pki / f"{name}.pem", key=pki / f"{name}.key", ca=pki / "ca.pem")


def _replica(agent: str, replica_id: str) -> Replica:
    return Replica(
        agent=agent,
        replica_id=replica_id,
        endpoints=[Endpoint(transport="JSONRPC", url="https://127.0.0.1:9/")],
        card_json=f'{{"name": "{agent}"}}',
    )


async def _code(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_grpc_reports_uri_sans_apart_from_dns_ones(tmp_path: Path) -> None:
    """The property the registry reads holds the certificate's URI SANs and nothing else."""
    ca = issue(tmp_path, "ca", None)
    issue(tmp_path, "server", ca)
    issue(tmp_path, "client", ca, uris=[f"{SAN_PREFIX}echo"], dns=[f"{SAN_PREFIX}fake"])
    seen: dict[str, list[bytes]] = {}

    class Health(health_pb2_grpc.HealthServicer):
        async def Check(
            self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
        ) -> health_pb2.HealthCheckResponse:
            seen.update(context.auth_context())
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(Health(), server)
    port = server.add_secure_port("127.0.0.1:0", _tls(tmp_path, "server").grpc_server_credentials())
    await server.start()
    try:
        credentials = _tls(tmp_path, "client").grpc_channel_credentials()
        async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as channel:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    finally:
        await server.stop(None)
    assert seen[URI_SAN_PROPERTY] == [f"{SAN_PREFIX}echo".encode()]
    # The mixed property would have let the DNS name through as an identity.
    assert f"{SAN_PREFIX}fake".encode() in seen["x509_subject_alternative_name"]


async def test_a_client_certificate_binds_registry_writes_to_its_uri_san_names(
    spawn: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = issue(pki, "ca", None)
    issue(pki, "registry", ca)
    issue(pki, "echo", ca, uris=[f"{SAN_PREFIX}echo"])
    issue(pki, "anonymous", ca)
    issue(pki, "dns-trick", ca, dns=[f"{SAN_PREFIX}echo"])
    server = _tls(pki, "registry")
    registry = spawn(
        ROOT / "services" / "registry",
        env={
            "SLMESH_TLS_CERT_FILE": str(server.cert),
            "SLMESH_TLS_KEY_FILE": str(server.key),
            "SLMESH_TLS_CA_FILE": str(server.ca),
            "SLMESH_REGISTRATION_TOKEN": TOKEN,
            "SLMESH_REGISTRATION_IDENTITY": "agent",
            "SLMESH_REGISTRY_TTL_S": "30",
        },
        wait=False,
    )
    wait_serving(registry, server.grpc_channel_credentials())
    target = registry.grpc_target

    async with RegistryClient(target, token=TOKEN, tls=_tls(pki, "echo")) as echo:
        await echo.register(_replica("echo", "echo-1"))
        assert await echo.heartbeat("echo-1")
        denied = await _code(echo.register(_replica("other", "other-1")))
        assert denied == grpc.StatusCode.PERMISSION_DENIED

        for name in ("anonymous", "dns-trick"):
            async with RegistryClient(target, token=TOKEN, tls=_tls(pki, name)) as stranger:
                outcome = {
                    "replace": await _code(stranger.register(_replica("echo", "echo-1"))),
                    "new": await _code(stranger.register(_replica("echo", "echo-2"))),
                    "drain": await _code(stranger.heartbeat("echo-1", draining=True)),
                    "remove": await _code(stranger.deregister("echo-1")),
                }
            assert outcome == dict.fromkeys(outcome, grpc.StatusCode.PERMISSION_DENIED), (
                name,
                outcome,
            )

        [entry] = await echo.list(agent="echo")
        assert (entry.replica_id, entry.draining) == ("echo-1", False)
        assert await echo.deregister("echo-1")
    assert "no credential bound to an agent name" in registry.output()
