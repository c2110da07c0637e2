"""The synthetic training data: splits kept apart, seeded, and true to the agents' contracts."""

from __future__ import annotations

import json
from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from mesh.slm.grammar import grounded_values as runtime_grounded_values
from mesh.slm.validation import OutputValidator
from mesh.tools import catalog, orders
from mesh.train.data import entities
from mesh.train.data.contract import compact, load_contract
from mesh.train.data.dataset import SEEN, TEST, TRAIN, VALIDATION, Example, Stream
from mesh.train.data.messages import INTENTS, all_template_groups, templates_of
from mesh.train.data.responder import key_facts, reply_facts, simulate, write_reply
from mesh.train.data.tasks import AGENTS, load_task
from mesh.train.data.tool_caller import runnable

COUNT = 150


@cache
def _examples(agent: str, stream: Stream, seed: int = 0) -> tuple[Example, ...]:
    return tuple(load_task(agent).examples(stream, seed, COUNT))


def _values(examples: tuple[Example, ...]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for example in examples:
        for kind, values in example.entities.items():
            found[kind] |= values
    return found


@pytest.mark.parametrize("agent", AGENTS)
def test_test_split_shares_no_entity_value_with_training(agent: str) -> None:
    train = _values(_examples(agent, TRAIN))
    seen = _values(_examples(agent, SEEN))
    for held_out in (VALIDATION, TEST):
        other = _values(_examples(agent, held_out))
        assert other, "held-out examples record their entity values"
        for kind, values in other.items():
            assert not values & train[kind], (agent, held_out.name, kind, values & train[kind])
            assert not values & seen[kind], (agent, held_out.name, kind)
    validation, test = _values(_examples(agent, VALIDATION)), _values(_examples(agent, TEST))
    for kind, values in test.items():
        assert not values & validation[kind], (agent, kind)


def test_every_entity_kind_a_message_uses_is_recorded() -> None:
    kinds = set(_values(_examples("extractor", TEST)))
    assert {
        "order_id",
        "email",
        "first_name",
        "last_name",
        "product",
        "amount",
        "date",
        "reason",
        "street",
        "city",
    } <= kinds


def test_demo_database_values_are_reserved_for_test() -> None:
    demo = entities.demo_values()
    assert len(demo.order_ids) == 600
    assert demo.first_names
    assert demo.products
    for kind in (
        "first_name",
        "last_name",
        "email",
        "domain",
        "city",
        "street",
        "product",
        "order_id",
        "carrier",
    ):
        for value in demo.reserved(kind):
            assert entities.split_of(kind, value) == "test", (kind, value)


def test_training_mostly_copies_invented_values() -> None:
    train = _values(_examples("extractor", TRAIN))
    invented = train["first_name"] - entities.curated_values("first_name")
    assert len(invented) > len(train["first_name"]) / 2


@pytest.mark.parametrize("agent", ["classifier", "extractor", "tool-caller"])
def test_held_out_splits_use_phrasings_never_trained_on(agent: str) -> None:
    train = set().union(*(example.templates for example in _examples(agent, TRAIN)))
    for held_out in (VALIDATION, TEST):
        used = set().union(*(example.templates for example in _examples(agent, held_out)))
        assert used, (agent, held_out.name)
        assert not used & train, (agent, held_out.name, used & train)


def test_template_lists_split_without_duplicates() -> None:
    for group in all_template_groups():
        per_split = [set(templates_of(group, split)) for split in entities.SPLITS]
        assert all(per_split), f"{group} has a split without templates"
        assert not per_split[0] & per_split[1], group
        assert not per_split[0] & per_split[2], group
        assert not per_split[1] & per_split[2], group


@pytest.mark.parametrize("agent", AGENTS)
def test_examples_are_deterministic_per_seed(agent: str) -> None:
    task = load_task(agent)
    first = task.examples(TRAIN, 7, 5)
    assert first == task.examples(TRAIN, 7, 5)
    assert [e.target for e in first] != [e.target for e in task.examples(TRAIN, 8, 5)]
    assert task.example(TRAIN, 7, 3) == first[3]


@pytest.mark.parametrize("agent", AGENTS)
@pytest.mark.parametrize("stream", [TRAIN, TEST])
def test_every_target_validates_against_the_service_yaml(agent: str, stream: Stream) -> None:
    contract = load_contract(agent)
    for example in _examples(agent, stream):
        assert example.prompt == contract.prompt.format(input=example.input)
        contract.check(example.target, source=example.input)
        assert len(example.prompt) + len(example.target) + 2 <= 1024


def test_classifier_labels_come_from_the_yaml_and_are_all_used() -> None:
    assert load_contract("classifier").labels == INTENTS
    assert {example.target for example in _examples("classifier", TRAIN)} == set(INTENTS)


def grounded_values(schema: dict[str, Any], value: Any) -> list[tuple[Any, Any]]:
    """The runtime's grounded values of ``value`` (the branch it validates against)."""
    return list(runtime_grounded_values(schema, value, lambda s, v: OutputValidator(s).is_valid(v)))


def test_extractor_grounded_values_are_spans_of_the_message() -> None:
    schema = load_contract("extractor").schema
    assert schema is not None
    assert all(prop.get("x-grounded") for prop in schema["properties"].values())
    copied = 0
    for example in _examples("extractor", TEST) + _examples("extractor", TRAIN):
        target = json.loads(example.target)
        assert target == example.expected
        assert list(target) == list(schema["properties"])
        for value, grounding in grounded_values(schema, target):
            assert grounding is True, (value, example.input)
            assert value in example.input, (value, example.input)
            copied += 1
    assert copied > COUNT


def test_tool_calls_are_grounded_and_accepted_by_the_catalog() -> None:
    schema = load_contract("tool-caller").schema
    assert schema is not None
    names = set()
    for example in _examples("tool-caller", TEST) + _examples("tool-caller", TRAIN):
        call = json.loads(example.target)
        names.add(call["name"])
        assert "idempotency_key" not in call
        runnable(call)
        fields = json.loads(example.input)["fields"]
        grounded = list(grounded_values(schema, call))
        assert grounded, example.target
        for value, grounding in grounded:
            assert grounding == ""
            assert value in fields.values() or any(  # an amount: the customer's digits, as a number
                isinstance(f, str) and f.replace(".", "").isdigit() and float(f) == value
                for f in fields.values()
            ), value
    proposed = {branch["properties"]["name"]["const"] for branch in schema["oneOf"]}
    assert names == proposed <= set(catalog.TOOLS)


def test_tool_caller_schema_matches_the_catalog() -> None:
    schema = load_contract("tool-caller").schema
    assert schema is not None
    for branch in schema["oneOf"]:
        assert list(branch["properties"]) == ["name", "arguments"]
        tool = catalog.TOOLS[branch["properties"]["name"]["const"]]
        arguments = branch["properties"]["arguments"]
        assert list(arguments["properties"]) == list(tool.parameters["properties"])
        for name, rules in tool.parameters["properties"].items():
            theirs = {k: v for k, v in rules.items() if k != "description"}
            ours = arguments["properties"][name]
            # A copied value, or a default (the reason a customer did not give) the tool takes.
            for option in ours.get("anyOf", [ours]):
                if "const" in option:
                    assert Draft202012Validator(theirs).is_valid(option["const"]), name
                else:
                    assert {k: v for k, v in option.items() if k != "x-grounded"} == theirs, name
        assert arguments["required"] == tool.parameters["required"]
        assert arguments["additionalProperties"] is False


def test_simulated_tool_results_match_the_real_catalog(tmp_path: Path) -> None:
    database = tmp_path / "orders.sqlite"
    orders.create_demo_database(database, customers=30, orders=120)
    conn = orders.connect(database)
    try:
        order_ids = [row[0] for row in conn.execute("SELECT order_id FROM orders")]
        checked = set()
        for n, order_id in enumerate(order_ids[:60]):
            for call in _calls_on(order_id, orders.get_order(conn, order_id), n):
                before = orders.get_order(conn, order_id)
                real = catalog.run_tool_call(
                    database, {**call, "idempotency_key": f"k{n}-{call['name']}"}
                )
                fake = simulate(call, before)
                if call["name"] == "refund_order" and real.result["ok"]:
                    fake["refund_id"] = real.result["refund_id"]
                assert fake == real.result, call
                checked.add((call["name"], real.result.get("error", {}).get("code")))
        customer = orders.find_customer(conn, orders.get_order(conn, order_ids[0]).customer_email)
        assert customer is not None
        history = orders.orders_of_customer(conn, customer.id)
    finally:
        conn.close()
    assert len(checked) >= 10, checked
    missing = {"name": "get_order", "arguments": {"order_id": "ORD-000001"}}
    assert simulate(missing, None) == catalog.run_tool_call(database, missing).result
    find = {"name": "find_orders", "arguments": {"email": customer.email}}
    account = (customer.name, customer.email)
    expected = catalog.run_tool_call(database, find).result
    assert simulate(find, None, customer=account, customer_orders=history) == expected
    nobody = {"name": "find_orders", "arguments": {"email": "nobody@example.com"}}
    assert simulate(nobody, None) == catalog.run_tool_call(database, nobody).result
    for question in (
        "Can I pay with PayPal?",
        "How long does delivery and a refund take?",
        "Is the French Press dishwasher safe?",
    ):
        ask = {"name": "search_faq", "arguments": {"query": question}}
        assert simulate(ask, None) == catalog.run_tool_call(database, ask).result


def _calls_on(order_id: str, order: orders.Order | None, n: int) -> list[dict[str, object]]:
    """Every tool on one order; refunds alternate between fitting and too large."""
    assert order is not None
    cents = order.refundable_cents // 2 if n % 3 else order.refundable_cents + 500
    return [
        {"name": "get_order", "arguments": {"order_id": order_id}},
        {"name": "track_shipment", "arguments": {"order_id": order_id}},
        {
            "name": "refund_order",
            "arguments": {"order_id": order_id, "amount": max(cents, 1) / 100, "reason": "Broken"},
        },
        {
            "name": "update_shipping_address",
            "arguments": {"order_id": order_id, "address": "1 New Road, Cork T12, Ireland"},
        },
        {"name": "cancel_order", "arguments": {"order_id": order_id, "reason": "Changed my mind"}},
    ]


def test_replies_state_the_key_facts_of_real_results(tmp_path: Path) -> None:
    database = tmp_path / "orders.sqlite"
    orders.create_demo_database(database, customers=10, orders=40)
    conn = orders.connect(database)
    try:
        order_ids = [row[0] for row in conn.execute("SELECT order_id FROM orders")]
    finally:
        conn.close()
    for order_id in order_ids[:10]:
        for name in ("get_order", "track_shipment"):
            call = {"name": name, "arguments": {"order_id": order_id}}
            result = catalog.run_tool_call(database, call).result
            facts = reply_facts("track_shipment", call, result)
            reply = write_reply(facts)
            assert all(value in reply for value in key_facts(facts)), (facts, reply)
            if name == "get_order":
                assert reply.startswith(f"Hi {facts['customer'].split()[0]},")
            else:
                assert facts["customer"] is None
                assert reply.startswith("Hello,")
            assert json.loads(compact(facts)) == facts


def test_responder_targets_mention_every_key_fact() -> None:
    task = load_task("responder")
    for example in _examples("responder", TEST):
        scores = task.judge(example, example.target)
        assert scores == {"exact": 1.0, "valid": 1.0, "facts": 1.0, "all_facts": 1.0}
