"""Signing keys and trust bundles for tests: real keys, written where a process can read them."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from mesh.trust import SigningKey


def new_key(directory: Path, name: str, *, curve: str = "ed25519") -> tuple[Path, SigningKey]:
    """A fresh private key as a PEM file ``directory/name.pem``, and the key itself."""
    private = (
        ed25519.Ed25519PrivateKey.generate()
        if curve == "ed25519"
        else ec.generate_private_key(ec.SECP256R1())
    )
    path = directory / f"{name}.pem"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path, SigningKey.load(path)


def write_bundle(path: Path, *entries: tuple[SigningKey, list[str]], **extra: object) -> Path:
    """A trust bundle pinning each key to its agent names (``extra`` goes on every entry)."""
    keys = [key.public_jwk(agents) | extra for key, agents in entries]
    path.write_text(json.dumps({"keys": keys}), encoding="utf-8")
    return path
