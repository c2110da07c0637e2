"""Signed agent cards: the spec's card signatures (JWS over the RFC 8785 canonical form of the
card), made and checked with a2a-sdk's ``a2a.utils.signing`` and keys pinned in a
:class:`~mesh.trust.TrustBundle`.

A card is trusted when one of its signatures verifies with a bundle key bound to the card's
agent name, unexpired; the key is looked up by ``kid`` in the bundle alone, so a ``jku`` in
a signature's header changes nothing. Unsigned cards pass unless signatures are required.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Sequence

from a2a.types import a2a_pb2 as pb
from a2a.utils.signing import (
    InvalidSignaturesError,
    ProtectedHeader,
    create_agent_card_signer,
    create_signature_verifier,
)
from google.protobuf.json_format import Parse as parse_json
from google.protobuf.json_format import ParseError
from jwt.exceptions import PyJWKError

from mesh.config import Settings
from mesh.errors import MeshError
from mesh.trust import ALGORITHMS, SigningKey, TrustBundle, TrustError, load_signing_keys


class UntrustedCardError(MeshError, TrustError):
    """An agent card is unsigned where signatures are required, or no signature on it holds."""

    def __init__(self, agent: str, reason: str) -> None:
        super().__init__(
            f"agent card of {agent!r} refused: {reason} (trust bundle: SLMESH_TRUST_BUNDLE; "
            "signing keys: SLMESH_SIGNING_KEYS)"
        )
        self.agent = agent
        self.reason = reason


def sign_card(card: pb.AgentCard, keys: Sequence[SigningKey]) -> pb.AgentCard:
    """Adds one signature per key (all keys sign: rotation), replacing any earlier ones."""
    del card.signatures[:]
    for key in keys:
        header: ProtectedHeader = {"kid": key.kid, "alg": key.alg, "jku": None, "typ": "JOSE"}
        del header["jku"]  # type: ignore[misc]  # the mesh names no key URL: verifiers pin keys
        create_agent_card_signer(key.private, header)(card)
    return card


def _header(signature: pb.AgentCardSignature) -> dict[str, object]:
    padded = signature.protected + "=" * (-len(signature.protected) % 4)
    try:
        decoded = json.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError):
        return {}
    return decoded if isinstance(decoded, dict) else {}


class CardTrust:
    """Checks agent cards against a pinned bundle (registry at registration, client before a
    call)."""

    def __init__(self, bundle: TrustBundle | None, *, require: bool = False) -> None:
        if require and bundle is None:
            raise TrustError("SLMESH_REQUIRE_SIGNED_CARDS=true needs SLMESH_TRUST_BUNDLE")
        self.bundle = bundle
        self.require = require

    @classmethod
    def from_settings(cls, settings: Settings) -> CardTrust:
        bundle = TrustBundle.load(settings.trust_bundle) if settings.trust_bundle else None
        return cls(bundle, require=settings.require_signed_cards)

    @property
    def active(self) -> bool:
        """Whether checking can refuse anything (a bundle to verify against)."""
        return self.bundle is not None

    def check_json(self, agent: str, card_json: str) -> str | None:
        """:meth:`check` of a card as the registry holds it (JSON)."""
        if not card_json:
            if self.require:
                raise UntrustedCardError(agent, "no agent card was published")
            return None
        card = pb.AgentCard()
        try:
            parse_json(card_json, card, ignore_unknown_fields=True)
        except ParseError as exc:
            raise UntrustedCardError(agent, f"card is not an A2A agent card: {exc}") from exc
        return self.check(agent, card)

    def check(self, agent: str, card: pb.AgentCard) -> str | None:
        """The key id of a valid signature, or None for an unsigned card where that is allowed;
        :class:`UntrustedCardError` otherwise."""
        if not card.signatures:
            if self.require:
                raise UntrustedCardError(agent, "the card is not signed")
            return None
        if self.bundle is None:
            return None
        if card.name != agent:
            raise UntrustedCardError(agent, f"the card is for agent {card.name!r}")
        bundle, reasons, now = self.bundle, [], time.time()
        usable = pb.AgentCard()
        usable.CopyFrom(card)
        del usable.signatures[:]
        for signature in card.signatures:
            expires = _header(signature).get("exp")
            if isinstance(expires, (int, float)) and expires <= now:
                reasons.append("a signature expired")
            else:
                usable.signatures.append(signature)
        tried: list[str] = []

        def key_provider(kid: str | None, jku: str | None) -> object:
            del jku  # never fetched: keys come from the pinned bundle only
            try:
                key = bundle.key_for(kid, agent, now).key
            except TrustError as exc:
                reasons.append(str(exc))
                raise PyJWKError(str(exc)) from exc
            tried.append(kid or "")
            return key

        if not usable.signatures:
            raise UntrustedCardError(agent, "; ".join(reasons))
        try:
            create_signature_verifier(key_provider, list(ALGORITHMS))(usable)  # type: ignore[arg-type]  # PyJWK is what it wants
        except InvalidSignaturesError as exc:
            reasons += [f"the signature by key {k!r} does not verify (altered?)" for k in tried]
            detail = "; ".join(dict.fromkeys(reasons)) or "no signature verifies"
            raise UntrustedCardError(agent, detail) from exc
        return tried[-1]  # the verifier stops at the first signature that holds


def card_signing_keys(settings: Settings) -> list[SigningKey]:
    """This process's signing keys (empty when none is configured)."""
    return load_signing_keys(settings.signing_key_files())
