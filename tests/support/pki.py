"""Throwaway certificates for TLS tests: a CA, and leaves for localhost/127.0.0.1 signed by it
(server and client use), written as PEM files, optionally with URI SANs (identity)."""

from __future__ import annotations

import datetime
import ipaddress
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.procs import ServiceProcess

Issued = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def issue(
    folder: Path,
    name: str,
    issuer: Issued | None,
    uris: Sequence[str] = (),
    dns: Sequence[str] = (),
) -> Issued:
    """A CA (no issuer) or a leaf for localhost/127.0.0.1 with ``uris`` as URI SANs and
    ``dns`` as further DNS SANs, written to ``folder/NAME.pem`` and ``folder/NAME.key``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if issuer is None:
        builder = builder.issuer_name(_name(name)).add_extension(
            x509.BasicConstraints(ca=True, path_length=0), True
        )
        signer = key
    else:
        names: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            *(x509.DNSName(d) for d in dns),
            *(x509.UniformResourceIdentifier(u) for u in uris),
        ]
        builder = (
            builder.issuer_name(issuer[0].subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.SubjectAlternativeName(names), False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [
                        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                        x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
                    ]
                ),
                False,
            )
        )
        signer = issuer[1]
    cert = builder.sign(signer, hashes.SHA256())
    (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


def wait_serving(
    proc: ServiceProcess, credentials: grpc.ChannelCredentials, timeout: float = 30.0
) -> None:
    """Waits until a TLS service's gRPC health answers SERVING over ``credentials``."""
    deadline = time.monotonic() + timeout
    with grpc.secure_channel(proc.grpc_target, credentials) as channel:
        while True:
            assert proc.popen.poll() is None, proc.output()
            try:
                if (
                    health_pb2_grpc.HealthStub(channel)
                    .Check(health_pb2.HealthCheckRequest(), timeout=1)
                    .status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, proc.output()
            time.sleep(0.05)
