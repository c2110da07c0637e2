"""Plans: typed DAGs of steps, their bindings, and the checks that run before anything does.

A plan is a list of steps and an ``output``. Each step is an *action* (call an agent by
``skill``, or one of the planner's named functions by ``fn``) or a *map* (``for_each`` item
of a list, run a sub-plan; the step's value is the list of the sub-plans' outputs: the
fan-out / fan-in of the mesh).

Bindings are templates: any JSON value in which a string of the form ``$name`` or
``$name.path.to.field`` stands for a value known at run time: ``$input`` (the plan's
input), ``$item`` (inside a map's ``input``: the current item) or the output of another
step of the same plan (``$intent.label``). ``$$text`` is the literal string ``$text``.
A step runs after every step it refers to; a ``when`` condition (a binding, or
``{any: [...]}``, ``{all: [...]}``, ``{not: ...}``) skips it when false, and a skipped
step's value is ``null``.

The pydantic models here are the source of truth; ``protos/slmesh/planner/v1/plan.proto``
mirrors them for gRPC callers (:func:`plan_to_proto`, :func:`plan_from_proto`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from graphlib import CycleError, TopologicalSorter
from typing import Any, Literal

import jsonschema
from google.protobuf import json_format
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mesh.schema import SchemaValidator

STEP_ID = r"^[a-z][a-z0-9_]{0,62}$"
RESERVED = frozenset({"input", "item"})
_REF = re.compile(r"^\$([a-z][a-z0-9_]*)((?:\.[A-Za-z0-9_-]+)*)$")


class PlanError(ValueError):
    """A plan is malformed, refers to something unknown, or has a cycle; nothing ran."""


class Step(BaseModel):
    """One node of a plan: an agent call, a planner function, or a map over a list."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        pattern=STEP_ID, description="Unique within its plan; other steps bind to it as $id."
    )
    skill: str | None = Field(
        None, description="A2A skill id; resolved to an agent through the registry."
    )
    fn: str | None = Field(
        None, description="Name of a planner function (deterministic glue, no model)."
    )
    for_each: Any = Field(
        None, description="Binding to a list: the step runs its sub-plan once per item."
    )
    plan: Plan | None = Field(None, description="The sub-plan of a map step.")
    workflow: str | None = Field(
        None, description="A map step's sub-plan taken from a named workflow."
    )
    input: Any = Field(
        "$input", description="Template of the step's input (the sub-plan's $input for a map)."
    )
    when: Any = Field(
        None, description="Condition; the step is skipped (value null) when it is false."
    )
    timeout_s: float | None = Field(None, gt=0, description="Deadline of one attempt.")
    retries: int = Field(2, ge=0, le=10, description="Further attempts after a retryable failure.")
    idempotency_key: bool = Field(
        False,
        description="Add a key derived from task and step to the input (side-effecting tools).",
    )
    expect: dict[str, Any] | None = Field(
        None,
        description="JSON schema the step's value must satisfy; an agent answer that does not "
        "fails the attempt (retried like a failed task).",
    )
    check: str | None = Field(
        None,
        description="Skill steps: a planner function reading {'input', 'value'} that returns "
        "the answer's problems (empty: usable); an answer with problems goes on to the next, "
        "larger provider of the skill like a failed one.",
    )
    fallback: str | None = Field(
        None,
        description="Skill steps with a check: a planner function building the step's value "
        "from its input when no provider's answer passes the check.",
    )
    on_error: Literal["fail", "continue"] = Field(
        "fail",
        description=(
            "Map steps: 'continue' keeps going when an item fails (its entry holds the error)."
        ),
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        kinds = [k for k in ("skill", "fn") if getattr(self, k) is not None]
        is_map = self.for_each is not None
        if is_map:
            if kinds:
                raise ValueError(f"step {self.id!r}: a for_each step runs a plan, not {kinds[0]}")
            if (self.plan is None) == (self.workflow is None):
                raise ValueError(
                    f"step {self.id!r}: for_each needs exactly one of plan or workflow"
                )
        else:
            if len(kinds) != 1:
                raise ValueError(f"step {self.id!r}: needs exactly one of skill, fn or for_each")
            if self.plan is not None or self.workflow is not None:
                raise ValueError(f"step {self.id!r}: plan/workflow belong to for_each steps")
        if (self.check is not None or self.fallback is not None) and self.skill is None:
            raise ValueError(f"step {self.id!r}: check and fallback belong to skill steps")
        if self.fallback is not None and self.check is None:
            raise ValueError(f"step {self.id!r}: a fallback needs a check to fall back from")
        return self

    @property
    def is_map(self) -> bool:
        return self.for_each is not None


class Plan(BaseModel):
    """A DAG of steps and the template of its result."""

    model_config = ConfigDict(extra="forbid")

    steps: list[Step] = Field(min_length=1)
    output: Any = Field(
        None, description="Template of the plan's result; default: every step's value."
    )

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)


Step.model_rebuild()


# -- bindings ----------------------------------------------------------------------


def references(template: Any) -> Iterator[str]:
    """Names (``input``, ``item`` or step ids) a template refers to."""
    if isinstance(template, str):
        match = _REF.match(template)
        if match:
            yield match.group(1)
    elif isinstance(template, Mapping):
        for value in template.values():
            yield from references(value)
    elif isinstance(template, list):
        for value in template:
            yield from references(value)


