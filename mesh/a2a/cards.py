"""Agent cards built from service specs, so the YAML spec stays the single source."""

from __future__ import annotations

from dataclasses import dataclass

from a2a.types import a2a_pb2 as pb
from a2a.utils.constants import PROTOCOL_VERSION_1_0, TransportProtocol

from mesh.config import ServiceSpec

BEARER_SCHEME = "bearer"
"""Name of the security scheme the mesh declares when an API token is configured."""


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
    def for_host(cls, host: str, http_port: int, grpc_port: int, *, https: bool = False) -> Endpoints:
        base = f"{'https' if https else 'http'}://{host}:{http_port}"
        return cls(jsonrpc=f"{base}/", rest=base, grpc=f"grpc://{host}:{grpc_port}")


def build_card(spec: ServiceSpec, endpoints: Endpoints, *, bearer_auth: bool) -> pb.AgentCard:
    """The public agent card of one replica: its three interfaces, skills and auth."""
    card = pb.AgentCard(
        name=spec.name,
        description=spec.description or spec.name,
        version=spec.version,
        capabilities=pb.AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=spec.input_modes,
        default_output_modes=spec.output_modes,
        provider=pb.AgentProvider(organization="slmesh", url="https://github.com/slmesh"),
    )
    for binding, url in endpoints.as_pairs():
        card.supported_interfaces.append(
            pb.AgentInterface(url=url, protocol_binding=binding, protocol_version=PROTOCOL_VERSION_1_0)
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
