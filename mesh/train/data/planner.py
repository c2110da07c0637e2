"""Planner SLM data: a request no workflow covers in, a plan over the mesh's skills out.

The planner SLM (:class:`~mesh.planner.generate.PlanGenerator`) writes
``{"s0": {"skill", "input"}, ...}`` under a grammar built from the skills registered now;
each step's input binds to the request text (``$input``) or to an earlier step. Within
that, a request kind fixes its plan (:data:`PLANS`); requests are composed from frames and
clauses (see ``_CLAUSES``), so held-out splits read combinations never trained on:

- read a customer message: classify it, extract its fields, both (in the order asked),
  draft the reply, or classify and draft;
- staff lookups by order id or email: extract the fields, let the tool-caller propose the
  call from them, run it (and draft a reply from the result when asked). The tool-caller
  gets the fields object, not the raw request: it was trained on structured input;
- proposals for changes (cancel, refund, new address): extract and propose, never execute.
  A plan that a model wrote has no idempotency key, so the tools agent refuses side
  effects from it anyway; the proposal is the answer a person (or a workflow) acts on.

The prompt is what the runtime renders (:func:`~mesh.plans.generated.plan_input`: the
registered skills, then the request); the target is the compact JSON the grammar emits.
Some examples list a subset of the skills or extra ones (another mesh's agents), so the
model reads the list instead of assuming it. Request phrasings are split by position
like the message templates; the embedded customer messages and entity values come from
:mod:`.messages` and :mod:`.entities`, so held-out splits share nothing with training.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from random import Random
from typing import Any

from jsonschema import Draft202012Validator

from mesh.plans.generated import plan_input, plan_schema, to_plan
from mesh.plans.model import PlanError, validate_plan
from mesh.train.data.contract import ContractError, compact, judged, mesh_skills
from mesh.train.data.dataset import Example, Stream, Task
from mesh.train.data.entities import Entities, Split
from mesh.train.data.messages import INTENTS, Message, compose, held_out

CLASSIFY, EXTRACT, PROPOSE, EXECUTE, REPLY = (
    "classify_intent",
    "extract_fields",
    "propose_tool_call",
    "execute_tool",
    "draft_reply",
)

PLANS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "classify": ((CLASSIFY, "$input"),),
    "extract": ((EXTRACT, "$input"),),
    "classify_extract": ((CLASSIFY, "$input"), (EXTRACT, "$input")),
    "extract_classify": ((EXTRACT, "$input"), (CLASSIFY, "$input")),
    "reply": ((REPLY, "$input"),),
    "classify_reply": ((CLASSIFY, "$input"), (REPLY, "$input")),
    "lookup": ((EXTRACT, "$input"), (PROPOSE, "$s0"), (EXECUTE, "$s1")),
    "lookup_reply": ((EXTRACT, "$input"), (PROPOSE, "$s0"), (EXECUTE, "$s1"), (REPLY, "$s2")),
    "propose": ((EXTRACT, "$input"), (PROPOSE, "$s0")),
}
"""Request kind -> its plan's steps (skill, input binding), in order."""

