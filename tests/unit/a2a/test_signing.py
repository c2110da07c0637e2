"""Signed agent cards (mesh.a2a.signing): signed with every key, checked against pinned keys."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToJson

from mesh.a2a.cards import Endpoints, build_card
from mesh.a2a.client import GRPC, MeshClient, Replica, StaticReplicas
from mesh.a2a.signing import CardTrust, UntrustedCardError, sign_card
from mesh.config import ServiceSpec, Settings
from mesh.trust import SigningKey, TrustBundle
from tests.conftest import ECHO_SERVICE
from tests.support.keys import new_key, write_bundle


def _card(*keys: SigningKey, name: str | None = None):  # type: ignore[no-untyped-def]
    spec = ServiceSpec.load(ECHO_SERVICE)
    if name:
        spec.name = name
    card = build_card(spec, Endpoints.for_host("localhost", 8000, 9000), bearer_auth=True)
    return sign_card(card, keys)


def _bundle(*entries: tuple[SigningKey, list[str]]) -> TrustBundle:
    return TrustBundle.from_jwks({"keys": [k.public_jwk(a) for k, a in entries]})


def test_two_keys_sign_so_either_pinned_key_verifies(tmp_path: Path) -> None:
    _, old = new_key(tmp_path, "old")
    _, new = new_key(tmp_path, "new", curve="p256")
    card = _card(old, new)
    assert len(card.signatures) == 2
    for key in (old, new):
        trust = CardTrust(_bundle((key, ["echo"])), require=True)
        assert trust.check_json("echo", MessageToJson(card)) == key.kid


def test_an_altered_card_is_refused(tmp_path: Path) -> None:
    _, key = new_key(tmp_path, "k")
    card = _card(key)
    card.supported_interfaces[0].url = "evil.example:443"
    with pytest.raises(UntrustedCardError, match="does not verify"):
        CardTrust(_bundle((key, ["echo"]))).check("echo", card)


def test_a_key_for_another_agent_does_not_vouch_for_this_one(tmp_path: Path) -> None:
    _, key = new_key(tmp_path, "k")
    with pytest.raises(UntrustedCardError, match="not bound to agent 'echo'"):
        CardTrust(_bundle((key, ["planner"]))).check("echo", _card(key))
    # Nor does a card signed for another name pass as this agent's.
    with pytest.raises(UntrustedCardError, match="card is for agent 'planner'"):
        CardTrust(_bundle((key, ["echo", "planner"]))).check("echo", _card(key, name="planner"))


def test_a_jku_pointing_at_the_signers_own_key_is_ignored(tmp_path: Path) -> None:
    _, pinned = new_key(tmp_path, "pinned")
    _, attacker = new_key(tmp_path, "attacker")
    card = _card()
    from a2a.utils.signing import create_agent_card_signer

    header = {"kid": attacker.kid, "alg": "EdDSA", "jku": "https://evil.example/jwks.json"}
    create_agent_card_signer(attacker.private, header)(card)  # type: ignore[arg-type]
    with pytest.raises(UntrustedCardError, match="not in the trust bundle"):
        CardTrust(_bundle((pinned, ["echo"]))).check("echo", card)


def test_an_expired_signature_is_refused(tmp_path: Path) -> None:
    _, key = new_key(tmp_path, "k")
    card = _card()
    from a2a.utils.signing import create_agent_card_signer

    header = {"kid": key.kid, "alg": "EdDSA", "exp": int(time.time()) - 1}
    create_agent_card_signer(key.private, header)(card)  # type: ignore[arg-type]
    assert json.loads(base64.urlsafe_b64decode(card.signatures[0].protected + "=="))["exp"]
    with pytest.raises(UntrustedCardError, match="expired"):
        CardTrust(_bundle((key, ["echo"]))).check("echo", card)


def test_unsigned_cards_pass_only_while_signatures_are_not_required(tmp_path: Path) -> None:
    _, key = new_key(tmp_path, "k")
    unsigned = MessageToJson(_card())
    assert CardTrust(_bundle((key, ["echo"]))).check_json("echo", unsigned) is None
    with pytest.raises(UntrustedCardError, match="not signed"):
        CardTrust(_bundle((key, ["echo"])), require=True).check_json("echo", unsigned)
    with pytest.raises(UntrustedCardError, match="no agent card"):
        CardTrust(_bundle((key, ["echo"])), require=True).check_json("echo", "")
    with pytest.raises(UntrustedCardError, match="not an A2A agent card"):
        CardTrust(_bundle((key, ["echo"])), require=True).check_json("echo", '{"name": 5}')


def test_requiring_signed_cards_without_a_bundle_fails_at_start_up() -> None:
    with pytest.raises(ValueError, match="needs trust_bundle"):
        Settings(require_signed_cards=True)


async def test_the_client_skips_untrusted_replicas_and_says_why_when_none_is_left(
    tmp_path: Path,
) -> None:
    _, key = new_key(tmp_path, "k")
    bundle = write_bundle(tmp_path / "bundle.json", (key, ["echo"]))
    signed, unsigned = MessageToJson(_card(key)), MessageToJson(_card())

    def replica(rid: str, card_json: str) -> Replica:
        return Replica("echo", rid, {GRPC: f"{rid}:1"}, card_json=card_json)

    settings = Settings(trust_bundle=bundle, require_signed_cards=True)
    mixed = StaticReplicas([replica("good", signed), replica("bad", unsigned)])
    async with MeshClient(mixed, settings) as client:
        assert {client.pick("echo").replica_id for _ in range(20)} == {"good"}
    async with MeshClient(StaticReplicas([replica("bad", unsigned)]), settings) as client:
        with pytest.raises(UntrustedCardError, match="'echo' refused: the card is not signed"):
            client.pick("echo")
    # Without the requirement an unsigned card is used; a badly signed one never is.
    lax = Settings(trust_bundle=bundle)
    async with MeshClient(StaticReplicas([replica("bad", unsigned)]), lax) as client:
        assert client.pick("echo").replica_id == "bad"
    forged = signed.replace("localhost", "evil.example")
    async with MeshClient(StaticReplicas([replica("forged", forged)]), lax) as client:
        with pytest.raises(UntrustedCardError, match="does not verify"):
            client.pick("echo")
