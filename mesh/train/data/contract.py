"""An SLM agent's prompt and output contract, read from its ``agent.yaml``.

The service spec is the single source: the runtime renders ``options.prompt`` and
constrains the output with ``options.output``; training renders the same prompt and
checks every target against the same labels or schema, so the two cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from mesh.config import ServiceSpec
from mesh.slm.executor import OutputOptions
from mesh.slm.grammar import GroundedText, invented_facts, value_strings
from mesh.slm.validation import OutputValidator

SERVICES_DIR = Path(__file__).resolve().parents[3] / "services"
"""``services/`` of this checkout, where the agents' specs live."""

GROUNDED = "x-grounded"
"""Schema keyword: this string must be copied verbatim from the input."""


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

    def render(self, value: str) -> str:
        """The prompt with ``{input}`` filled in, exactly as the executor renders it."""
        return self.prompt.format(input=value)

    def check(self, output: str, *, source: str | None = None) -> Any:
        """Parses ``output`` and raises :class:`ContractError` unless it is allowed.

        Labels must be one of the set; JSON must parse and validate against the schema,
        and with ``source`` given every grounded string must be a span of it. Returns the
        label, the parsed JSON or the text.
        """
        if self.labels is not None:
            if output not in self.labels:
                raise ContractError(f"{output!r} is not one of {', '.join(self.labels)}")
            return output
        if self.schema is None:
            if not output.strip():
                raise ContractError("empty reply")
            if self.text is not None and source is not None:
                invented = invented_facts(self.text.with_source(source), output)
                if invented:
                    raise ContractError(f"{invented[0]!r} is not a fact of the input")
            return output
        try:
            value = json.loads(output)
        except json.JSONDecodeError as exc:
            raise ContractError(f"not JSON: {exc}") from exc
        errors = sorted(_validator(self.schema).iter_errors(value), key=lambda e: e.path)
        if errors:
            raise ContractError(f"schema violation: {errors[0].message}")
        if source is not None:
            for pointer, text, grounding in grounded_values(self.schema, value):
                if isinstance(grounding, str):
                    if text not in value_strings(source, grounding):
                        raise ContractError(f"{pointer}: {text!r} is not one of the input's "
                                            f"values at {grounding or '/'}")
                elif text not in source:
                    raise ContractError(f"{pointer}: {text!r} is not a span of the input")
        return value


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
    text = OutputOptions.model_validate(output).constraint() if "grounded_text" in output \
        else None
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
    from mesh.planner.generate import DEFAULT_MAX_STEPS, DEFAULT_PROMPT, plan_schema

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
    output: str, check: Callable[[str], Any], refusals: tuple[type[Exception], ...] = (ContractError,)
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


def grounded_values(
    schema: Mapping[str, Any], value: Any, pointer: str = ""
) -> Iterator[tuple[str, str, bool | str]]:
    """Every ``(pointer, string, grounding)`` in ``value`` whose schema is marked
    ``x-grounded`` (``True``, or the JSON Pointer its value is copied from whole).

    ``oneOf``/``anyOf`` follow the branch the value validates against.
    """
    for keyword in ("oneOf", "anyOf"):
        if keyword in schema:
            for branch in schema[keyword]:
                if _validator(branch).is_valid(value):
                    yield from grounded_values(branch, value, pointer)
                    break
    if isinstance(value, str) and schema.get(GROUNDED) not in (None, False):
        yield pointer, value, schema[GROUNDED]
    elif isinstance(value, dict):
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                yield from grounded_values(properties[key], item, f"{pointer}/{key}")


def _validator(schema: Mapping[str, Any]) -> Draft202012Validator:
    """The runtime's validator (decimal ``multipleOf``), with formats checked too."""
    return OutputValidator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
