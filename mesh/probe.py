"""``python -m mesh.probe``: the container health check, one gRPC health ``Check``.

Every service (agents and the registry alike) answers the standard gRPC health service on
``SLMESH_GRPC_PORT``; an image's ``HEALTHCHECK`` runs this module, which exits 0 when the
server reports SERVING and 1 otherwise (draining, not started, unreachable). Kubernetes
uses its native ``grpc`` probe against the same service instead.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.config import Settings
from mesh.tls import TlsFiles


def check(
    target: str, timeout_s: float = 2.0, tls: TlsFiles | None = None, host: str = "localhost"
) -> bool:
    """Whether the gRPC server at ``target`` (host:port) reports SERVING (over TLS, as ``host``,
    with ``tls``)."""
    with tls.probe_channel(target, host) if tls else grpc.insecure_channel(target) as channel:
        try:
            # types-grpcio-health-checking's HealthStub declares none of its methods.
            reply = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]  # see above
                health_pb2.HealthCheckRequest(), timeout=timeout_s
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m mesh.probe",
        description="Exit 0 when the service on 127.0.0.1:$SLMESH_GRPC_PORT reports SERVING "
        "on the gRPC health service, 1 otherwise (the container health check).",
    ).parse_args(argv)
    settings = Settings()
    if settings.grpc_port == 0:
        print(
            "SLMESH_GRPC_PORT is 0: a probe needs the fixed port the service listens on",
            file=sys.stderr,
        )
        return 1
    target = f"127.0.0.1:{settings.grpc_port}"
    return (
        0
        if check(target, tls=TlsFiles.from_settings(settings), host=settings.advertise_host)
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
