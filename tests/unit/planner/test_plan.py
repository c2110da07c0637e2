"""Plans: bindings, conditions, validation errors, the protobuf mirror, the shipped workflows."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mesh.planner.functions import FUNCTIONS
from mesh.planner.workflows import load_workflows
from mesh.plans.model import (
    Plan,
    PlanError,
    holds,
    plan_from_proto,
    plan_to_proto,
    render,
    validate_plan,
)

ROOT = Path(__file__).resolve().parents[3]
SKILLS = {
    "classify_intent": "classifier",
    "extract_fields": "extractor",
    "propose_tool_call": "tool-caller",
    "execute_tool": "tools",
    "draft_reply": "responder",
}


def plan(*steps: dict, output: object = None) -> Plan:
    return Plan.model_validate({"steps": list(steps), "output": output})


def test_render_replaces_bindings_and_paths() -> None:
    scope = {
        "input": {"message": "hi"},
        "fields": {"order_id": "ORD-1", "tags": ["a", "b"]},
        "intent": None,
    }
    template = {
        "m": "$input.message",
        "id": "$fields.order_id",
        "second": "$fields.tags.1",
        "missing": "$fields.nope.deeper",
        "null": "$intent.label",
        "lit": "$$input",
        "n": 3,
        "list": ["$input", "plain $text"],
    }
    assert render(template, scope) == {
        "m": "hi",
        "id": "ORD-1",
        "second": "b",
        "missing": None,
        "null": None,
        "lit": "$input",
        "n": 3,
        "list": [{"message": "hi"}, "plain $text"],
    }


def test_conditions() -> None:
    scope = {"fields": {"order_id": None, "email": "a@b.c"}, "call": None}
    assert holds(None, scope)
    assert holds({"any": ["$fields.order_id", "$fields.email"]}, scope)
    assert not holds({"all": ["$fields.order_id", "$fields.email"]}, scope)
    assert holds({"not": "$call"}, scope)
    assert not holds("$call", scope)


def test_validation_orders_steps_by_dependency() -> None:
    p = plan(
        {"id": "b", "fn": "identity", "input": "$a"},
        {"id": "a", "skill": "classify_intent"},
        {"id": "c", "fn": "identity", "input": ["$a", "$b"]},
    )
    order = validate_plan(p, skills=SKILLS, functions=FUNCTIONS)
    assert order.index("a") < order.index("b") < order.index("c")


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"id": "a", "skill": "summarize"}], "unknown skill 'summarize'"),
        ([{"id": "a", "fn": "os.system"}], "unknown function 'os.system'"),
        ([{"id": "a", "fn": "identity", "input": "$nope"}], "binds to $nope"),
        (
            [
                {"id": "a", "fn": "identity", "input": "$b"},
                {"id": "b", "fn": "identity", "input": "$a"},
            ],
            "cycle",
        ),
        ([{"id": "a", "fn": "identity", "input": "$a"}], "refers to itself"),
        ([{"id": "a", "fn": "identity"}, {"id": "a", "fn": "identity"}], "duplicate step id"),
        ([{"id": "input", "fn": "identity"}], "reserved"),
        ([{"id": "a", "fn": "identity", "input": "$item"}], "$item is only bound"),
        ([{"id": "a", "fn": "identity", "when": {"maybe": "$input"}}], "'when' must be"),
        ([{"id": "m", "for_each": "$input", "workflow": "nowhere"}], "unknown workflow"),
        (
            [{"id": "m", "for_each": "$input", "plan": {"steps": [{"id": "x", "skill": "nope"}]}}],
            "plan.m: step 'x': unknown skill",
        ),
    ],
)
def test_invalid_plans_are_rejected_with_the_step_and_reason(
    steps: list[dict], message: str
) -> None:
    with pytest.raises(PlanError) as info:
        validate_plan(plan(*steps), skills=SKILLS, functions=FUNCTIONS, workflows={})
    assert message in str(info.value)


@pytest.mark.parametrize(
    "step",
    [
        {"id": "a"},  # no kind
        {"id": "a", "skill": "x", "fn": "identity"},  # two kinds
        {"id": "a", "for_each": "$input"},  # map without plan
        {"id": "a", "skill": "x", "plan": {"steps": [{"id": "b", "fn": "identity"}]}},
        {"id": "Bad-Id", "fn": "identity"},
        {"id": "a", "fn": "identity", "retries": -1},
        {"id": "a", "fn": "identity", "surprise": 1},
    ],
)
def test_malformed_steps_fail_schema_validation(step: dict) -> None:
    with pytest.raises(ValidationError):
        plan(step)


def test_output_must_bind_to_known_steps() -> None:
    with pytest.raises(PlanError, match="output binds to \\$ghost"):
        validate_plan(plan({"id": "a", "fn": "identity"}, output={"x": "$ghost"}))


def test_proto_mirror_round_trips() -> None:
    original = plan(
        {
            "id": "intent",
            "skill": "classify_intent",
            "input": "$input.message",
            "timeout_s": 5,
            "retries": 0,
        },
        {
            "id": "each",
            "for_each": "$input.items",
            "input": {"message": "$item"},
            "on_error": "continue",
            "plan": {
                "steps": [{"id": "x", "fn": "identity", "when": {"not": "$input.skip"}}],
                "output": "$x",
            },
        },
        output={"intent": "$intent.label", "all": "$each"},
    )
    message = plan_to_proto(original)
    assert message.steps[0].retries == 0
    assert message.steps[0].HasField("retries")
    assert plan_from_proto(message) == original


def test_shipped_workflows_are_valid_against_the_demo_skills() -> None:
    workflows = load_workflows(ROOT / "services" / "planner" / "workflows")
    assert {"support_ticket", "support_batch", "order_lookup"} <= set(workflows)
    plans = {name: w.plan for name, w in workflows.items()}
    for workflow in workflows.values():
        validate_plan(workflow.plan, skills=SKILLS, functions=FUNCTIONS, workflows=plans)
    assert workflows["support_batch"].accepts({"messages": ["a"]})
    assert not workflows["support_batch"].accepts({"messages": []})
    assert not workflows["support_ticket"].accepts({"messages": ["a"]})


def test_support_functions() -> None:
    assert (
        FUNCTIONS["support.reply_facts"]({"intent": "track_shipment", "call": None, "result": None})
        is None
    )
    reply = FUNCTIONS["support.final_reply"](
        {"reply": None, "intent": "refund_request", "customer": "Ana Lima"}
    )
    assert reply.startswith("Hi Ana,")
    assert "order number" in reply
    summary = FUNCTIONS["support.summarize"](
        {
            "tickets": [
                {
                    "intent": "cancel_order",
                    "tool_call": {"name": "cancel_order"},
                    "tool_result": {"ok": False},
                },
                {"intent": "general_question", "tool_call": None},
                {"error": {"step": "tickets[2].intent", "message": "boom"}},
            ]
        }
    )
    assert summary == {
        "tickets": 3,
        "failed": 1,
        "tool_refused": 1,
        "by_intent": {"cancel_order": 1, "general_question": 1},
        "by_tool": {"cancel_order": 1, "none": 1},
    }


def test_generated_plan_schema_allows_only_registered_skills_and_backward_bindings() -> None:
    import jsonschema

    from mesh.plans.generated import plan_schema, to_plan

    schema = plan_schema(["echo", "extract_fields"], max_steps=3)
    check = jsonschema.Draft202012Validator(schema)
    good = {
        "s0": {"skill": "extract_fields", "input": "$input"},
        "s1": {"skill": "echo", "input": "$s0.order_id"},
    }
    assert check.is_valid(good)
    validate_plan(to_plan(good), skills={"echo": "echo", "extract_fields": "extractor"})
    assert not check.is_valid({"s0": {"skill": "rm_rf", "input": "$input"}})
    assert not check.is_valid(
        {"s0": {"skill": "echo", "input": "$s1"}, "s1": {"skill": "echo", "input": "$input"}}
    )  # forward binding
    assert not check.is_valid(
        {"s0": {"skill": "echo", "input": "$input.field"}}
    )  # the text has no fields
    assert not check.is_valid(
        {f"s{k}": {"skill": "echo", "input": "$input"} for k in range(4)}
    )  # too long


def test_the_router_sends_every_demo_message_to_support_and_refuses_unrelated_text() -> None:
    from mesh.planner.console import message_text, read_messages
    from mesh.planner.workflows import EmbeddingRouter

    router = EmbeddingRouter(
        load_workflows(ROOT / "services" / "planner" / "workflows"), threshold=0.35
    )
    for message in map(message_text, read_messages(ROOT / "demo" / "support_messages.txt")):
        route = router.route(message)
        assert route is not None, message
        assert route.workflow.name == "support_ticket", message
    for text in (
        "Integrate x squared from zero to one",
        "What's the weather in Paris?",
        "Write me a poem about the sea",
    ):
        assert router.route(text) is None, text


@pytest.mark.parametrize("value", [0, False, None, "", [], {"n": 0}])
def test_a_recorded_outcome_keeps_falsy_values(value: object) -> None:
    from mesh.planner.steps import Outcome

    back = Outcome.from_json(Outcome("ok", value=value, agent="echo", ms=1.5).to_json())
    assert back == Outcome("ok", value=value, agent="echo", ms=1.5)


def test_a_long_question_without_an_order_id_is_searched_within_the_faq_tools_limit() -> None:
    from mesh.planner.functions import FAQ_QUERY_CHARS, FUNCTIONS
    from mesh.tools.catalog import parse_call

    message = "Do you deliver to the islands, and what does it cost? " * 11
    call = FUNCTIONS["support.authorize_call"](
        {"call": None, "message": message, "sender": None, "english": True}
    )
    assert call["name"] == "search_faq"
    assert len(call["arguments"]["query"]) <= FAQ_QUERY_CHARS
    assert message.startswith(call["arguments"]["query"])
    parse_call(call)  # the tools agent accepts it


def test_a_side_question_is_searched_and_its_answer_follows_the_reply() -> None:
    from mesh.planner.functions import FUNCTIONS
    from mesh.tools.catalog import parse_call

    message = "Please cancel ORD-123456. And also: which payment methods do you take?"
    cancel = {"name": "cancel_order", "arguments": {"order_id": "ORD-123456", "reason": "x"}}
    sender = {"email": "a@example.com"}
    aside = FUNCTIONS["support.aside_call"]({"message": message, "call": cancel, "sender": sender})
    assert aside == {
        "name": "search_faq",
        "arguments": {"query": "which payment methods do you take?"},
        "principal": {"customer": "a@example.com"},
    }
    parse_call(aside)  # the tools agent accepts it
    faq_call = {"name": "search_faq", "arguments": {"query": message}}
    assert FUNCTIONS["support.aside_call"]({"message": message, "call": faq_call}) is None
    assert FUNCTIONS["support.aside_call"]({"message": message, "call": None}) is None

    case = {"english": True, "text": message}
    found = {"ok": True, "matches": [{"topic": "payment_methods", "answer": "We accept Visa."}]}
    reply = FUNCTIONS["support.final_reply"](
        {"reply": "Hello, done.", "case": case, "aside": found}
    )
    assert reply == "Hello, done. About your other question: We accept Visa."
    closing = FUNCTIONS["support.final_reply"](
        {"reply": "Hello, done. Is there anything else I can help with?", "case": case,
         "aside": found}
    )  # fmt: skip
    assert closing == (
        "Hello, done. About your other question: We accept Visa. "
        "Is there anything else I can help with?"
    )
    unanswered = FUNCTIONS["support.final_reply"](
        {"reply": "Hello, done.", "case": case, "aside": {"ok": True, "matches": []}}
    )
    assert unanswered.startswith("Hello, done. I could not answer your other question here")
    assert "support@example.com" in unanswered


def test_an_unreadable_order_number_is_asked_for_not_searched() -> None:
    from mesh.planner.functions import FUNCTIONS

    message = "where's ORD-12345? been waiting 3 weeks"
    call = FUNCTIONS["support.authorize_call"](
        {"call": None, "message": message, "sender": None, "english": True}
    )
    assert call is None
    reply = FUNCTIONS["support.final_reply"](
        {"reply": None, "case": {"english": True, "text": message}, "intent": "track_shipment"}
    )
    assert "ORD- and six digits" in reply


def test_a_process_question_read_as_an_order_request_still_offers_the_order_lookup() -> None:
    """The desk answers "how long till a refund is on my card?" as a general question (no
    order named), but the reply keeps the offer to check the order the classifier heard."""
    from mesh.support.replies import write_reply

    message = "after you approve a refund how long till the money is back on my card"
    acting = FUNCTIONS["support.desk_intent"]({"intent": "refund_request", "message": message})
    assert acting == "general_question"
    call = {"name": "search_faq", "arguments": {"query": message}}
    result = {"ok": True, "matches": [{"topic": "refund_time", "answer": "It takes 5 days."}]}
    case = {"intent": acting, "call": call, "result": result, "message": message}
    offered = FUNCTIONS["support.reply_facts"]({**case, "classified": "refund_request"})
    assert offered["intent"] == "refund_request"
    assert "order number" in write_reply(offered)
    asked = FUNCTIONS["support.reply_facts"]({**case, "classified": "general_question"})
    assert asked["intent"] == "general_question"
    assert "order number" not in write_reply(asked)


def test_a_request_about_an_unnamed_order_lists_a_verified_senders_orders() -> None:
    message = "Where is my parcel?"
    case = {"call": None, "message": message, "english": True, "intent": "track_shipment"}
    listed = FUNCTIONS["support.authorize_call"]({**case, "sender": {"email": "a@example.com"}})
    assert listed == {
        "name": "find_orders",
        "arguments": {"email": "a@example.com"},
        "principal": {"customer": "a@example.com"},
    }
    # Anonymous: nothing to look up, the reply asks for the order number; a general
    # question stays an FAQ search.
    assert FUNCTIONS["support.authorize_call"]({**case, "sender": None}) is None
    asked = FUNCTIONS["support.final_reply"](
        {"reply": None, "case": {"english": True, "text": message}, "intent": "track_shipment"}
    )
    assert "order number" in asked
    general = {**case, "intent": "general_question", "sender": {"email": "a@example.com"}}
    assert FUNCTIONS["support.authorize_call"](general)["name"] == "search_faq"


def test_a_request_about_an_unnamed_order_the_faq_knows_nothing_of_asks_for_the_order() -> None:
    message = "Where is my parcel?"
    faq = {"name": "search_faq", "arguments": {"query": message}}
    case = {
        "reply": "Hello, I'm sorry, I don't know the answer to that question.",
        "case": {"english": True, "text": message},
        "call": faq,
        "result": {"ok": True, "count": 0, "matches": []},
    }
    asked = FUNCTIONS["support.final_reply"]({**case, "intent": "track_shipment"})
    assert "order number" in asked
    assert "don't know" not in asked
    unknown = FUNCTIONS["support.final_reply"]({**case, "intent": "general_question"})
    assert unknown == case["reply"]


def test_a_message_with_no_question_gets_asked_what_it_is_about() -> None:
    faq = {"name": "search_faq", "arguments": {"query": "hello?"}}
    reply = FUNCTIONS["support.final_reply"](
        {
            "reply": "Hello, I'm sorry, I don't know the answer to that question.",
            "case": {"english": True, "text": "hello?"},
            "intent": "general_question",
            "call": faq,
            "result": {"ok": True, "count": 0, "matches": []},
        }
    )
    assert "order number" in reply
    assert "don't know" not in reply


def test_a_refund_amount_written_in_words_waits_for_the_customers_yes() -> None:
    """ "twenty quid back" is read as 20, and the refund asks before it moves any money; the
    same refund written in digits runs as proposed."""
    sender = {"email": "a@example.com"}
    for message, asked in (
        ("one of the trackers from ORD-729662 is scratched, can i get twenty quid back", True),
        ("one of the trackers from ORD-729662 is scratched, can i get 20 GBP back", False),
    ):
        fields = FUNCTIONS["support.agreed_fields"](
            {"fields": {"amount": None}, "message": message}
        )
        assert fields["amount"] == "20"
        proposed = {"name": "refund_order", "arguments": {"order_id": "ORD-729662", "amount": 20}}
        call = FUNCTIONS["support.authorize_call"](
            {"call": proposed, "message": message, "sender": sender, "english": True,
             "intent": "refund_request", "fields": fields}
        )  # fmt: skip
        assert call["name"] == "refund_order"
        assert call["arguments"]["amount"] == 20
        assert call.get("ask_first", False) is asked


def test_the_address_on_file_is_in_the_facts_only_when_asked_and_only_for_a_full_lookup() -> None:
    order = {
        "order_id": "ORD-166344", "status": "placed", "product": "Air Purifier",
        "amount": "159.99", "currency": "GBP", "shipping_address": "153 Lindenstraße, Berlin",
        "customer": {"name": "Jonas Garcia", "email": "jonas@example.com"},
    }  # fmt: skip
    call = {"name": "get_order", "arguments": {"order_id": "ORD-166344"}}
    case = {"intent": "order_status", "call": call, "result": {"ok": True, "order": order}}
    asked = "Which address is ORD-166344 being shipped to? Not my old flat, I hope."
    facts = FUNCTIONS["support.reply_facts"]({**case, "message": asked})
    assert facts["shipping_address"] == "153 Lindenstraße, Berlin"
    plain = FUNCTIONS["support.reply_facts"]({**case, "message": "status of ORD-166344?"})
    assert "shipping_address" not in plain
    limited = {"ok": True, "limited": True, "order": {"order_id": "ORD-166344", "status": "placed"}}
    anonymous = FUNCTIONS["support.reply_facts"]({**case, "result": limited, "message": asked})
    assert "shipping_address" not in anonymous
