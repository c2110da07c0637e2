"""An SLM agent's prompt and output contract, read from its ``agent.yaml``.

The service spec is the single source: the runtime renders ``options.prompt`` and
constrains the output with ``options.output``; training renders the same prompt and
checks every target against the same labels or schema, so the two cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mesh.config import ServiceSpec
from mesh.slm.errors import InvalidOutputError
from mesh.slm.executor import OutputOptions
from mesh.slm.grammar import Choice, GroundedText, JsonOutput, OutputConstraint
from mesh.slm.validation import OutputValidator, parse_output

SERVICES_DIR = Path(__file__).resolve().parents[3] / "services"
"""``services/`` of this checkout, where the agents' specs live."""


class ContractError(ValueError):
    """A target or an output breaks the agent's contract."""


@dataclass(frozen=True)
class Contract:
    """What one SLM agent is asked (prompt) and may answer (labels, schema or free text)."""

    agent: str
    prompt: str
    labels: tuple[str, ...] | None
    schema: Mapping[str, Any] | None
    max_new_tokens: int
    stop: tuple[str, ...]
    model_dir: Path
    text: GroundedText | None = None
    """Free text whose facts are copied from the input (``output.grounded_text``)."""
    backend: str = "transformers"
    """``options.backend``: ``encoder`` agents are fine-tuned encoders, not micro-SLMs."""
    choices: Callable[[str], Sequence[str]] | None = None
    """``output.choices_from``: the answers allowed for each input (the responder's forms)."""

    def as_kind(self, kind: str) -> Contract:
        """This contract served by its ``micro`` causal SLM or its ``encoder``: an agent served
        by an encoder keeps its micro-SLM in ``models/<agent>``, one served by a micro-SLM
        names its encoder ``models/<agent>-encoder``. ``auto``: as the spec serves it."""
        served = "encoder" if self.backend == "encoder" else "micro"
        if kind in ("auto", served):
            return self
        if kind == "encoder":
            return replace(
                self, backend="encoder", model_dir=self.model_dir.with_name(f"{self.agent}-encoder")
            )
        return replace(self, backend="transformers", model_dir=self.model_dir.with_name(self.agent))

    def render(self, value: str) -> str:
        """The prompt with ``{input}`` filled in, exactly as the executor renders it."""
        return self.prompt.format(input=value)

    def constraint(self, source: str) -> OutputConstraint | None:
        """The runtime's output constraint for one input (None: free text, unconstrained)."""
        if self.labels is not None:
            return Choice(self.labels)
        if self.choices is not None:
            return Choice(tuple(self.choices(source)))
        if self.schema is not None:
            return JsonOutput(self.schema, source)
        if self.text is not None:
            return self.text.with_source(source)
        return None

    def check(self, output: str, *, source: str) -> Any:
        """Parses ``output`` and raises :class:`ContractError` unless it is allowed.

        The runtime's own check (:func:`mesh.slm.validation.parse_output`), so a training
        target and a judged output pass exactly what a served answer must: the label set, the
        schema with every grounded value copied from ``source`` as the grammar copies it,
        grounded text's facts. Returns the label, the parsed JSON or the text.
        """
        constraint = self.constraint(source)
        if constraint is None and not output.strip():
            raise ContractError("empty reply")
        try:
            return parse_output(constraint, output)
        except InvalidOutputError as exc:
            raise ContractError(str(exc)) from exc


def load_contract(agent: str, services_dir: Path = SERVICES_DIR) -> Contract:
    """The contract in ``services/<agent>/agent.yaml`` (``options``: prompt, output...)."""
    spec = ServiceSpec.load(services_dir / agent)
    options = spec.options
    if "generator" in options:
        return _planner_contract(spec, services_dir)
    prompt = options.get("prompt")
    if not isinstance(prompt, str) or "{input}" not in prompt:
        raise ContractError(f"{agent}: options.prompt must be a string containing {{input}}")
    output = options.get("output") or {}
    labels = output.get("labels")
    schema = output.get("schema")
    if schema is not None:
        OutputValidator.check_schema(schema)
    declared = OutputOptions.model_validate(output) if output else None
    text = declared.constraint() if declared and "grounded_text" in output else None
    assert spec.path is not None
    return Contract(
        agent=spec.name,
        prompt=prompt,
        labels=tuple(labels) if labels is not None else None,
        schema=schema,
        max_new_tokens=int(options.get("max_new_tokens", 256)),
        stop=tuple(options.get("stop", ())),
        model_dir=(spec.path / options["model"]).resolve(),
        text=text if isinstance(text, GroundedText) else None,
        backend=str(options.get("backend", "transformers")),
        choices=declared.choices() if declared else None,
    )


def mesh_skills(services_dir: Path = SERVICES_DIR, *, exclude: str = "planner") -> tuple[str, ...]:
    """The skill ids the agents in ``services/`` offer (sorted), the planner's own excluded:
    what a planner sees registered in the full mesh."""
    skills: set[str] = set()
    for file in sorted(services_dir.glob("*/agent.yaml")):
        spec = ServiceSpec.load(file)
        if spec.kind == "agent" and spec.name != exclude:
            skills.update(skill.id for skill in spec.skills)
    return tuple(sorted(skills))


def _planner_contract(spec: ServiceSpec, services_dir: Path) -> Contract:
    """The planner SLM's contract: ``options.generator``'s prompt (default: the runtime's) and
    the plan schema :class:`~mesh.planner.generate.PlanGenerator` decodes under, over the
    skills of the full mesh."""
    from mesh.plans.generated import DEFAULT_MAX_STEPS, DEFAULT_PROMPT, plan_schema

    generator = spec.options["generator"]
    if not isinstance(generator, dict) or not generator.get("model"):
        raise ContractError(f"{spec.name}: options.generator needs a model folder")
    prompt = generator.get("prompt", DEFAULT_PROMPT)
    if not isinstance(prompt, str) or "{input}" not in prompt:
        raise ContractError(f"{spec.name}: options.generator.prompt must contain {{input}}")
    assert spec.path is not None
    skills = mesh_skills(services_dir, exclude=spec.name)
    return Contract(
        agent=spec.name,
        prompt=prompt,
        labels=None,
        schema=plan_schema(skills, int(generator.get("max_steps", DEFAULT_MAX_STEPS))),
        max_new_tokens=int(generator.get("max_new_tokens", 400)),
        stop=(),
        model_dir=(spec.path / generator["model"]).resolve(),
    )


def judged(
    output: str,
    check: Callable[[str], Any],
    refusals: tuple[type[Exception], ...] = (ContractError,),
) -> tuple[Any, float]:
    """``(value, valid)`` of an output for a judge: what ``check`` returns and 1.0, or, when it
    refuses the output, the output as plain JSON (None if it is not) and 0.0, so a judge
    still compares what the model wrote."""
    try:
        return check(output), 1.0
    except refusals:
        try:
            return json.loads(output), 0.0
        except json.JSONDecodeError:
            return None, 0.0


def compact(value: Any) -> str:
    """JSON as the runtime writes data parts into prompts and outputs: no spaces, UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
