"""Pinned keys and registration proofs (mesh.trust): what a verifier accepts and refuses."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mesh.trust import (
    TrustBundle,
    TrustError,
    make_proof,
    thumbprint,
    verify_proof,
)
from tests.support.keys import new_key, write_bundle


def test_key_ids_are_rfc7638_thumbprints() -> None:
    # RFC 7638 section 3.1's example key and thumbprint.
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tS"
        "oc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR"
        "0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhA"
        "I4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_a_bundle_key_speaks_only_for_its_agents_until_it_expires(tmp_path: Path) -> None:
    _, key = new_key(tmp_path, "a")
    bundle = TrustBundle.load(write_bundle(tmp_path / "b.json", (key, ["echo"]), exp=2_000))
    assert bundle.key_for(key.kid, "echo", now=1_999).kid == key.kid
    with pytest.raises(TrustError, match="not bound to agent 'planner'"):
        bundle.key_for(key.kid, "planner", now=1_000)
    with pytest.raises(TrustError, match="expired"):
        bundle.key_for(key.kid, "echo", now=2_000)
    with pytest.raises(TrustError, match="not in the trust bundle"):
        bundle.key_for("someone-else", "echo")


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("not json", "not a readable JSON"),
        ('{"keys": {}}', "expected a JWK Set"),
        ('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "uses HS256|not a usable"),
        ('{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AA", "agents": "echo"}]}', ""),
    ],
)
def test_a_bad_bundle_is_refused_at_start_up(tmp_path: Path, content: str, complaint: str) -> None:
    path = tmp_path / "bundle.json"
    path.write_text(content)
    with pytest.raises(TrustError, match=complaint or "keys\\[0\\]"):
        TrustBundle.load(path)


def test_a_bundle_refuses_private_key_material(tmp_path: Path) -> None:
    _, key = new_key(tmp_path, "a")
    leaked = key.public_jwk(["echo"]) | {"d": "c2VjcmV0"}
    with pytest.raises(TrustError, match="private key material"):
        TrustBundle.from_jwks({"keys": [leaked]})


def test_a_proof_holds_only_for_its_operation_request_and_agent(tmp_path: Path) -> None:
    _, echo_key = new_key(tmp_path, "echo", curve="p256")
    _, other_key = new_key(tmp_path, "other")
    bundle = TrustBundle.from_jwks(
        {"keys": [echo_key.public_jwk(["echo"]), other_key.public_jwk(["other"])]}
    )
    proof = make_proof(echo_key, agent="echo", replica="r1", op="Heartbeat", body=b"req")
    stated = verify_proof(proof, bundle, op="Heartbeat", body=b"req")
    assert (stated.agent, stated.replica, stated.kid) == ("echo", "r1", echo_key.kid)
    with pytest.raises(TrustError, match="not 'Deregister'"):
        verify_proof(proof, bundle, op="Deregister", body=b"req")
    with pytest.raises(TrustError, match="another request"):
        verify_proof(proof, bundle, op="Heartbeat", body=b"other")
    # A key claims an agent it is not bound to.
    forged = make_proof(other_key, agent="echo", replica="r1", op="Heartbeat", body=b"req")
    with pytest.raises(TrustError, match="not bound to agent 'echo'"):
        verify_proof(forged, bundle, op="Heartbeat", body=b"req")
    with pytest.raises(TrustError, match="malformed"):
        verify_proof("not.a.jws", bundle, op="Heartbeat", body=b"req")


def test_an_old_proof_is_refused(tmp_path: Path) -> None:
    _, key = new_key(tmp_path, "a")
    bundle = TrustBundle.from_jwks({"keys": [key.public_jwk(["echo"])]})
    stale = key.sign(
        json.dumps(
            {
                "agent": "echo",
                "replica": "r",
                "op": "Register",
                "body": "",
                "iat": int(time.time()) - 600,
                "exp": int(time.time()) - 540,
            }
        ).encode(),
        {"typ": "slmesh-registration+jwt"},
    )
    with pytest.raises(TrustError, match="expired"):
        verify_proof(stale, bundle, op="Register", body=b"")


def test_slmesh_trust_prints_a_bundle_that_loads(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mesh.cli import app

    path, key = new_key(tmp_path, "tools")
    done = CliRunner().invoke(app, ["trust", str(path), "--agent", "tools"])
    assert done.exit_code == 0, done.output
    bundle = TrustBundle.from_jwks(json.loads(done.output))
    assert bundle.key_for(key.kid, "tools").agents == frozenset({"tools"})
    broken = tmp_path / "broken.pem"
    broken.write_text("not a key")
    refused = CliRunner().invoke(app, ["trust", str(broken), "--agent", "tools"])
    assert refused.exit_code == 2
    assert "not an unencrypted PEM key" in refused.output
