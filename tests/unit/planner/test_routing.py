"""The SLM-first router's ordering and thresholds, and the cost ledger's arithmetic."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.json_format import MessageToJson

from mesh.a2a.cards import Endpoints, ModelFacts, build_card
from mesh.config import ServiceSpec, SkillSpec
from mesh.planner.ledger import CostLedger
from mesh.planner.routing import Provider, build_routes, largest_parameters
from mesh.planner.steps import Outcome, escalation_reason


@dataclass
class FakeReplica:
    """The fields of a registry Replica the router reads."""

    agent: str
    skills: list[str]
    card_json: str = ""
    draining: bool = False


def _card(agent: str, facts: ModelFacts | None) -> str:
    spec = ServiceSpec(name=agent, skills=[SkillSpec(id="classify", name="c", description="c")])
    card = build_card(
        spec,
        Endpoints.for_host("127.0.0.1", 1, 2),
        bearer_auth=False,
        extensions=[facts.extension()] if facts else (),
    )
    return MessageToJson(card)


def test_card_round_trip_of_model_facts() -> None:
    facts = ModelFacts("student", 250_000, "transformers", -0.4)
    assert ModelFacts.from_card_json(_card("a", facts)) == facts
    assert ModelFacts.from_card_json(_card("a", None)) is None
    assert ModelFacts.from_card_json("not json") is None


def test_routes_put_the_smallest_model_first_and_unknown_sizes_last() -> None:
    replicas = [
        FakeReplica("llm", ["classify"], _card("llm", None)),
        FakeReplica(
            "teacher", ["classify", "extract"], _card("teacher", ModelFacts("t", 2_000_000))
        ),
        FakeReplica(
            "student", ["classify"], _card("student", ModelFacts("s", 200_000, escalate_below=-0.3))
        ),
        FakeReplica("gone", ["classify"], _card("gone", ModelFacts("g", 1)), draining=True),
        FakeReplica("planner", ["classify"], _card("planner", ModelFacts("p", 1))),
    ]
    routes = build_routes(replicas, exclude="planner", default_escalate_below=-1.0)
    assert [p.agent for p in routes["classify"]] == ["student", "teacher", "llm"]
    # The card's threshold wins over the planner's default; the last provider never escalates.
    assert [p.escalate_below for p in routes["classify"]] == [-0.3, -1.0, None]
    assert routes["extract"] == (Provider("teacher", "t", 2_000_000, None),)
    assert largest_parameters(routes["classify"]) == 2_000_000


def test_escalation_reasons() -> None:
    unsure = Provider("s", parameters=10, escalate_below=-0.5)
    assert escalation_reason(Outcome("ok", value=1, usage={"mean_logprob": -0.2}), unsure) is None
    reason = escalation_reason(Outcome("ok", value=1, usage={"mean_logprob": -0.9}), unsure)
    assert reason is not None
    assert reason.startswith("low confidence")
    failed = escalation_reason(Outcome("failed", error="invalid output: label"), Provider("s"))
    assert failed == "failed: invalid output: label"
    # No usage (a non-model agent) or no threshold: the answer stands.
    assert escalation_reason(Outcome("ok", value=1), unsure) is None
    assert (
        escalation_reason(Outcome("ok", value=1, usage={"mean_logprob": -9.0}), Provider("s"))
        is None
    )


def _call(agent: str, params: int, tokens: tuple[int, int]) -> dict[str, object]:
    return {
        "agent": agent,
        "model": agent,
        "parameters": params,
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
    }


def test_ledger_prices_calls_and_the_all_largest_baseline() -> None:
    ledger = CostLedger()
    # Answered by the student (100 params), teacher 1000: baseline prices the same tokens at 1000.
    ledger.add(
        "a", Outcome("ok", value=1, baseline_parameters=1000, calls=[_call("student", 100, (8, 2))])
    )
    # Escalated: both calls are paid, the baseline only the teacher's.
    ledger.add(
        "b",
        Outcome(
            "ok",
            value=1,
            baseline_parameters=1000,
            calls=[_call("student", 100, (8, 2)), _call("teacher", 1000, (8, 3))],
            escalations=[{"from": "student", "to": "teacher", "reason": "low confidence"}],
        ),
    )
    # A skill with one provider: its usage is priced and is its own baseline.
    ledger.add(
        "c",
        Outcome(
            "ok",
            value=1,
            agent="extractor",
            usage={"model": "x", "parameters": 500, "input_tokens": 4, "output_tokens": 6},
        ),
    )
    ledger.add("d", Outcome("skipped"))
    cost = ledger.to_json()
    actual = 2 * 100 * 10 + 2 * 100 * 10 + 2 * 1000 * 11 + 2 * 500 * 10
    baseline = 2 * 1000 * 10 + 2 * 1000 * 11 + 2 * 500 * 10
    assert cost["flops"] == actual
    assert cost["baseline_flops"] == baseline
    assert cost["ratio"] == round(baseline / actual, 3)
    assert cost["routed_steps"] == 2
    assert cost["first_choice_share"] == 0.5
    assert cost["escalations"] == 1
    assert ledger.escalations == [
        {"step": "b", "from": "student", "to": "teacher", "reason": "low confidence"}
    ]
    by_model = {row["model"]: row for row in cost["models"]}
    assert by_model["student"]["calls"] == 2
    assert by_model["teacher"]["output_tokens"] == 3


def test_ledger_without_model_calls_has_no_ratio() -> None:
    ledger = CostLedger()
    ledger.add("f", Outcome("ok", value=1))
    assert ledger.to_json()["ratio"] is None
    assert ledger.to_json()["models"] == []


def test_merged_ledgers_equal_one_ledger_of_all_steps() -> None:
    from mesh.planner.ledger import merge_costs

    steps = [
        (
            "a",
            Outcome("ok", value=1, baseline_parameters=1000, calls=[_call("student", 100, (8, 2))]),
        ),
        (
            "b",
            Outcome(
                "ok",
                value=1,
                baseline_parameters=1000,
                calls=[_call("student", 100, (8, 2)), _call("teacher", 1000, (8, 3))],
                escalations=[{"from": "student", "to": "teacher", "reason": "low confidence"}],
            ),
        ),
        (
            "c",
            Outcome("ok", value=1, baseline_parameters=1000, calls=[_call("student", 100, (9, 1))]),
        ),
    ]
    whole, first, second = CostLedger(), CostLedger(), CostLedger()
    for i, (node, outcome) in enumerate(steps):
        whole.add(node, outcome)
        (first if i < 2 else second).add(node, outcome)
    merged = merge_costs([first.to_json(), second.to_json()])
    expected = whole.to_json()
    assert {k: merged[k] for k in expected} == expected
