"""Who may write which agent's registry entries (``SLMESH_REGISTRATION_IDENTITY=agent``).

A write's caller proves the agent names it speaks for in one of two ways:

- a registration proof (``slmesh-proof`` metadata, :func:`mesh.trust.make_proof`) signed by a
  trust-bundle key whose ``agents`` list holds the name; the proof covers the exact request;
- a client certificate (mutual TLS) with the URI SAN ``slmesh://agent/NAME``, one per name.

The registration token (when set) is still required on top: it says "a mesh member", the
credential says "which agent".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.message import Message

from mesh.trust import PROOF_HEADER, TrustBundle, TrustError, verify_proof

SAN_PREFIX = "slmesh://agent/"
"""URI SAN form that binds a client certificate to an agent name."""


URI_SAN_PROPERTY = "peer_uri"
"""gRPC's auth-context property holding the peer certificate's URI SANs, and only those.
(``x509_subject_alternative_name`` mixes every SAN type: a DNS SAN spelled
``slmesh://agent/NAME``, which a careless CA may issue, would read as the identity there.)"""


def certificate_agents(context: grpc.aio.ServicerContext[Any, Any]) -> set[str]:
    """Agent names the URI SANs of the peer's verified client certificate carry (mutual TLS
    only)."""
    auth = context.auth_context() or {}
    names: set[str] = set()
    for raw in auth.get(URI_SAN_PROPERTY, ()):
        value = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        if value.startswith(SAN_PREFIX) and len(value) > len(SAN_PREFIX):
            names.add(value[len(SAN_PREFIX) :])
    return names


class WriteIdentity:
    """Resolves the agent names a registry write's credential is bound to."""

    def __init__(self, bundle: TrustBundle | None) -> None:
        self.bundle = bundle

    def agents(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        op: str,
        replica_id: str,
        request: Message,
    ) -> set[str]:
        """The names this call may write under; :class:`TrustError` when it proves none."""
        names = certificate_agents(context)
        proofs: Sequence[str | bytes] = [
            v for k, v in context.invocation_metadata() or () if k == PROOF_HEADER
        ]
        problems: list[str] = []
        for raw in proofs[:1]:
            token = raw.decode() if isinstance(raw, bytes) else raw
            if self.bundle is None:
                problems.append("the registry has no trust bundle for registration proofs")
                break
            try:
                proof = verify_proof(
                    token, self.bundle, op=op, body=request.SerializeToString(deterministic=True)
                )
            except TrustError as exc:
                problems.append(str(exc))
                break
            if proof.replica != replica_id:
                problems.append(f"the proof is for replica {proof.replica!r}")
                break
            names.add(proof.agent)
        if not names:
            detail = "; ".join(problems) or (
                f"send a registration proof ({PROOF_HEADER}: SLMESH_SIGNING_KEYS with a key the "
                f"registry's trust bundle binds to the agent) or a client certificate with the "
                f"URI SAN {SAN_PREFIX}NAME"
            )
            raise TrustError(f"no credential bound to an agent name: {detail}")
        return names
