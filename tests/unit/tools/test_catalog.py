"""Tool definitions, call validation, business rules and idempotency on a real SQLite file."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from mesh.config import ServiceSpec
from mesh.schema import SchemaValidator
from mesh.tools import (
    FACT_KINDS,
    TOOLS,
    IdempotencyConflictError,
    InvalidArgumentsError,
    MalformedCallError,
    MissingIdempotencyKeyError,
    UnknownToolError,
    create_demo_database,
    fact_kinds,
    orders,
    parse_call,
    result_facts,
    run_tool_call,
    tool_specs,
)

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "orders.sqlite"
    create_demo_database(path, seed=3, customers=40, orders=150)
    return path


def query(db: Path, sql: str, *params: object) -> list[tuple]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql, params).fetchall()


def order_with(db: Path, status: str) -> str:
    return query(db, "SELECT order_id FROM orders WHERE status = ? ORDER BY 1 LIMIT 1", status)[0][
        0
    ]


def unused_order_id(db: Path) -> str:
    taken = {row[0] for row in query(db, "SELECT order_id FROM orders")}
    return next(f"ORD-{n:06d}" for n in range(100_000, 1_000_000) if f"ORD-{n:06d}" not in taken)


def call(db: Path, name: str, key: str | None = None, **arguments: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"name": name, "arguments": arguments}
    if key is not None:
        payload["idempotency_key"] = key
    return run_tool_call(db, payload).result


# --- definitions ---------------------------------------------------------------------


def test_catalog_has_the_seven_support_tools() -> None:
    assert list(TOOLS) == [
        "get_order",
        "find_orders",
        "track_shipment",
        "cancel_order",
        "refund_order",
        "update_shipping_address",
        "search_faq",
    ]
    assert {name for name, tool in TOOLS.items() if tool.side_effects} == {
        "cancel_order",
        "refund_order",
        "update_shipping_address",
    }


def test_tool_specs_are_openai_function_definitions_with_strict_schemas() -> None:
    specs = tool_specs()

    assert [spec["function"]["name"] for spec in specs] == list(TOOLS)
    for spec in specs:
        assert spec["type"] == "function"
        assert set(spec["function"]) == {"name", "description", "parameters"}
        assert spec["function"]["description"]
        parameters = spec["function"]["parameters"]
        Draft202012Validator.check_schema(parameters)
        assert "$schema" not in parameters
        assert parameters["type"] == "object"
        assert parameters["additionalProperties"] is False
        assert parameters["required"] == list(parameters["properties"])
    assert all(t.parameters["$schema"].endswith("draft/2020-12/schema") for t in TOOLS.values())
    assert specs[0]["function"]["parameters"]["properties"]["order_id"]["pattern"] == r"^ORD-\d{6}$"


def test_tool_specs_are_copies_the_caller_may_change() -> None:
    tool_specs()[0]["function"]["parameters"]["properties"]["order_id"]["pattern"] = ".*"

    with pytest.raises(InvalidArgumentsError):
        parse_call({"name": "get_order", "arguments": {"order_id": "anything"}})


# --- malformed calls -------------------------------------------------------------------


@pytest.mark.parametrize("payload", [None, [], "get_order", 42, True])
def test_a_call_that_is_not_an_object_is_malformed(payload: object) -> None:
    with pytest.raises(MalformedCallError, match="must be a JSON object"):
        parse_call(payload)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"arguments": {}}, "'name' must be a non-empty string, got null"),
        ({"name": 7, "arguments": {}}, "'name' must be a non-empty string, got a number"),
        (
            {"name": "get_order", "arguments": {}, "tool_call_id": "x"},
            "unexpected field(s) 'tool_call_id'",
        ),
        ({"name": "get_order", "arguments": "{not json"}, "'arguments' is a string but not valid"),
    ],
)
def test_envelope_problems_are_named(payload: dict[str, Any], expected: str) -> None:
    with pytest.raises(MalformedCallError) as caught:
        parse_call(payload)

    assert expected in str(caught.value)
    assert caught.value.to_dict()["code"] == "malformed_call"


def test_unknown_tool_lists_the_tools_and_suggests_the_closest() -> None:
    with pytest.raises(UnknownToolError) as caught:
        parse_call({"name": "cancel", "arguments": {"order_id": "ORD-100000"}})

    message = str(caught.value)
    assert "unknown tool 'cancel'" in message
    assert "did you mean 'cancel_order'?" in message
    assert all(name in message for name in TOOLS)
    assert caught.value.to_dict() == {"code": "unknown_tool", "message": message}


def test_every_schema_problem_is_listed_with_its_json_pointer() -> None:
    with pytest.raises(InvalidArgumentsError) as caught:
        parse_call(
            {
                "name": "refund_order",
                "arguments": {"order_id": "ord-12", "amount": -5, "note": "x"},
                "idempotency_key": "k",
            }
        )

    problems = {(p.pointer, p.reason) for p in caught.value.problems}
    assert ("/order_id", "'ord-12' does not match '^ORD-\\\\d{6}$'") in problems
    assert ("/amount", "-5 is less than or equal to the minimum of 0") in problems
    assert ("/reason", "required, missing") in problems
    assert ("/note", "unexpected property (allowed: order_id, amount, reason)") in problems
    assert len(problems) == 4
    message = str(caught.value)
    assert message.startswith("invalid arguments for refund_order: ")
    for pointer in ("/order_id", "/amount", "/reason", "/note"):
        assert f"{pointer}: " in message
    error = caught.value.to_dict()
    assert error["code"] == "invalid_arguments"
    assert {p["pointer"] for p in error["problems"]} == {"/order_id", "/amount", "/reason", "/note"}


@pytest.mark.parametrize(
    ("name", "arguments", "pointer", "reason"),
    [
        ("get_order", [], "", "[] is not of type 'object'"),
        ("get_order", {"order_id": 104233}, "/order_id", "104233 is not of type 'string'"),
        ("find_orders", {"email": "not-an-email"}, "/email", "'not-an-email' is not a 'email'"),
        ("refund_order", {"amount": 10.005}, "/amount", "10.005 is not a multiple of 0.01"),
        ("refund_order", {"amount": float("inf")}, "/amount", "inf is not a finite number"),
        ("cancel_order", {"reason": "   "}, "/reason", "'   ' does not match '\\\\S'"),
        (
            "update_shipping_address",
            {"address": "x"},
            "/address",
            "'x' does not match '\\\\d.*,|,.*\\\\d'",
        ),
    ],
)
def test_schema_violations_point_at_the_offending_value(
    name: str, arguments: Any, pointer: str, reason: str
) -> None:
    with pytest.raises(InvalidArgumentsError) as caught:
        parse_call({"name": name, "arguments": arguments, "idempotency_key": "k"})

    assert (pointer, reason) in {(p.pointer, p.reason) for p in caught.value.problems}


def test_cent_amounts_pass_despite_binary_floats() -> None:
    for amount in (19.99, 0.29, 1234.56, 0.01):
        parsed = parse_call(
            {
                "name": "refund_order",
                "arguments": {"order_id": "ORD-100000", "amount": amount, "reason": "damaged"},
                "idempotency_key": "k",
            }
        )
        assert parsed.arguments["amount"] == amount


def test_arguments_may_arrive_as_a_json_string_and_whole_floats_become_ints() -> None:
    parsed = parse_call(
        {
            "name": "refund_order",
            "arguments": json.dumps({"order_id": "ORD-100000", "amount": 20.0, "reason": "late"}),
            "idempotency_key": "k",
        }
    )

    assert parsed.arguments == {"order_id": "ORD-100000", "amount": 20, "reason": "late"}
    assert type(parsed.arguments["amount"]) is int


@pytest.mark.parametrize("tool", ["cancel_order", "refund_order", "update_shipping_address"])
def test_side_effecting_tools_require_an_idempotency_key(tool: str, db: Path) -> None:
    arguments = {
        "cancel_order": {"order_id": order_with(db, "placed"), "reason": "changed my mind"},
        "refund_order": {"order_id": order_with(db, "delivered"), "amount": 1, "reason": "dent"},
        "update_shipping_address": {
            "order_id": order_with(db, "placed"),
            "address": "1 New Street, Springfield 12345",
        },
    }[tool]
    before = query(db, "SELECT * FROM orders ORDER BY 1")

    with pytest.raises(MissingIdempotencyKeyError, match="idempotency_key"):
        run_tool_call(db, {"name": tool, "arguments": arguments})

    assert query(db, "SELECT * FROM orders ORDER BY 1") == before


@pytest.mark.parametrize("key", ["", "has space", "x" * 129, 12])
def test_badly_formed_idempotency_keys_are_refused(key: object) -> None:
    with pytest.raises(MalformedCallError, match="idempotency_key"):
        parse_call(
            {
                "name": "cancel_order",
                "arguments": {"order_id": "ORD-100000", "reason": "changed my mind"},
                "idempotency_key": key,
            }
        )


# --- business rules --------------------------------------------------------------------


def test_get_order_returns_the_order_with_money_as_decimal_strings(db: Path) -> None:
    order_id = order_with(db, "delivered")
    (amount_cents, email) = query(
        db,
        "SELECT o.amount_cents, c.email FROM orders o JOIN customers c ON c.id = o.customer_id "
        "WHERE order_id = ?",
        order_id,
    )[0]

    result = call(db, "get_order", order_id=order_id)

    assert result["ok"] is True
    order = result["order"]
    assert order["order_id"] == order_id
    assert order["status"] == "delivered"
    assert order["amount"] == f"{amount_cents // 100}.{amount_cents % 100:02d}"
    assert order["refunded_amount"] == "0.00"
    assert order["refundable_amount"] == order["amount"]
    assert order["customer"]["email"] == email


def test_unknown_order_is_a_result_not_an_exception(db: Path) -> None:
    missing = unused_order_id(db)

    assert call(db, "get_order", order_id=missing) == {
        "ok": False,
        "error": {"code": "order_not_found", "message": f"There is no order {missing}."},
    }


def test_find_orders_matches_email_case_insensitively_newest_first(db: Path) -> None:
    customer_id, email = query(
        db,
        "SELECT customer_id, c.email FROM orders JOIN customers c ON c.id = customer_id "
        "GROUP BY customer_id HAVING COUNT(*) > 1 ORDER BY customer_id LIMIT 1",
    )[0]
    expected = [
        row[0]
        for row in query(
            db,
            "SELECT order_id FROM orders WHERE customer_id = ? ORDER BY ordered_at DESC",
            customer_id,
        )
    ]

    result = call(db, "find_orders", email=email.upper())

    assert result["ok"] is True
    assert result["customer"]["email"] == email
    assert [o["order_id"] for o in result["orders"]] == expected
    assert result["count"] == len(expected)


def test_find_orders_for_an_unknown_email_is_refused(db: Path) -> None:
    result = call(db, "find_orders", email="nobody@example.com")

    assert result["ok"] is False
    assert result["error"]["code"] == "customer_not_found"


def test_track_shipment_of_a_shipped_order(db: Path) -> None:
    order_id = order_with(db, "shipped")
    carrier, tracking = query(
        db, "SELECT carrier, tracking_number FROM orders WHERE order_id = ?", order_id
    )[0]

    result = call(db, "track_shipment", order_id=order_id)

    assert result["ok"] is True
    assert (result["carrier"], result["tracking_number"]) == (carrier, tracking)
    assert result["estimated_delivery"] is not None


@pytest.mark.parametrize("status", ["placed", "cancelled"])
def test_track_shipment_of_an_unshipped_order_is_refused(db: Path, status: str) -> None:
    result = call(db, "track_shipment", order_id=order_with(db, status))

    assert result["ok"] is False
    assert result["error"]["code"] == "not_shipped"
    # A placed order says when orders leave, as the FAQ does; a cancelled one never will.
    dispatch = "Orders leave our warehouse within 2 business days."
    assert (dispatch in result["error"]["message"]) is (status == "placed")


def test_cancel_a_placed_order(db: Path) -> None:
    order_id = order_with(db, "placed")

    result = call(db, "cancel_order", "k-cancel", order_id=order_id, reason="Ordered twice")

    assert result["ok"] is True
    assert (result["status"], result["previous_status"]) == ("cancelled", "placed")
    assert query(db, "SELECT status, cancel_reason FROM orders WHERE order_id = ?", order_id) == [
        ("cancelled", "Ordered twice")
    ]


@pytest.mark.parametrize("status", ["shipped", "delivered", "cancelled", "refunded"])
def test_only_placed_orders_can_be_cancelled(db: Path, status: str) -> None:
    order_id = order_with(db, status)

    result = call(db, "cancel_order", "k-cancel", order_id=order_id, reason="Too late?")

    assert result["ok"] is False
    assert result["error"]["code"] == "not_cancellable"
    assert order_id in result["error"]["message"]
    assert query(db, "SELECT status FROM orders WHERE order_id = ?", order_id) == [(status,)]


def test_partial_refunds_up_to_the_order_total(db: Path) -> None:
    order_id = order_with(db, "delivered")
    total = query(db, "SELECT amount_cents FROM orders WHERE order_id = ?", order_id)[0][0]
    first = 10.0 if total > 1000 else 0.01
    rest = (total - round(first * 100)) / 100

    partial = call(db, "refund_order", "r1", order_id=order_id, amount=first, reason="Scratched")
    too_much = call(db, "refund_order", "r2", order_id=order_id, amount=rest + 0.01, reason="x y")
    remainder = call(db, "refund_order", "r3", order_id=order_id, amount=rest, reason="Returned")
    again = call(db, "refund_order", "r4", order_id=order_id, amount=0.01, reason="Once more")

    assert partial["ok"] is True
    assert partial["status"] == "delivered"
    assert partial["refundable_amount"] == f"{rest:.2f}"
    assert too_much["ok"] is False
    assert too_much["error"]["code"] == "amount_exceeds_refundable"
    assert f"{rest:.2f}" in too_much["error"]["message"]
    assert remainder["ok"] is True
    assert (remainder["status"], remainder["refundable_amount"]) == ("refunded", "0.00")
    assert again["ok"] is False
    assert again["error"]["code"] == "not_refundable"
    assert query(db, "SELECT SUM(amount_cents) FROM refunds WHERE order_id = ?", order_id) == [
        (total,)
    ]


def _refund_not_in_gbp(db: Path, status: str) -> tuple[str, str, dict[str, Any]]:
    """An order in ``status`` paid in another currency than GBP, its currency, and a small
    refund of it asked by its owner."""
    order_id, paid_in, owner = query(
        db,
        "SELECT order_id, currency, email FROM orders JOIN customers c ON c.id = customer_id "
        "WHERE status = ? AND currency != 'GBP' ORDER BY 1 LIMIT 1",
        status,
    )[0]
    asked = {
        "name": "refund_order",
        "arguments": {"order_id": order_id, "amount": 1.0, "reason": "Scratched"},
        "principal": {"customer": owner},
    }
    return order_id, paid_in, asked


def test_a_refund_asked_in_another_currency_than_the_orders_is_refused(db: Path) -> None:
    """ "20 GBP back" on an order paid in another currency: refunding 20 of the order's
    currency would move a sum nobody asked for; the same amount in its own currency runs."""
    order_id, paid_in, asked = _refund_not_in_gbp(db, "delivered")
    other = run_tool_call(db, {**asked, "idempotency_key": "gbp", "currency": "GBP"}).result
    assert other["ok"] is False
    assert other["error"]["code"] == "currency_mismatch"
    assert paid_in in other["error"]["message"]
    assert query(db, "SELECT COUNT(*) FROM refunds WHERE order_id = ?", order_id) == [(0,)]
    own = run_tool_call(db, {**asked, "idempotency_key": "own", "currency": paid_in}).result
    assert own["ok"] is True
    with pytest.raises(MalformedCallError, match="'currency' must be one of"):
        parse_call({**asked, "idempotency_key": "x", "currency": "bitcoin"})
    # An order no refund can touch says so first, whatever the currency.
    _, _, not_yet = _refund_not_in_gbp(db, "placed")
    refused = run_tool_call(db, {**not_yet, "idempotency_key": "placed", "currency": "GBP"})
    assert refused.result["error"]["code"] == "not_refundable"


@pytest.mark.parametrize("status", ["placed", "cancelled", "refunded"])
def test_only_shipped_or_delivered_orders_can_be_refunded(db: Path, status: str) -> None:
    order_id = order_with(db, status)
    refunds_before = query(db, "SELECT COUNT(*) FROM refunds")

    result = call(db, "refund_order", "k-refund", order_id=order_id, amount=1, reason="Broken")

    assert result["ok"] is False
    assert result["error"]["code"] == "not_refundable"
    assert query(db, "SELECT COUNT(*) FROM refunds") == refunds_before


def test_update_the_address_of_a_placed_order_keeps_the_old_one(db: Path) -> None:
    order_id = order_with(db, "placed")
    old = query(db, "SELECT shipping_address FROM orders WHERE order_id = ?", order_id)[0][0]
    new = "22 Baker Street, London NW1 6XE, United Kingdom"

    result = call(db, "update_shipping_address", "k-addr", order_id=order_id, address=new)

    assert result == {
        "ok": True,
        "order_id": order_id,
        "previous_address": old,
        "shipping_address": new,
    }
    assert call(db, "get_order", order_id=order_id)["order"]["shipping_address"] == new
    assert query(db, "SELECT old_address, new_address FROM address_changes") == [(old, new)]


@pytest.mark.parametrize("status", ["shipped", "delivered"])
def test_the_address_of_a_shipped_order_cannot_change(db: Path, status: str) -> None:
    order_id = order_with(db, status)

    result = call(
        db, "update_shipping_address", "k-addr", order_id=order_id, address="1 Elsewhere Road, Town"
    )

    assert result["ok"] is False
    assert result["error"]["code"] == "address_not_updatable"
    assert query(db, "SELECT COUNT(*) FROM address_changes") == [(0,)]


# --- idempotency -----------------------------------------------------------------------


def test_same_key_twice_applies_once_and_returns_the_first_result(db: Path) -> None:
    order_id = order_with(db, "delivered")
    payload = {
        "name": "refund_order",
        "arguments": {"order_id": order_id, "amount": 5, "reason": "Late delivery"},
        "idempotency_key": "refund-once",
    }

    first = run_tool_call(db, payload)
    retry = run_tool_call(db, {**payload, "arguments": {**payload["arguments"], "amount": 5.0}})

    assert first.result["ok"] is True
    assert (first.replayed, retry.replayed) == (False, True)
    assert retry.result == first.result
    assert query(
        db, "SELECT COUNT(*), SUM(amount_cents) FROM refunds WHERE order_id = ?", order_id
    ) == [(1, 500)]


def test_different_keys_apply_twice(db: Path) -> None:
    order_id = order_with(db, "delivered")

    call(db, "refund_order", "a", order_id=order_id, amount=1, reason="First dent")
    call(db, "refund_order", "b", order_id=order_id, amount=1, reason="First dent")

    assert query(db, "SELECT COUNT(*) FROM refunds WHERE order_id = ?", order_id) == [(2,)]


def test_a_replay_returns_the_first_outcome_even_after_the_order_changed(db: Path) -> None:
    order_id = order_with(db, "placed")
    cancel = {"order_id": order_id, "reason": "Not wanted"}
    refund = {"order_id": order_id, "amount": 1, "reason": "Not wanted"}

    cancelled = call(db, "cancel_order", "c", **cancel)
    refused = call(db, "refund_order", "r", **refund)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE orders SET status = 'delivered' WHERE order_id = ?", (order_id,))

    assert cancelled["ok"] is True
    assert refused["error"]["code"] == "not_refundable"
    assert call(db, "cancel_order", "c", **cancel) == cancelled
    assert call(db, "refund_order", "r", **refund) == refused
    assert query(db, "SELECT COUNT(*) FROM refunds WHERE order_id = ?", order_id) == [(0,)]


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("cancel_order", {"reason": "Something else"}),
        ("refund_order", {"reason": "Ordered twice", "amount": 1}),
    ],
)
def test_reusing_a_key_for_another_call_is_refused_and_changes_nothing(
    db: Path, name: str, arguments: dict[str, Any]
) -> None:
    order_id = order_with(db, "placed")
    call(db, "cancel_order", "shared", order_id=order_id, reason="Ordered twice")
    other = order_with(db, "delivered") if name == "refund_order" else order_id
    before = (query(db, "SELECT * FROM orders ORDER BY 1"), query(db, "SELECT * FROM refunds"))

    with pytest.raises(
        IdempotencyConflictError, match="'shared' was already used for cancel_order"
    ):
        call(db, name, "shared", order_id=other, **arguments)

    assert (
        query(db, "SELECT * FROM orders ORDER BY 1"),
        query(db, "SELECT * FROM refunds"),
    ) == before


def test_read_only_tools_ignore_the_key(db: Path) -> None:
    order_id = order_with(db, "placed")

    before = call(db, "get_order", "read-key", order_id=order_id)
    call(db, "cancel_order", "cancel-key", order_id=order_id, reason="Changed my mind")
    after = call(db, "get_order", "read-key", order_id=order_id)

    assert (before["order"]["status"], after["order"]["status"]) == ("placed", "cancelled")
    assert query(db, "SELECT idempotency_key FROM tool_calls") == [("cancel-key",)]


# --- hostile strings are data ----------------------------------------------------------


def test_sql_looking_strings_are_stored_and_matched_as_plain_data(db: Path) -> None:
    placed, delivered = order_with(db, "placed"), order_with(db, "delivered")
    address = "1 Main St'; DROP TABLE orders; -- , Springfield"
    reason = "Robert'); DELETE FROM refunds WHERE ('1'='1"
    order_count = query(db, "SELECT COUNT(*) FROM orders")

    found = call(db, "find_orders", email="x'OR'1'='1@example.com")
    moved = call(db, "update_shipping_address", "inj-1", order_id=placed, address=address)
    refunded = call(db, "refund_order", "inj-2", order_id=delivered, amount=1, reason=reason)

    assert found["error"]["code"] == "customer_not_found"
    assert moved["ok"] is True
    assert refunded["ok"] is True
    assert call(db, "get_order", order_id=placed)["order"]["shipping_address"] == address
    assert query(db, "SELECT reason FROM refunds WHERE order_id = ?", delivered) == [(reason,)]
    assert query(db, "SELECT COUNT(*) FROM orders") == order_count


def test_an_order_id_with_sql_is_rejected_by_the_schema(db: Path) -> None:
    with pytest.raises(InvalidArgumentsError) as caught:
        call(db, "get_order", order_id="ORD-104233' OR '1'='1")

    assert caught.value.problems[0].pointer == "/order_id"


# --- the service spec's examples are real calls ---------------------------------------


def test_agent_yaml_examples_succeed_on_the_default_demo_database(tmp_path: Path) -> None:
    spec = ServiceSpec.load(REPO / "services" / "tools")
    path = tmp_path / "orders.sqlite"
    create_demo_database(path)

    examples = [json.loads(example) for skill in spec.skills for example in skill.examples]

    assert {example["name"] for example in examples} >= {"get_order", "cancel_order"}
    for example in examples:
        assert run_tool_call(path, example).result["ok"] is True, example


# --- result schemas --------------------------------------------------------------------


def test_every_real_result_matches_its_tools_result_schema_and_every_branch_occurs(
    db: Path,
) -> None:
    owners = dict(
        query(
            db, "SELECT o.order_id, c.email FROM orders o JOIN customers c ON c.id = o.customer_id"
        )
    )
    stranger = {"customer": "nobody@example.com"}
    seen: dict[str, set[str]] = {name: set() for name in TOOLS}
    checked = 0

    def check(payload: dict[str, Any]) -> None:
        nonlocal checked
        result = run_tool_call(db, payload).result
        schema = TOOLS[payload["name"]].result_schema
        errors = [e.message for e in SchemaValidator(schema).iter_errors(result)]
        assert errors == [], (payload, result)
        outcome = (
            result["error"]["code"]
            if not result["ok"]
            else ("limited" if result.get("limited") else "ok")
        )
        seen[payload["name"]].add(outcome)
        checked += 1

    for n, status in enumerate(orders.ORDER_STATUSES):
        order_id = order_with(db, status)
        mine = {"customer": owners[order_id]}
        for p, principal in enumerate((mine, stranger, {"anonymous": True}, None)):
            extra = {} if principal is None else {"principal": principal}
            for name in ("get_order", "track_shipment"):
                check({"name": name, "arguments": {"order_id": order_id}, **extra})
            refundable = query(
                db,
                "SELECT amount_cents - COALESCE((SELECT SUM(amount_cents) FROM refunds r "
                "WHERE r.order_id = o.order_id), 0) FROM orders o WHERE order_id = ?",
                order_id,
            )[0][0]
            side_effects = [
                ("refund_order", {"amount": refundable / 100 + 1, "reason": "Too much"}),
                ("refund_order", {"amount": max(refundable, 100) / 100, "reason": "All of it"}),
                ("refund_order", {"amount": 0.5, "reason": "A little"}),
                ("update_shipping_address", {"address": "2 Elm Avenue, Austin 73301, USA"}),
                ("cancel_order", {"reason": "No longer needed"}),
            ]
            for m, (name, arguments) in enumerate(side_effects):
                check(
                    {
                        "name": name,
                        "arguments": {"order_id": order_id, **arguments},
                        "idempotency_key": f"{n}-{p}-{m}",
                        **extra,
                    }
                )
    placed = order_with(db, "placed")  # a cancellation the desk asks the customer about first
    check(
        {
            "name": "cancel_order",
            "arguments": {"order_id": placed, "reason": "No longer needed"},
            "principal": {"customer": owners[placed]},
            "idempotency_key": "asked-first",
            "ask_first": True,
        }
    )
    shipped = order_with(db, "shipped")  # a refund the customer wrote in another currency
    paid_in = query(db, "SELECT currency FROM orders WHERE order_id = ?", shipped)[0][0]
    check(
        {
            "name": "refund_order",
            "arguments": {"order_id": shipped, "amount": 1.0, "reason": "Scratched"},
            "principal": {"customer": owners[shipped]},
            "idempotency_key": "other-currency",
            "currency": next(c for c in ("GBP", "EUR") if c != paid_in),
        }
    )
    for principal in (
        None,
        {"customer": owners[order_with(db, "placed")]},
        stranger,
        {"anonymous": True},
    ):
        extra = {} if principal is None else {"principal": principal}
        check(
            {
                "name": "find_orders",
                "arguments": {"email": owners[order_with(db, "placed")]},
                **extra,
            }
        )
    check({"name": "find_orders", "arguments": {"email": "nobody@example.com"}})
    missing = {"order_id": unused_order_id(db)}
    for name in ("get_order", "track_shipment"):
        check({"name": name, "arguments": missing})
    for m, (name, arguments) in enumerate(side_effects):
        check({"name": name, "arguments": {**arguments, **missing}, "idempotency_key": f"m{m}"})
    for question in (
        "Which countries do you ship to?",
        "How long is delivery and refund?",
        "Is the French Press dishwasher safe?",
    ):
        check({"name": "search_faq", "arguments": {"query": question}})

    for name, tool in TOOLS.items():
        branches = tool.result_schema["oneOf"]
        codes = {
            code
            for b in branches
            if "error" in b["properties"]
            for code in b["properties"]["error"]["properties"]["code"]["enum"]
        }
        expected = codes | {"ok"} | ({"limited"} if len(branches) - bool(codes) > 1 else set())
        assert seen[name] == expected, name
    assert checked > 100


def test_fact_kinds_name_the_fact_of_each_property() -> None:
    assert fact_kinds("get_order")["/order/status"] == "status"
    assert fact_kinds("get_order")["/order/customer/name"] == "name"
    assert fact_kinds("find_orders")["/orders/*/order_id"] == "order_id"
    assert fact_kinds("track_shipment")["/estimated_delivery"] == "date"
    assert fact_kinds("track_shipment")["/carrier"] == "carrier"
    assert fact_kinds("refund_order")["/refundable_amount"] == "amount"
    assert fact_kinds("search_faq") == {"/matches/*/answer": "faq_answer"}
    assert "/order/quantity" not in fact_kinds("get_order")
    used = {kind for name in TOOLS for kind in fact_kinds(name).values()}
    assert used == set(FACT_KINDS)
    with pytest.raises(KeyError):
        fact_kinds("delete_everything")


def test_result_facts_lists_the_values_of_a_real_result(db: Path) -> None:
    order_id = order_with(db, "shipped")
    result = call(db, "get_order", order_id=order_id)
    email = result["order"]["customer"]["email"]
    listing = call(db, "find_orders", email=email)

    facts = result_facts("get_order", result)
    listed = result_facts("find_orders", listing)

    assert ("/order/order_id", "order_id", order_id) in facts
    assert ("/order/carrier", "carrier", result["order"]["carrier"]) in facts
    assert result["order"]["carrier"] in orders.CARRIERS
    assert result["order"]["product"] in orders.PRODUCTS
    assert not any(pointer == "/order/cancelled_at" for pointer, _, _ in facts)  # null
    assert ("/orders/0/order_id", "order_id", listing["orders"][0]["order_id"]) in listed
    assert ("/customer/email", "email", email) in listed


def test_search_faq_result_and_argument_schema(db: Path) -> None:
    found = call(db, "search_faq", query="Do you accept PayPal?")
    none = call(db, "search_faq", query="Is the French Press dishwasher safe?")

    assert found["ok"] is True
    assert found["count"] == len(found["matches"]) >= 1
    assert found["matches"][0] == {
        "topic": "payment_methods",
        "question": "Which payment methods do you accept?",
        "answer": "We accept Visa, Mastercard, American Express, PayPal and Apple Pay.",
    }
    assert none == {"ok": True, "count": 0, "matches": []}
    with pytest.raises(InvalidArgumentsError):
        parse_call({"name": "search_faq", "arguments": {"query": "hi"}})
    assert not TOOLS["search_faq"].side_effects
