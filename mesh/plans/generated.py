"""The form a model writes plans in: its prompt input, the schema it decodes under, the parse.

The planner SLM is trained on exactly this (:mod:`mesh.train.data.planner`) and asked in exactly
this at run time (:class:`mesh.planner.generate.PlanGenerator`): step ``s<k>`` is ``{"skill":
<a registered skill>, "input": "$input..." or "$s<j>..." for j < k}``, so every generated plan
parses, names only skills that exist, and is acyclic by construction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mesh.plans.model import Plan

DEFAULT_PROMPT = "Plan the request as steps.\nSkills: {input}\nPlan: "
DEFAULT_MAX_STEPS = 6


def plan_schema(skills: Sequence[str], max_steps: int) -> dict[str, Any]:
    """JSON schema of a generated plan over ``skills``: ``{"s0": {"skill", "input"}, "s1": ...}``.

    One ``anyOf`` branch per plan length (the grammar compiler writes every declared property,
    in order); the input of step ``k`` may bind only to ``$input`` (the request text) or to an
    earlier step.
    """
    steps = []
    for k in range(max_steps):
        # $input is the request text (no fields); earlier steps' values may be objects.
        earlier = "|".join(f"s{j}" for j in range(k))
        pattern = rf"^(\$input|\$({earlier})(\.[a-z_]{{1,24}}){{0,2}})$" if k else r"^\$input$"
        steps.append(
            {
                "type": "object",
                "properties": {
                    "skill": {"enum": sorted(skills)},
                    "input": {"type": "string", "pattern": pattern},
                },
                "required": ["skill", "input"],
                "additionalProperties": False,
            }
        )
    branches = []
    for length in range(1, max_steps + 1):
        properties = {f"s{k}": steps[k] for k in range(length)}
        branches.append(
            {
                "type": "object",
                "properties": properties,
                "required": list(properties),
                "additionalProperties": False,
            }
        )
    return {"anyOf": branches}


def plan_input(text: str, skills: Iterable[str]) -> str:
    """What the prompt's ``{input}`` becomes: the registered skills (sorted) and the request.

    Training renders the same string (:mod:`mesh.train.data.planner`), so the planner SLM
    reads exactly what it was trained on.
    """
    return f"{', '.join(sorted(skills))}\nRequest: {text}"


def to_plan(value: Mapping[str, Any]) -> Plan:
    """A generated ``{"s0": {...}, ...}`` as a :class:`Plan` (every step's value in the output)."""
    return Plan.model_validate(
        {"steps": [{"id": step_id, **step} for step_id, step in value.items()]}
    )
