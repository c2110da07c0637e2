"""TLS material of one process: HTTPS for the HTTP side, TLS for gRPC, mutual when a CA is set.

Built once from :class:`~mesh.config.Settings` (``SLMESH_TLS_CERT_FILE``, ``SLMESH_TLS_KEY_FILE``,
``SLMESH_TLS_CA_FILE``). The same certificate serves and, as the client certificate, calls: in
a mesh every service is both. With a CA, servers require a client certificate it signed and
clients verify servers against it; without one, servers do not ask and clients use the
system's trust store.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    from mesh.config import Settings


@dataclass(frozen=True)
class TlsFiles:
    """Paths of this process's certificate chain, private key and (optional) trusted CA."""

    cert: Path
    key: Path
    ca: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> TlsFiles | None:
        """The configured files, or None for plaintext; half a configuration is an error."""
        cert, key, ca = settings.tls_cert_file, settings.tls_key_file, settings.tls_ca_file
        if cert is None and key is None:
            if ca is not None:
                raise ValueError(
                    "SLMESH_TLS_CA_FILE needs SLMESH_TLS_CERT_FILE and SLMESH_TLS_KEY_FILE too"
                )
            return None
        if cert is None or key is None:
            raise ValueError("TLS needs both SLMESH_TLS_CERT_FILE and SLMESH_TLS_KEY_FILE")
        for path in (cert, key, *([ca] if ca else [])):
            if not path.is_file():
                raise ValueError(f"TLS file {path} does not exist")
        return cls(cert=cert, key=key, ca=ca)

    @property
    def mutual(self) -> bool:
        return self.ca is not None

    def grpc_server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.ca.read_bytes() if self.ca else None,
            require_client_auth=self.mutual,
        )

    def grpc_channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes() if self.ca else None,
            private_key=self.key.read_bytes(),
            certificate_chain=self.cert.read_bytes(),
        )

    def probe_channel(self, target: str, host: str) -> grpc.Channel:
        """A blocking channel for local health probes: TLS, the server's name checked as ``host``
        (the name its certificate carries) rather than the loopback address dialled."""
        return grpc.secure_channel(
            target,
            self.grpc_channel_credentials(),
            options=[("grpc.ssl_target_name_override", host)],
        )

    def client_context(self) -> ssl.SSLContext:
        """For outbound HTTPS: verify the server (against the CA when set), present our
        certificate."""
        context = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
        context.load_cert_chain(str(self.cert), str(self.key))
        return context

    def uvicorn_options(self) -> dict[str, Any]:
        """``uvicorn.Config`` keyword arguments serving HTTPS (requiring client certificates with a
        CA)."""
        options: dict[str, Any] = {"ssl_certfile": str(self.cert), "ssl_keyfile": str(self.key)}
        if self.ca is not None:
            options |= {"ssl_ca_certs": str(self.ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        return options
