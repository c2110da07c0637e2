"""Plans written by a model: the planner SLM, then (optional) a large model, when no workflow fits.

The SLM-first design of the paper: a small model proposes the plan; a large model over an
OpenAI-compatible endpoint is asked only when the small one has nothing valid to offer,
and only if configured. Either way decoding is constrained to a plan schema built from
the skills registered *now*: step ``s<k>`` is ``{"skill": <a registered skill>, "input":
"$input..." or "$s<j>..." for j < k}``, so every generated plan parses, names only skills
that exist, and is acyclic by construction; it is still validated like any plan.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mesh.config import ServiceSpec, Settings
from mesh.plans.generated import DEFAULT_MAX_STEPS, DEFAULT_PROMPT, plan_input, plan_schema, to_plan
from mesh.plans.model import Plan, PlanError, validate_plan
from mesh.slm.generation import GenerationRequest, SLMBackend
from mesh.slm.grammar import JsonOutput

log = logging.getLogger(__name__)


@dataclass
class PlanGenerator:
    """One model that writes plans (``source`` is what the run records: planner_slm or llm)."""

    source: str
    backend: SLMBackend
    prompt: str = DEFAULT_PROMPT
    max_steps: int = DEFAULT_MAX_STEPS
    max_new_tokens: int = 400
    escalate_below: float | None = None
    """Least mean token log-probability of a plan this model may give: below it the model
    is unsure, and the next plan source (the large model) or the rejection takes over.
    None: every valid plan is used."""
    min_related: float | None = None
    """Least similarity (the router's cosine score of the closest workflow example) of a
    request this model plans at all. A micro-SLM writes some plan for any text, confidently:
    "Integrate x squared" is not a support-desk task, and no plan over these skills is right
    for it. None: every request is planned."""

    @classmethod
    def from_options(
        cls,
        source: str,
        raw: Mapping[str, Any],
        spec: ServiceSpec,
        settings: Settings,
        api_key: str | None = None,
    ) -> PlanGenerator:
        """Built from a planner spec's ``generator`` / ``llm`` block (SLM agent options)."""
        from mesh.slm.executor import SLMOptions, build_backend

        options = dict(raw)
        max_steps = int(options.pop("max_steps", DEFAULT_MAX_STEPS))
        min_related = options.pop("min_related", None)
        slm = SLMOptions.model_validate(
            {"prompt": DEFAULT_PROMPT, "max_new_tokens": 400, **options}
        )
        return cls(
            source,
            build_backend(slm, spec, settings, api_key),
            slm.prompt,
            max_steps,
            slm.max_new_tokens,
            slm.escalate_below,
            None if min_related is None else float(min_related),
        )

    async def plan(
        self, text: str, skills: Mapping[str, str], related: float | None = None
    ) -> Plan:
        """A validated plan for ``text`` over the registered ``skills``, or :class:`PlanError`.

        ``related`` is how close the request came to a workflow (the router's score); under
        ``min_related`` the model is not asked.
        """
        if not skills:
            raise PlanError(f"{self.source}: no skills are registered to plan with")
        if self.min_related is not None and related is not None and related < self.min_related:
            raise PlanError(
                f"{self.source}: not asked, the request is unrelated to the mesh's work "
                f"(similarity {related:.2f} < {self.min_related})"
            )
        request = GenerationRequest(
            prompt=self.prompt.format(input=plan_input(text, skills)),
            max_new_tokens=self.max_new_tokens,
            output=JsonOutput(plan_schema(list(skills), self.max_steps)),
        )
        try:
            generation = await self.backend.generate(request)
        except Exception as exc:  # the model failed: the next source (or the error) takes over
            raise PlanError(f"{self.source}: the model gave no plan: {exc}") from exc
        try:
            plan = to_plan(generation.value)
            validate_plan(plan, skills=skills)
        except (ValueError, PlanError) as exc:
            raise PlanError(f"{self.source}: the generated plan is invalid: {exc}") from exc
        confidence = generation.usage.mean_logprob
        if (
            self.escalate_below is not None
            and confidence is not None
            and confidence < self.escalate_below
        ):
            raise PlanError(
                f"{self.source}: unsure of its plan (mean token log-probability "
                f"{confidence:.3f} < {self.escalate_below}), so it is not used"
            )
        log.info(
            "%s planned %d step(s) for %r (mean logprob %s)",
            self.source,
            len(plan.steps),
            text[:60],
            confidence,
        )
        return plan

    async def aclose(self) -> None:
        await self.backend.aclose()