# Requests are composed: a frame (how the ask is put) around one or two clauses (what to
# do). Each list is split by position (every 7th held out for validation, every 7th for
# test), so held-out requests combine frames and clauses training never saw. Clause order
# is step order: "extract ... then classify" plans extract_fields first.
_CLAUSES: Mapping[str, tuple[str, ...]] = {
    "classify": (
        "classify it",
        "label its intent",
        "tag the intent",
        "give me the intent",
        "work out the intent",
        "categorise it",
        "find its intent",
        "tell me the intent",
        "identify the intent",
        "sort it by intent",
        "name the intent",
        "decide the intent",
        "triage it by intent",
        "put an intent on it",
        "classify the request",
        "get the intent label",
        "say which intent it is",
        "figure out the intent",
        "pick the intent category",
        "assign an intent",
        "determine what kind of request it is",
    ),
    "extract": (
        "extract its fields",
        "pull out the details",
        "list the facts it states",
        "get the order id and contact details",
        "parse it into fields",
        "extract the order details",
        "capture the fields",
        "read out the fields",
        "grab the customer's details",
        "turn it into JSON fields",
        "pull the order number and email out",
        "extract the entities",
        "fill in the ticket fields",
        "get the structured fields",
        "collect the details it gives",
        "extract the data",
        "pick out the order id, name and amount",
        "copy out the key fields",
        "find the order id and the other fields",
        "structure its details",
        "get me its fields",
    ),
    "reply": (
        "draft a reply",
        "write an answer",
        "respond to the customer",
        "compose a reply",
        "write back to the customer",
        "prepare a response",
        "suggest a reply",
        "answer the customer",
        "draft the customer reply",
        "write the response",
        "reply politely",
        "draft an email back",
        "put together an answer",
        "write a short reply",
    ),
    "propose": (
        "propose the tool call, without running it",
        "suggest the order action but don't execute it",
        "work out which tool call fits, no execution",
        "prepare the action for review only",
        "tell me which call to make, but do not make it",
        "draft the tool call for me to check",
        "propose an order action for approval",
        "set up the tool call without executing it",
        "say which order operation would handle it, don't run it",
        "plan the order action, no execution",
        "suggest the function call to review",
        "prepare, but don't perform, the change",
        "propose the call we would run",
        "draft the action for a human to approve",
    ),
    "lookup": (
        "look up {ref}",
        "pull up the record for {ref}",
        "check the status of {ref}",
        "find {ref} in the system",
        "fetch the details for {ref}",
        "show me {ref}",
        "bring up everything on {ref}",
        "check {ref} in the database",
        "get the order info for {ref}",
        "search our orders for {ref}",
        "look into {ref}",
        "query the order database for {ref}",
        "run a lookup on {ref}",
        "retrieve {ref} from the order system",
        "check our records for {ref}",
        "open the order file for {ref}",
        "see what we have on {ref}",
        "find the orders for {ref}",
        "dig up {ref}",
        "look for {ref} in the orders",
        "pull {ref} from the database",
    ),
    "answer": (
        "draft a reply to the customer",
        "write the customer an answer",
        "respond to the customer about it",
        "draft an email to the customer",
        "prepare a reply for the customer",
        "write back to the customer",
        "compose an answer",
        "reply to the customer with what you find",
        "suggest a response to the customer",
        "draft our reply",
        "get back to the customer",
        "write the reply",
        "let the customer know in a reply",
        "put together a reply for them",
    ),
}

_FRAMES: Mapping[str, tuple[str, ...]] = {
    "one": (
        "{a}: {message}",
        "Please {a}. {message}",
        "Could you {a}? {message}",
        "{a} for this message: {message}",
        "I need you to {a}: {message}",
        "Can you {a} for me? {message}",
        "{a}, please: {message}",
        "Here is a ticket, {a}: {message}",
        "Customer message below, {a}. {message}",
        "For this email, {a}: {message}",
        "Task: {a}. Message: {message}",
        "{a} - {message}",
        "New ticket. {a}: {message}",
        "{a} on this one: {message}",
    ),
    "two": (
        "{a} and {b}: {message}",
        "{a}, then {b}: {message}",
        "First {a}, then {b}. {message}",
        "{a} and after that {b}: {message}",
        "Please {a} and then {b}. {message}",
        "Could you {a} and {b}? {message}",
        "{a}; afterwards {b}: {message}",
        "For this message, {a} and then {b}: {message}",
        "Two things: {a}, and {b}. {message}",
        "Task: {a}, then {b}. Message: {message}",
        "{a} first and {b} second: {message}",
        "I need you to {a} and {b}: {message}",
        "New ticket. {a}, and then {b}: {message}",
        "Step one, {a}; step two, {b}. {message}",
    ),
    "lookup": (
        "{a}",
        "{a}.",
        "Please {a}.",
        "Can you {a}?",
        "Staff request: {a}.",
        "Could you {a} for me?",
        "I need you to {a}.",
        "Quick one: {a}.",
        "{a}, please.",
        "Hey, {a}.",
        "Internal: {a}.",
        "{a} for me.",
        "Urgent: {a}.",
        "Would you {a}?",
    ),
    "lookup_reply": (
        "{a} and then {b}.",
        "{a}, then {b}.",
        "First {a}, then {b}.",
        "Please {a} and {b}.",
        "{a}; afterwards {b}.",
        "Can you {a} and {b}?",
        "{a} and {b}.",
        "Staff request: {a}, then {b}.",
        "{a} and after that {b}.",
        "Could you {a} and then {b}?",
        "I need you to {a} and {b}.",
        "Two things: {a}, and {b}.",
        "{a}, and once you have it, {b}.",
        "Quick one: {a} and {b}.",
    ),
}

