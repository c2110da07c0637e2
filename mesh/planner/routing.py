"""The SLM-first router: which agents may answer a skill, smallest model first.

When several agents offer one skill (a LoRA student deployed by ``slmesh convert deploy``
next to the larger teacher it learnt from, or an SLM next to an agent backed by a large
model over an OpenAI-compatible endpoint), a step goes to the one with the fewest
parameters and escalates to the next larger one only when the answer is unusable: the
call failed, the answer broke the step's ``expect`` schema, or the model's confidence (mean
token log-probability, reported in usage) is under the threshold. Model sizes and
thresholds come from each agent's card (:data:`mesh.a2a.cards.MODEL_EXTENSION`); a model
of unknown size counts as the largest (a remote LLM usually is).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from mesh.a2a.cards import ModelFacts


@dataclass(frozen=True)
class Provider:
    """One agent offering a skill, as the router sees it."""

    agent: str
    model: str | None = None
    parameters: int | None = None
    escalate_below: float | None = None
    """Escalate answers whose mean token log-probability is under this (None: never for
    confidence; a failed or invalid answer still escalates)."""


Route = tuple[Provider, ...]
"""Providers of one skill, in the order they are tried."""


class RegisteredReplica(Protocol):
    """What the router reads of a registry ``Replica``."""

    agent: str
    skills: Sequence[str]
    card_json: str
    draining: bool


def build_routes(
    replicas: Iterable[RegisteredReplica],
    *,
    exclude: str = "",
    default_escalate_below: float | None = None,
) -> dict[str, Route]:
    """Skill id -> its providers, smallest model first, from live registry replicas.

    Draining replicas and ``exclude`` (the planner itself) are left out.
    ``default_escalate_below`` applies to providers whose card sets no threshold; the last
    provider of a route never escalates (there is nothing larger to ask).
    """
    facts: dict[str, ModelFacts | None] = {}
    offered: dict[str, set[str]] = {}
    for replica in replicas:
        agent = replica.agent
        if replica.draining or agent == exclude:
            continue
        if facts.get(agent) is None:
            facts[agent] = ModelFacts.from_card_json(replica.card_json)
        for skill in replica.skills:
            offered.setdefault(skill, set()).add(agent)
    routes: dict[str, Route] = {}
    for skill, agents in offered.items():
        providers = []
        for agent in agents:
            known = facts.get(agent)
            below = (
                known.escalate_below
                if known and known.escalate_below is not None
                else default_escalate_below
            )
            providers.append(
                Provider(
                    agent,
                    known.model if known else None,
                    known.parameters if known else None,
                    below,
                )
            )
        providers.sort(
            key=lambda p: (p.parameters if p.parameters is not None else math.inf, p.agent)
        )
        last = providers[-1]
        providers[-1] = Provider(last.agent, last.model, last.parameters, None)
        routes[skill] = tuple(providers)
    return routes


def largest_parameters(route: Route) -> int | None:
    """The largest known model size on a route: what the cost ledger's baseline prices with."""
    sizes = [p.parameters for p in route if p.parameters is not None]
    return max(sizes) if sizes else None
