"""Agent cards built from service specs, so the YAML spec stays the single source."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from a2a.types import a2a_pb2 as pb
from a2a.utils.constants import PROTOCOL_VERSION_1_0, TransportProtocol
from google.protobuf.struct_pb2 import Struct

from mesh.config import ServiceSpec

BEARER_SCHEME = "bearer"
"""Name of the security scheme the mesh declares when an API token is configured."""

MODEL_EXTENSION = "https://slmesh.dev/extensions/model/v1"
"""Card extension naming the model behind an agent (``model``, ``parameters``, ``backend``,
optional ``escalate_below``): what the planner's SLM-first router orders providers of a skill
by, and what its cost ledger prices calls with."""


@dataclass(frozen=True)
class ModelFacts:
    """What an agent's card says about its model."""

    model: str
    parameters: int | None
    backend: str | None = None
    escalate_below: float | None = None
    """Mean token log-probability under which the agent's answers should go to a larger model."""

    def extension(self) -> pb.AgentExtension:
        params = Struct()
        params.update(
            {
                k: v
                for k, v in (
                    ("model", self.model),
                    ("parameters", self.parameters),
                    ("backend", self.backend),
                    ("escalate_below", self.escalate_below),
                )
                if v is not None
            }
        )
        return pb.AgentExtension(
            uri=MODEL_EXTENSION, description="The model behind this agent.", params=params
        )

    @classmethod
    def from_card_json(cls, card_json: str) -> ModelFacts | None:
        """The facts in a registered card's JSON (as the registry stores it), if it has them."""
        if not card_json:
            return None
        try:
            card: dict[str, Any] = json.loads(card_json)
        except ValueError:
            return None
        for extension in card.get("capabilities", {}).get("extensions", []):
            if extension.get("uri") != MODEL_EXTENSION:
                continue
            params = extension.get("params") or {}
            parameters = params.get("parameters")
            below = params.get("escalate_below")
            return cls(
                model=str(params.get("model", "")),
                parameters=int(parameters) if isinstance(parameters, (int, float)) else None,
                backend=params.get("backend"),
                escalate_below=float(below) if isinstance(below, (int, float)) else None,
            )
        return None


@dataclass(frozen=True)
class Endpoints:
    """Where one replica answers, one URL per A2A protocol binding."""

    jsonrpc: str
    rest: str
    grpc: str

    def as_pairs(self) -> list[tuple[str, str]]:
        """(binding, url) in the mesh's order of preference: gRPC first."""
        return [
            (TransportProtocol.GRPC.value, self.grpc),
            (TransportProtocol.JSONRPC.value, self.jsonrpc),
            (TransportProtocol.HTTP_JSON.value, self.rest),
        ]

    @classmethod
    def for_host(
        cls, host: str, http_port: int, grpc_port: int, *, https: bool = False
    ) -> Endpoints:
        base = f"{'https' if https else 'http'}://{host}:{http_port}"
        return cls(jsonrpc=f"{base}/", rest=base, grpc=f"grpc://{host}:{grpc_port}")


def build_card(
    spec: ServiceSpec,
    endpoints: Endpoints,
    *,
    bearer_auth: bool,
    extensions: Sequence[pb.AgentExtension] = (),
) -> pb.AgentCard:
    """The public agent card of one replica: its three interfaces, skills, auth, and the
    extensions its executor declares (e.g. :data:`MODEL_EXTENSION`)."""
    card = pb.AgentCard(
        name=spec.name,
        description=spec.description or spec.name,
        version=spec.version,
        capabilities=pb.AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=spec.input_modes,
        default_output_modes=spec.output_modes,
        provider=pb.AgentProvider(organization="slmesh", url="https://github.com/slmesh"),
    )
    card.capabilities.extensions.extend(extensions)
    for binding, url in endpoints.as_pairs():
        card.supported_interfaces.append(
            pb.AgentInterface(
                url=url, protocol_binding=binding, protocol_version=PROTOCOL_VERSION_1_0
            )
        )
    for skill in spec.skills:
        card.skills.append(
            pb.AgentSkill(
                id=skill.id,
                name=skill.name,
                description=skill.description,
                tags=skill.tags or [spec.name],
                examples=skill.examples,
                input_modes=skill.input_modes or spec.input_modes,
                output_modes=skill.output_modes or spec.output_modes,
            )
        )
    if bearer_auth:
        card.security_schemes[BEARER_SCHEME].CopyFrom(
            pb.SecurityScheme(
                http_auth_security_scheme=pb.HTTPAuthSecurityScheme(
                    scheme="Bearer",
                    bearer_format="opaque",
                    description="Mesh API token (SLMESH_API_TOKEN), on every transport.",
                )
            )
        )
        requirement = pb.SecurityRequirement()
        requirement.schemes[BEARER_SCHEME].SetInParent()
        card.security_requirements.append(requirement)
    return card