_KINDS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "classify": ("one", ("classify",)),
    "extract": ("one", ("extract",)),
    "reply": ("one", ("reply",)),
    "propose": ("one", ("propose",)),
    "classify_extract": ("two", ("classify", "extract")),
    "extract_classify": ("two", ("extract", "classify")),
    "classify_reply": ("two", ("classify", "reply")),
    "lookup": ("lookup", ("lookup",)),
    "lookup_reply": ("lookup_reply", ("lookup", "answer")),
}
"""Request kind -> its frame list and clause lists."""

_EXTRA_SKILLS = (
    "echo",
    "tally",
    "translate_text",
    "summarize_text",
    "detect_language",
    "score_sentiment",
    "search_docs",
    "send_email",
)
"""Skills other meshes register: listed in some prompts, never in a target."""

SKILL_VARIATION = 0.3
"""Share of examples whose prompt lists a subset of the mesh's skills or extra ones."""


def templates_of(group: str, split: Split) -> tuple[str, ...]:
    """The phrasings of one list (``frame:<name>`` or ``clause:<name>``) in one split: every
    7th held out, like the message templates."""
    kind, _, name = group.partition(":")
    phrasings = (_FRAMES if kind == "frame" else _CLAUSES)[name]
    return tuple(t for i, t in enumerate(phrasings) if held_out(i) == split)


def all_groups() -> tuple[str, ...]:
    """Every phrasing list's name."""
    return (*(f"frame:{n}" for n in _FRAMES), *(f"clause:{n}" for n in _CLAUSES))


def plan_text(kind: str) -> str:
    """The target: the kind's plan as the constrained decoder writes it (compact, s0.. order)."""
    return compact(
        {
            f"s{k}": {"skill": skill, "input": binding}
            for k, (skill, binding) in enumerate(PLANS[kind])
        }
    )


