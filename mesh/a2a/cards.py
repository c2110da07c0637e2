"""Agent cards built from service specs, so the YAML spec stays the single source."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from a2a.server.routes import create_agent_card_routes
from a2a.types import a2a_pb2 as pb
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH, PROTOCOL_VERSION_1_0, TransportProtocol
from google.protobuf.struct_pb2 import Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

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
        """The gRPC URL is ``host:port``: a grpc target name as is, which every grpc client
        (a2a-sdk's, the TCK's, ``grpc.insecure_channel``) dials; ``grpc://host:port`` is not."""
        base = f"{'https' if https else 'http'}://{host}:{http_port}"
        return cls(jsonrpc=f"{base}/", rest=base, grpc=f"{host}:{grpc_port}")

    def advertised(
        self, *, jsonrpc: str | None = None, rest: str | None = None, grpc: str | None = None
    ) -> Endpoints:
        """These endpoints with the public URLs a proxy in front of the replica answers on."""
        return replace(
            self, jsonrpc=jsonrpc or self.jsonrpc, rest=rest or self.rest, grpc=grpc or self.grpc
        )


def build_card(
    spec: ServiceSpec,
    endpoints: Endpoints,
    *,
    bearer_auth: bool,
    extensions: Sequence[pb.AgentExtension] = (),
    push: bool = False,
) -> pb.AgentCard:
    """The public agent card of one replica: its three interfaces, skills, auth, the
    extensions its executor declares (e.g. :data:`MODEL_EXTENSION`), and whether it offers
    push notifications."""
    card = pb.AgentCard(
        name=spec.name,
        description=spec.description or spec.name,
        version=spec.version,
        capabilities=pb.AgentCapabilities(streaming=True, push_notifications=push),
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


_REVALIDATION_HEADERS = ("etag", "cache-control", "last-modified")


def card_routes(card: pb.AgentCard, *, max_age_s: int, last_modified: datetime) -> list[Route]:
    """The card endpoint: a2a-sdk's (``ETag``, 304 on ``If-None-Match``) with ``Cache-Control``
    ``max-age`` and ``Last-Modified`` added, and 304 on an ``If-Modified-Since`` the card is not
    newer than (only without ``If-None-Match``, which takes precedence: RFC 9110 13.2.2)."""
    [sdk_route] = create_agent_card_routes(
        card, card_url=AGENT_CARD_WELL_KNOWN_PATH, cache_control=f"public, max-age={max_age_s}"
    )
    served = sdk_route.endpoint
    modified = last_modified.replace(microsecond=0)
    stamp = format_datetime(modified, usegmt=True)

    async def endpoint(request: Request) -> Response:
        response: Response = await served(request)
        response.headers["Last-Modified"] = stamp
        since = request.headers.get("if-modified-since")
        if (
            response.status_code == 200
            and since
            and "if-none-match" not in request.headers
            and _not_newer(modified, since)
        ):
            kept = {k: response.headers[k] for k in _REVALIDATION_HEADERS if k in response.headers}
            return Response(status_code=304, headers=kept)
        return response

    return [Route(AGENT_CARD_WELL_KNOWN_PATH, endpoint, methods=["GET"])]


def _not_newer(modified: datetime, since: str) -> bool:
    try:
        return modified <= parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False  # an unparsable date is ignored (RFC 9110 13.1.3)
