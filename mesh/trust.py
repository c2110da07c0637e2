"""Keys and pinned trust: what an agent signs with, and which public keys a verifier accepts.

An agent's key is a PEM private key file (a mounted secret): Ed25519 (``EdDSA``), EC P-256
(``ES256``) or RSA (``RS256``). Its key id is the RFC 7638 thumbprint of its public part, so
a verifier never needs a name the signer chose. Listing two keys rotates: everything is
signed with each, and a verifier pinned to either accepts.

A trust bundle is a JWK Set file. Each key may carry ``agents`` (the agent names it speaks
for) and ``exp`` (seconds since the epoch after which it is refused). Verifiers look keys up
only here: a key URL a signature names (``jku``) is never fetched.

Built on PyJWT (through a2a-sdk's ``signing`` extra) and ``cryptography``; no a2a-sdk types,
so the registry uses it too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.api_jwk import PyJWK

ALGORITHMS = ("EdDSA", "ES256", "RS256")
"""Signature algorithms the mesh signs and accepts; a key's type fixes which one it uses."""

_THUMBPRINT_MEMBERS = {
    "OKP": ("crv", "kty", "x"),
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
}


class TrustError(ValueError):
    """A key, bundle or signature cannot be trusted; the message says which and why."""


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): the key id the mesh uses."""
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None or any(m not in jwk for m in members):
        raise TrustError(f"unsupported or incomplete public key (kty={jwk.get('kty')!r})")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    """One private key of this process, with its algorithm and key id."""

    private: Any
    alg: str
    kid: str
    path: Path | None = None

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        try:
            private = load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise TrustError(f"signing key {path}: not an unencrypted PEM key: {exc}") from exc
        return cls.from_private(private, path)

    @classmethod
    def from_private(cls, private: Any, path: Path | None = None) -> SigningKey:
        if isinstance(private, ed25519.Ed25519PrivateKey):
            alg = "EdDSA"
        elif isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp256r1":
            alg = "ES256"
        elif isinstance(private, rsa.RSAPrivateKey) and private.key_size >= 2048:
            alg = "RS256"
        else:
            raise TrustError(f"signing key {path or ''}: use Ed25519, EC P-256 or RSA >= 2048 bits")
        jwk = _public_jwk(private.public_key(), alg)
        return cls(private=private, alg=alg, kid=thumbprint(jwk), path=path)

    def public_jwk(self, agents: Iterable[str] = ()) -> dict[str, Any]:
        """The public part as a JWK (with ``kid``, ``alg``, ``use``; ``agents`` when given): a
        trust bundle entry, and what an agent publishes."""
        jwk = _public_jwk(self.private.public_key(), self.alg)
        jwk |= {"kid": self.kid, "alg": self.alg, "use": "sig"}
        names = sorted(agents)
        if names:
            jwk["agents"] = names
        return jwk

    def sign(self, payload: bytes, headers: Mapping[str, Any] | None = None) -> str:
        """Compact JWS of ``payload`` with this key (``kid`` and ``alg`` in the protected
        header)."""
        return jwt.api_jws.encode(
            payload, self.private, algorithm=self.alg, headers={"kid": self.kid, **(headers or {})}
        )


def _public_jwk(public: Any, alg: str) -> dict[str, Any]:
    algorithm = {"EdDSA": OKPAlgorithm, "ES256": ECAlgorithm, "RS256": RSAAlgorithm}[alg]
    jwk: dict[str, Any] = algorithm.to_jwk(public, as_dict=True)  # type: ignore[attr-defined]  # classmethod on the concrete algorithms
    return jwk


def load_signing_keys(paths: Iterable[Path]) -> list[SigningKey]:
    """The configured keys, first one first (the one proofs are signed with)."""
    return [SigningKey.load(p) for p in paths]


@dataclass(frozen=True)
class TrustedKey:
    """One pinned public key: who it speaks for and until when."""

    kid: str
    key: PyJWK
    agents: frozenset[str]
    expires: float | None = None


@dataclass(frozen=True)
class TrustBundle:
    """The pinned public keys a verifier accepts, by key id (thumbprint)."""

    keys: Mapping[str, TrustedKey] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> TrustBundle:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TrustError(f"trust bundle {path}: not a readable JSON file: {exc}") from exc
        return cls.from_jwks(raw, source=str(path))

    @classmethod
    def from_jwks(cls, raw: Any, source: str = "trust bundle") -> TrustBundle:
        entries = raw.get("keys") if isinstance(raw, dict) else None
        if not isinstance(entries, list):
            raise TrustError(f"{source}: expected a JWK Set ({{'keys': [...]}})")
        keys: dict[str, TrustedKey] = {}
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise TrustError(f"{source}: keys[{i}] is not an object")
            public = {k: v for k, v in entry.items() if k not in {"agents", "exp", "d", "p", "q"}}
            if any(k in entry for k in ("d", "p", "q")):
                raise TrustError(f"{source}: keys[{i}] holds private key material; pin public keys")
            try:
                key = PyJWK(public)
            except jwt.PyJWTError as exc:
                raise TrustError(f"{source}: keys[{i}] is not a usable public key: {exc}") from exc
            if key.algorithm_name not in ALGORITHMS:
                raise TrustError(f"{source}: keys[{i}] uses {key.algorithm_name}; use {ALGORITHMS}")
            agents = entry.get("agents", [])
            if not isinstance(agents, list) or not all(isinstance(a, str) for a in agents):
                raise TrustError(f"{source}: keys[{i}].agents must be a list of agent names")
            expires = entry.get("exp")
            if expires is not None and not isinstance(expires, (int, float)):
                raise TrustError(f"{source}: keys[{i}].exp must be seconds since the epoch")
            kid = thumbprint(public)
            keys[kid] = TrustedKey(kid=kid, key=key, agents=frozenset(agents), expires=expires)
        return cls(keys=keys)

    def key_for(self, kid: str | None, agent: str, now: float | None = None) -> TrustedKey:
        """The pinned key ``kid`` if it may speak for ``agent`` now; else :class:`TrustError`."""
        trusted = self.keys.get(kid or "")
        if trusted is None:
            raise TrustError(f"key {kid!r} is not in the trust bundle")
        if agent not in trusted.agents:
            raise TrustError(f"key {kid!r} is not bound to agent {agent!r}")
        if trusted.expires is not None and (now or time.time()) >= trusted.expires:
            raise TrustError(f"key {kid!r} expired")
        return trusted


PROOF_TYPE = "slmesh-registration+jwt"
"""``typ`` of a registration proof: a proof is never mistaken for another kind of JWS."""

PROOF_HEADER = "slmesh-proof"
"""gRPC metadata key carrying the proof of a registry write."""

PROOF_LIFETIME_S = 60.0
"""How long a proof is accepted after it is made (clock skew included)."""


def request_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def make_proof(key: SigningKey, *, agent: str, replica: str, op: str, body: bytes) -> str:
    """A short-lived signed statement: this key's holder makes ``op`` on ``replica`` of
    ``agent`` with exactly this request body (so a captured proof cannot carry another
    request)."""
    now = int(time.time())
    claims = {
        "agent": agent,
        "replica": replica,
        "op": op,
        "body": request_digest(body),
        "iat": now,
        "exp": now + int(PROOF_LIFETIME_S),
    }
    return key.sign(json.dumps(claims, separators=(",", ":")).encode(), {"typ": PROOF_TYPE})


@dataclass(frozen=True)
class Proof:
    """What a verified proof states."""

    agent: str
    replica: str
    op: str
    kid: str


def verify_proof(token: str, bundle: TrustBundle, *, op: str, body: bytes) -> Proof:
    """The statement of a registration proof signed by a pinned key bound to its agent, made
    for ``op`` with this ``body``; else :class:`TrustError`."""
    try:
        header = jwt.get_unverified_header(token)
        unsigned = jwt.api_jws.decode_complete(token, options={"verify_signature": False})
        unverified = json.loads(unsigned["payload"])
    except (jwt.PyJWTError, ValueError) as exc:
        raise TrustError(f"malformed proof: {exc}") from exc
    if header.get("typ") != PROOF_TYPE or not isinstance(unverified, dict):
        raise TrustError("not a registration proof")
    agent = unverified.get("agent")
    if not isinstance(agent, str) or not agent:
        raise TrustError("proof names no agent")
    trusted = bundle.key_for(header.get("kid"), agent)
    try:
        claims = jwt.decode(
            token,
            trusted.key,
            algorithms=list(ALGORITHMS),
            options={"require": ["exp", "iat"]},
            leeway=5,
        )
    except jwt.PyJWTError as exc:
        raise TrustError(f"proof rejected: {exc}") from exc
    if claims.get("iat", 0) > time.time() + PROOF_LIFETIME_S:
        raise TrustError("proof issued in the future")
    if claims.get("op") != op:
        raise TrustError(f"proof is for {claims.get('op')!r}, not {op!r}")
    if claims.get("body") != request_digest(body):
        raise TrustError("proof was made for another request")
    return Proof(agent=agent, replica=str(claims.get("replica", "")), op=op, kid=trusted.kid)