class PlannerTask(Task):
    """Every request kind equally often, over the skills the mesh's agents offer."""

    agent = "planner"

    def __init__(self) -> None:
        super().__init__()
        self.skills = mesh_skills()
        needed = {skill for plan in PLANS.values() for skill, _ in plan}
        if not needed <= set(self.skills):
            raise ValueError(
                f"the planner's plans use skills no agent in services/ offers: "
                f"{sorted(needed - set(self.skills))}"
            )
        self.max_steps = len(self.contract.schema["anyOf"]) if self.contract.schema else 0

    def make(self, rng: Random, stream: Stream) -> Example:
        kind = rng.choice(sorted(PLANS))
        entities: dict[str, frozenset[str]] = {}
        frame_list, clause_lists = _KINDS[kind]
        frame = rng.choice(templates_of(f"frame:{frame_list}", stream.split))
        clauses = [
            rng.choice(templates_of(f"clause:{name}", stream.split)) for name in clause_lists
        ]
        templates = {frame, *clauses}
        values = dict(zip("ab", clauses, strict=False))
        if "{message}" in frame:
            message = _message(rng, stream, needs_reference=kind == "propose")
            values["message"] = message.text
            templates |= message.templates
            entities.update(message.entities)
        text = frame.format(**values)
        if "{ref}" in text:
            drawn = Entities(stream.split, rng, invented=stream.invented)
            ref = drawn.order_id() if rng.random() < 0.6 else drawn.email()
            text = text.replace("{ref}", ref)
            entities = {k: frozenset(v) for k, v in drawn.used.items()}
        text = text[0].upper() + text[1:]
        skills = self._listed(rng, kind)
        target = plan_text(kind)
        return self.verify(
            Example(
                input=plan_input(text, skills),
                prompt=self.contract.render(plan_input(text, skills)),
                target=target,
                expected=json.loads(target),
                templates=frozenset(f"planner:{t}" for t in templates),
                entities=entities,
            )
        )

    def _listed(self, rng: Random, kind: str) -> tuple[str, ...]:
        """The skills the prompt lists: the mesh's, or (sometimes) fewer or more."""
        if rng.random() >= SKILL_VARIATION:
            return self.skills
        needed = {skill for skill, _ in PLANS[kind]}
        kept = {s for s in self.skills if s in needed or rng.random() < 0.5}
        kept |= set(rng.sample(_EXTRA_SKILLS, rng.randint(0, 2)))
        return tuple(sorted(kept))

    def output_schema(self, example: Example) -> Mapping[str, Any]:
        """The plan schema over the skills this example's prompt lists."""
        return plan_schema(listed_skills(example.input), self.max_steps)

    def verify(self, example: Example) -> Example:
        """The target must be a valid plan over the listed skills and fit the decoder's schema."""
        try:
            check_plan(example.target, listed_skills(example.input), self.max_steps)
        except ContractError as exc:
            raise ContractError(f"planner generated a bad target: {exc}") from exc
        return example

    def judge(self, example: Example, output: str) -> dict[str, float]:
        value, valid = judged(
            output, lambda text: check_plan(text, listed_skills(example.input), self.max_steps)
        )
        expected = example.expected
        skills = (
            [step.get("skill") for step in value.values() if isinstance(step, dict)]
            if isinstance(value, dict)
            else []
        )
        return {
            "exact": float(value == expected),
            "valid": valid,
            "skills": float(skills == [step["skill"] for step in expected.values()]),
        }


def listed_skills(value: str) -> list[str]:
    """The skills a planner input lists (the inverse of :func:`plan_input`'s first line)."""
    return value.split("\n", 1)[0].split(", ")


def check_plan(text: str, skills: list[str], max_steps: int) -> dict[str, Any]:
    """Parses a generated plan; raises :class:`ContractError` unless the decoder's schema and
    :func:`validate_plan` both accept it over ``skills``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContractError(f"not JSON: {exc}") from exc
    errors = list(Draft202012Validator(plan_schema(skills, max_steps)).iter_errors(value))
    if errors:
        raise ContractError(f"not a plan over {', '.join(skills)}: {errors[0].message}")
    try:
        validate_plan(to_plan(value), skills={skill: skill for skill in skills})
    except (ValueError, PlanError) as exc:
        raise ContractError(f"invalid plan: {exc}") from exc
    return value


def _message(rng: Random, stream: Stream, *, needs_reference: bool) -> Message:
    """A customer message; for a proposal one naming an order id or an email."""
    intents = [i for i in INTENTS if i != "general_question"] if needs_reference else list(INTENTS)
    for _ in range(100):
        message = compose(rng, stream.split, invented=stream.invented, intent=rng.choice(intents))
        if not needs_reference or message.fields.get("order_id") or message.fields.get("email"):
            return message
    raise RuntimeError("no message naming an order id or an email")
