"""The planner SLM's data: targets the constrained decoder can write, prompts the runtime
renders."""

from __future__ import annotations

import asyncio
import json
from functools import cache

import pytest

from mesh.planner.generate import PlanGenerator
from mesh.plans.generated import plan_schema, to_plan
from mesh.plans.model import PlanError, validate_plan
from mesh.slm.generation import Generation, GenerationRequest, GenerationStream, Usage
from mesh.slm.grammar import JsonOutput, compile_grammar
from mesh.slm.guide import TokenVocabulary
from mesh.train.data.contract import load_contract, mesh_skills
from mesh.train.data.dataset import SEEN, TEST, TRAIN, VALIDATION, Example, Stream
from mesh.train.data.entities import SPLITS
from mesh.train.data.planner import (
    PLANS,
    PlannerTask,
    all_groups,
    listed_skills,
    plan_text,
    templates_of,
)
from tests.support.tiny_slm import bpe_tokenizer

COUNT = 200
MESH_SKILLS = {
    "classify_intent",
    "extract_fields",
    "propose_tool_call",
    "execute_tool",
    "draft_reply",
}


@cache
def _task() -> PlannerTask:
    return PlannerTask()


@cache
def _examples(stream: Stream) -> tuple[Example, ...]:
    return tuple(_task().examples(stream, 0, COUNT))


def test_the_plans_use_the_skills_the_agents_in_services_offer() -> None:
    assert set(mesh_skills()) == MESH_SKILLS
    assert {skill for plan in PLANS.values() for skill, _ in plan} == MESH_SKILLS


def test_request_phrasings_are_split_three_ways_and_held_out_ones_never_trained() -> None:
    for group in all_groups():
        per_split = [set(templates_of(group, split)) for split in SPLITS]
        assert all(per_split), group
        assert not (per_split[0] & per_split[1])
        assert not (per_split[0] & per_split[2])
        assert not (per_split[1] & per_split[2])
    train = set().union(*(e.templates for e in _examples(TRAIN) + _examples(SEEN)))
    for held_out in (VALIDATION, TEST):
        used = set().union(*(e.templates for e in _examples(held_out)))
        assert used, held_out.name
        assert not used & train, held_out.name


def test_every_kind_of_request_is_drawn_and_every_target_is_its_kinds_plan() -> None:
    targets = {e.target for e in _examples(TRAIN)}
    assert targets == {plan_text(kind) for kind in PLANS}
    assert plan_text("lookup") == (
        '{"s0":{"skill":"extract_fields","input":"$input"},'
        '"s1":{"skill":"propose_tool_call","input":"$s0"},'
        '"s2":{"skill":"execute_tool","input":"$s1"}}'
    )


@pytest.mark.parametrize("stream", [TRAIN, TEST])
def test_every_target_is_a_valid_plan_over_the_skills_its_prompt_lists(stream: Stream) -> None:
    max_steps = len(load_contract("planner").schema["anyOf"])  # type: ignore[index]
    for example in _examples(stream):
        skills = listed_skills(example.input)
        value = json.loads(example.target)
        assert example.target == json.dumps(value, separators=(",", ":"))  # compact, as decoded
        validate_plan(to_plan(value), skills={s: "agent" for s in skills})
        validate_plan(to_plan(value), skills={s: "agent" for s in MESH_SKILLS})
        assert len(value) <= max_steps


def test_every_target_is_accepted_token_by_token_by_the_decoders_grammar() -> None:
    tokenizer = bpe_tokenizer()
    vocab = TokenVocabulary(tokenizer, len(tokenizer))
    task = _task()
    for example in _examples(TEST)[:60]:
        guide = vocab.guide(
            compile_grammar(JsonOutput(task.output_schema(example)), vocab.representable)
        )
        for token in tokenizer.encode(example.target, add_special_tokens=False):
            assert vocab.allowed([guide])[0][token], (example.target, tokenizer.decode([token]))
            guide.consume(token)
        assert vocab.allowed([guide])[0][tokenizer.eos_token_id] or guide.finished, example.target


def test_a_target_that_names_an_unlisted_skill_is_refused() -> None:
    example = next(e for e in _examples(TRAIN) if "execute_tool" in e.target)
    narrowed = Example(
        example.input.replace("execute_tool, ", ""),
        example.prompt,
        example.target,
        example.expected,
        example.templates,
        example.entities,
    )
    with pytest.raises(ValueError, match="execute_tool"):
        _task().verify(narrowed)
    with pytest.raises(PlanError):
        validate_plan(to_plan(json.loads(example.target)), skills={"extract_fields": "x"})


class _Recorder:
    """An SLM backend that records the request and answers with a fixed plan."""

    model_name = "recorder"
    parameters = None

    def __init__(self, answer: str, mean_logprob: float) -> None:
        self.answer, self.mean_logprob = answer, mean_logprob
        self.requests: list[GenerationRequest] = []

    def check_output(self, output: object) -> None:
        return None

    def stream(self, request: GenerationRequest) -> GenerationStream:
        raise NotImplementedError

    async def generate(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        usage = Usage(1, 1, None, None, self.model_name, None, self.mean_logprob)
        return Generation(self.answer, "stop", usage, json.loads(self.answer))

    async def aclose(self) -> None:
        return None


def test_the_prompt_is_exactly_what_the_plan_generator_renders() -> None:
    example = next(e for e in _examples(TEST) if listed_skills(e.input) == sorted(MESH_SKILLS))
    text = example.input.split("\nRequest: ", 1)[1]
    backend = _Recorder(example.target, -0.01)
    contract = load_contract("planner")
    generator = PlanGenerator(
        "planner_slm", backend, contract.prompt, len(contract.schema["anyOf"])
    )  # type: ignore[index]
    plan = asyncio.run(generator.plan(text, {skill: "agent" for skill in MESH_SKILLS}))
    request = backend.requests[0]
    assert request.prompt == example.prompt
    assert isinstance(request.output, JsonOutput)
    assert request.output.schema == plan_schema(sorted(MESH_SKILLS), generator.max_steps)
    assert [s.skill for s in plan.steps] == [step["skill"] for step in example.expected.values()]


def test_an_unsure_planner_slm_gives_no_plan() -> None:
    """Below ``escalate_below`` the plan is refused: the next source or the rejection takes over."""
    answer = plan_text("classify")
    skills = {skill: "agent" for skill in MESH_SKILLS}
    sure = PlanGenerator("planner_slm", _Recorder(answer, -0.05), escalate_below=-0.1)
    assert asyncio.run(sure.plan("Classify this: hi", skills)).steps[0].skill == "classify_intent"
    unsure = PlanGenerator("planner_slm", _Recorder(answer, -0.5), escalate_below=-0.1)
    with pytest.raises(PlanError, match="planner_slm: unsure of its plan"):
        asyncio.run(unsure.plan("Integrate x squared from zero to one", skills))


def test_the_planner_slm_is_not_asked_about_requests_unrelated_to_the_mesh() -> None:
    """Under ``min_related`` (the router's closest-workflow score) no plan is written at all."""
    skills = {skill: "agent" for skill in MESH_SKILLS}
    backend = _Recorder(plan_text("classify"), -0.01)
    generator = PlanGenerator("planner_slm", backend, min_related=0.2)
    with pytest.raises(PlanError, match="planner_slm: not asked, the request is unrelated"):
        asyncio.run(generator.plan("Integrate x squared from zero to one", skills, related=0.1))
    assert not backend.requests
    plan = asyncio.run(generator.plan("Classify this: my parcel is late", skills, related=0.3))
    assert [s.skill for s in plan.steps] == ["classify_intent"]