def render(template: Any, scope: Mapping[str, Any]) -> Any:
    """The template with every binding replaced by its value from ``scope``.

    A path through a missing key or a ``null`` gives ``null``, like an absent field.
    """
    if isinstance(template, str):
        if template.startswith("$$"):
            return template[1:]
        match = _REF.match(template)
        if not match:
            return template
        value = scope.get(match.group(1))
        for key in filter(None, match.group(2).split(".")):
            if isinstance(value, Mapping):
                value = value.get(key)
            elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            else:
                return None
        return value
    if isinstance(template, Mapping):
        return {key: render(value, scope) for key, value in template.items()}
    if isinstance(template, list):
        return [render(value, scope) for value in template]
    return template


def holds(condition: Any, scope: Mapping[str, Any]) -> bool:
    """Whether a ``when`` condition is true (``None`` means no condition)."""
    if condition is None:
        return True
    if isinstance(condition, Mapping) and len(condition) == 1:
        ((op, arg),) = condition.items()
        if op == "any":
            return any(holds(c, scope) for c in arg)
        if op == "all":
            return all(holds(c, scope) for c in arg)
        if op == "not":
            return not holds(arg, scope)
    return bool(render(condition, scope))


def _condition_ok(condition: Any) -> bool:
    if condition is None or isinstance(condition, str):
        return True
    if isinstance(condition, Mapping) and len(condition) == 1:
        ((op, arg),) = condition.items()
        if op in ("any", "all"):
            return isinstance(arg, list) and bool(arg) and all(_condition_ok(c) for c in arg)
        if op == "not":
            return _condition_ok(arg)
    return False


# -- validation --------------------------------------------------------------------


def step_dependencies(step: Step) -> set[str]:
    """Names a step waits for: everything its input, condition and list refer to."""
    names = (
        set(references(step.input)) | set(references(step.when)) | set(references(step.for_each))
    )
    return names


def validate_plan(
    plan: Plan,
    *,
    skills: Mapping[str, str] | None = None,
    functions: Mapping[str, Any] | None = None,
    workflows: Mapping[str, Plan] | None = None,
    where: str = "plan",
) -> list[str]:
    """Checks a plan before it runs; returns its steps in an order that respects dependencies.

    ``skills`` maps the skills known to the mesh to their agents (unknown skills are
    rejected when given), ``functions`` the planner functions, ``workflows`` the named
    sub-plans. Raises :class:`PlanError` naming the step and the problem.
    """
    ids = [s.id for s in plan.steps]
    seen: set[str] = set()
    for step_id in ids:
        if step_id in seen:
            raise PlanError(f"{where}: duplicate step id {step_id!r}")
        if step_id in RESERVED:
            raise PlanError(f"{where}: step id {step_id!r} is reserved")
        seen.add(step_id)
    graph: dict[str, set[str]] = {}
    for step in plan.steps:
        here = f"{where}: step {step.id!r}"
        allowed = seen | {"input"} | ({"item"} if step.is_map else set())
        for name in step_dependencies(step):
            if name == "item" and not step.is_map:
                raise PlanError(f"{here}: $item is only bound in a for_each step's input")
            if name not in allowed:
                raise PlanError(f"{here}: binds to ${name}, which is not a step of this plan")
            if name == step.id:
                raise PlanError(f"{here}: refers to itself")
        if "item" in set(references(step.for_each)) or "item" in set(references(step.when)):
            raise PlanError(f"{here}: $item is only bound in a for_each step's input")
        if not _condition_ok(step.when):
            raise PlanError(
                f"{here}: 'when' must be a binding or {{any|all: [...]}} / {{not: ...}}"
            )
        if step.skill is not None and skills is not None and step.skill not in skills:
            known = ", ".join(sorted(skills)) or "none registered"
            raise PlanError(f"{here}: unknown skill {step.skill!r} (known: {known})")
        for function in (step.fn, step.check, step.fallback):
            if function is not None and functions is not None and function not in functions:
                known = ", ".join(sorted(functions))
                raise PlanError(f"{here}: unknown function {function!r} (known: {known})")
        if step.expect is not None:
            try:
                SchemaValidator.check_schema(step.expect)
            except jsonschema.SchemaError as exc:
                raise PlanError(
                    f"{here}: 'expect' is not a valid JSON schema: {exc.message}"
                ) from exc
        if step.workflow is not None and workflows is not None and step.workflow not in workflows:
            raise PlanError(f"{here}: unknown workflow {step.workflow!r}")
        if step.plan is not None:
            validate_plan(
                step.plan,
                skills=skills,
                functions=functions,
                workflows=workflows,
                where=f"{where}.{step.id}",
            )
        graph[step.id] = step_dependencies(step) - RESERVED
    for name in references(plan.output):
        if name not in seen | {"input"}:
            raise PlanError(f"{where}: output binds to ${name}, which is not a step of this plan")
    try:
        return list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise PlanError(f"{where}: the steps form a cycle: {cycle}") from exc


def count_actions(plan: Plan, workflows: Mapping[str, Plan] | None = None) -> int:
    """Action steps of a plan, counting a map's sub-plan once (its size is known only at run
    time)."""
    total = 0
    for step in plan.steps:
        if step.is_map:
            sub = step.plan or (workflows or {}).get(step.workflow or "")
            total += count_actions(sub, workflows) if sub else 0
        else:
            total += 1
    return total


# -- protobuf mirror -------------------------------------------------------------------


def plan_to_proto(plan: Plan) -> Any:
    """The plan as a ``slmesh.planner.v1.Plan`` message."""
    from mesh.proto.slmesh.planner.v1 import plan_pb2

    return json_format.ParseDict(plan.model_dump(exclude_none=True), plan_pb2.Plan())


def plan_from_proto(message: Any) -> Plan:
    """A ``slmesh.planner.v1.Plan`` message as a validated :class:`Plan`."""
    raw = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return Plan.model_validate(raw)
