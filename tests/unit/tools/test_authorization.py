"""Who may see and change which order: the ``principal`` and ``confirmed`` envelope keys.

A call with ``{"customer": E}`` acts only on E's orders and account; one with
``{"anonymous": true}`` sees statuses and changes nothing; one without a principal is a
trusted mesh-internal call (covered by test_tools_catalog.py). Refusals about someone
else's order read the same whether or not it exists.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from mesh.tools import (
    IdempotencyConflictError,
    MalformedCallError,
    Policy,
    Principal,
    create_demo_database,
    parse_call,
    run_tool_call,
)

ANONYMOUS = {"anonymous": True}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "orders.sqlite"
    create_demo_database(path, seed=3, customers=40, orders=150)
    return path


def query(db: Path, sql: str, *params: object) -> list[tuple]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql, params).fetchall()


def snapshot(db: Path) -> tuple[list[tuple], ...]:
    return tuple(
        query(db, f"SELECT * FROM {table} ORDER BY 1")
        for table in ("orders", "refunds", "address_changes", "tool_calls")
    )


def an_order(db: Path, status: str, *, min_cents: int = 0) -> tuple[str, str]:
    """``(order_id, owner's email)`` of an order with this status."""
    return query(
        db,
        "SELECT o.order_id, c.email FROM orders o JOIN customers c ON c.id = o.customer_id "
        "WHERE o.status = ? AND o.amount_cents >= ? ORDER BY 1 LIMIT 1",
        status,
        min_cents,
    )[0]


def someone_else(db: Path, email: str) -> str:
    return query(db, "SELECT email FROM customers WHERE email != ? ORDER BY 1 LIMIT 1", email)[0][0]


def call(
    db: Path,
    name: str,
    principal: dict[str, Any] | None,
    key: str | None = None,
    *,
    confirmed: bool | None = None,
    ask_first: bool | None = None,
    policy: Policy | None = None,
    **arguments: Any,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"name": name, "arguments": arguments}
    if principal is not None:
        payload["principal"] = principal
    if key is not None:
        payload["idempotency_key"] = key
    if confirmed is not None:
        payload["confirmed"] = confirmed
    if ask_first is not None:
        payload["ask_first"] = ask_first
    return run_tool_call(db, payload, policy=policy).result


# --- the envelope ----------------------------------------------------------------------


def test_principals_parse_and_normalize_the_email() -> None:
    customer = parse_call(
        {
            "name": "get_order",
            "arguments": {"order_id": "ORD-100000"},
            "principal": {"customer": " Kofi.Haddad@Example.NET "},
        }
    )
    anonymous = parse_call(
        {"name": "get_order", "arguments": {"order_id": "ORD-100000"}, "principal": ANONYMOUS}
    )
    trusted = parse_call({"name": "get_order", "arguments": {"order_id": "ORD-100000"}})

    assert customer.principal == Principal(customer="kofi.haddad@example.net")
    assert anonymous.principal == Principal()
    assert anonymous.principal.anonymous
    assert trusted.principal is None
    assert (customer.confirmed, trusted.confirmed) == (False, False)


@pytest.mark.parametrize(
    "principal",
    [
        None,
        "kofi@example.net",
        {},
        {"customer": "not-an-email"},
        {"customer": 5},
        {"customer": ""},
        {"anonymous": False},
        {"anonymous": "true"},
        {"customer": "kofi@example.net", "anonymous": True},
        {"email": "kofi@example.net"},
    ],
)
def test_a_malformed_principal_is_a_malformed_call(principal: object) -> None:
    with pytest.raises(MalformedCallError, match="'principal' must be"):
        parse_call(
            {"name": "get_order", "arguments": {"order_id": "ORD-100000"}, "principal": principal}
        )


@pytest.mark.parametrize("ask_first", [None, "yes", 1])
def test_ask_first_must_be_a_boolean(ask_first: object) -> None:
    with pytest.raises(MalformedCallError, match="'ask_first' must be true or false"):
        parse_call(
            {"name": "get_order", "arguments": {"order_id": "ORD-100000"}, "ask_first": ask_first}
        )


@pytest.mark.parametrize("confirmed", [None, "yes", 1, {}])
def test_confirmed_must_be_a_boolean(confirmed: object) -> None:
    with pytest.raises(MalformedCallError, match="'confirmed' must be true or false"):
        parse_call(
            {"name": "get_order", "arguments": {"order_id": "ORD-100000"}, "confirmed": confirmed}
        )


@pytest.mark.parametrize(
    ("options", "limit"),
    [
        ({}, Decimal("100.00")),
        ({"confirm_refund_above": 25}, Decimal(25)),
        ({"confirm_refund_above": "0"}, Decimal(0)),
    ],
)
def test_policy_from_spec_options(options: dict[str, Any], limit: Decimal) -> None:
    assert Policy.from_options(options).confirm_refund_above == limit


@pytest.mark.parametrize("value", [-1, "lots", True, None, float("nan"), [100]])
def test_a_bad_refund_limit_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="confirm_refund_above"):
        Policy.from_options({"confirm_refund_above": value})


# --- a verified customer ---------------------------------------------------------------


def test_a_customer_sees_their_own_order_in_full(db: Path) -> None:
    order_id, email = an_order(db, "shipped")
    me = {"customer": email.upper()}

    assert call(db, "get_order", me, order_id=order_id) == call(
        db, "get_order", None, order_id=order_id
    )
    assert call(db, "track_shipment", me, order_id=order_id)["carrier"]


@pytest.mark.parametrize("tool", ["get_order", "track_shipment"])
def test_another_customers_order_reads_like_an_order_that_does_not_exist(
    db: Path, tool: str
) -> None:
    order_id, owner = an_order(db, "shipped")
    me = {"customer": someone_else(db, owner)}
    full = call(db, "get_order", None, order_id=order_id)["order"]

    theirs = call(db, tool, me, order_id=order_id)
    missing = call(db, tool, me, order_id="ORD-000001")

    assert theirs["ok"] is False
    assert theirs["error"]["code"] == "not_your_order"
    assert theirs == {
        **missing,
        "error": {
            **missing["error"],
            "message": missing["error"]["message"].replace("ORD-000001", order_id),
        },
    }
    message = theirs["error"]["message"]
    for secret in (
        full["status"],
        full["product"],
        full["customer"]["name"],
        owner,
        full["carrier"],
        full["tracking_number"],
        full["shipping_address"],
    ):
        assert secret not in message


def test_find_orders_only_for_the_senders_own_email(db: Path) -> None:
    _, email = an_order(db, "delivered")
    other = someone_else(db, email)

    mine = call(db, "find_orders", {"customer": email}, email=email.upper())
    theirs = call(db, "find_orders", {"customer": email}, email=other)
    nobody = call(db, "find_orders", {"customer": email}, email="nobody@example.com")

    assert mine["ok"] is True
    assert mine["customer"]["email"] == email
    assert theirs["error"]["code"] == "not_your_account"
    assert nobody == theirs
    assert other not in theirs["error"]["message"]


@pytest.mark.parametrize(
    ("tool", "status", "arguments"),
    [
        ("cancel_order", "placed", {"reason": "Not mine anyway"}),
        ("update_shipping_address", "placed", {"address": "1 Elm Avenue, Austin 73301, USA"}),
        ("refund_order", "delivered", {"amount": 1, "reason": "Not mine anyway"}),
    ],
)
def test_side_effects_on_another_customers_order_are_refused_and_change_nothing(
    db: Path, tool: str, status: str, arguments: dict[str, Any]
) -> None:
    order_id, owner = an_order(db, status)
    me = {"customer": someone_else(db, owner)}
    before = snapshot(db)

    result = call(db, tool, me, "k-1", confirmed=True, order_id=order_id, **arguments)

    assert result["error"]["code"] == "not_your_order"
    assert snapshot(db) == before


def test_a_customer_may_cancel_and_redirect_their_own_order(db: Path) -> None:
    order_id, email = an_order(db, "placed")
    me = {"customer": email}

    moved = call(
        db,
        "update_shipping_address",
        me,
        "a-1",
        order_id=order_id,
        address="9 Oak Lane, Denver 80202, USA",
    )
    cancelled = call(db, "cancel_order", me, "c-1", order_id=order_id, reason="Changed my mind")

    assert moved["ok"] is True
    assert cancelled["status"] == "cancelled"


# --- confirmation of large refunds -----------------------------------------------------


def refundable_cents(db: Path, order_id: str) -> int:
    return query(
        db,
        "SELECT o.amount_cents - COALESCE(SUM(r.amount_cents), 0) FROM orders o "
        "LEFT JOIN refunds r ON r.order_id = o.order_id WHERE o.order_id = ?",
        order_id,
    )[0][0]


def test_a_small_partial_refund_needs_no_confirmation(db: Path) -> None:
    order_id, email = an_order(db, "delivered")

    result = call(
        db,
        "refund_order",
        {"customer": email},
        "r-1",
        order_id=order_id,
        amount=1,
        reason="Scratched lid",
    )

    assert result["ok"] is True


def test_a_small_refund_asked_first_waits_for_confirmation_then_runs_once(db: Path) -> None:
    order_id, email = an_order(db, "delivered")
    me = {"customer": email}
    arguments = {"order_id": order_id, "amount": 1, "reason": "Scratched lid"}
    before = snapshot(db)

    asked = call(db, "refund_order", me, "first-1", ask_first=True, **arguments)
    assert asked["error"]["code"] == "confirmation_required"
    assert snapshot(db) == before

    done = call(db, "refund_order", me, "first-1", ask_first=True, confirmed=True, **arguments)
    assert done["ok"] is True
    assert query(db, "SELECT COUNT(*) FROM refunds WHERE order_id = ?", order_id) == [(1,)]


def test_a_cancellation_asked_first_waits_for_confirmation_then_runs(db: Path) -> None:
    order_id, email = an_order(db, "placed")
    me = {"customer": email}
    before = snapshot(db)

    asked = call(
        db, "cancel_order", me, "cancel-1", ask_first=True, order_id=order_id, reason="Not needed"
    )
    assert asked["error"]["code"] == "confirmation_required"
    assert order_id in asked["error"]["message"]
    assert snapshot(db) == before

    done = call(
        db,
        "cancel_order",
        me,
        "cancel-1",
        ask_first=True,
        confirmed=True,
        order_id=order_id,
        reason="Not needed",
    )
    assert done["ok"] is True
    assert query(db, "SELECT status FROM orders WHERE order_id = ?", order_id) == [("cancelled",)]


def test_a_cancellation_asked_first_that_the_rules_refuse_is_refused_without_asking(
    db: Path,
) -> None:
    order_id, email = an_order(db, "shipped")
    result = call(
        db,
        "cancel_order",
        {"customer": email},
        "cancel-2",
        ask_first=True,
        order_id=order_id,
        reason="Not needed",
    )
    assert result["error"]["code"] == "not_cancellable"


def test_a_refund_asked_first_that_the_rules_refuse_is_refused_without_asking(db: Path) -> None:
    order_id, email = an_order(db, "placed")
    result = call(
        db,
        "refund_order",
        {"customer": email},
        "first-2",
        ask_first=True,
        order_id=order_id,
        amount=1,
        reason="Changed my mind",
    )
    assert result["error"]["code"] == "not_refundable"


def test_a_full_refund_waits_for_confirmation_then_runs_once_with_the_same_key(db: Path) -> None:
    order_id, email = an_order(db, "delivered")
    me = {"customer": email}
    everything = refundable_cents(db, order_id) / 100
    arguments = {"order_id": order_id, "amount": everything, "reason": "Never arrived"}
    before = snapshot(db)

    asked = call(db, "refund_order", me, "full-1", **arguments)
    assert asked["error"]["code"] == "confirmation_required"
    assert snapshot(db) == before

    done = call(db, "refund_order", me, "full-1", confirmed=True, **arguments)
    replay = call(db, "refund_order", me, "full-1", **arguments)

    assert done["ok"] is True
    assert done["status"] == "refunded"
    assert replay == done
    assert query(db, "SELECT COUNT(*) FROM refunds WHERE order_id = ?", order_id) == [(1,)]


def test_a_refund_above_the_limit_needs_confirmation_and_the_limit_is_an_option(
    db: Path,
) -> None:
    order_id, email = an_order(db, "delivered", min_cents=30000)
    me = {"customer": email}
    arguments = {"order_id": order_id, "amount": 150, "reason": "Arrived damaged"}

    default = call(db, "refund_order", me, "big-1", **arguments)
    relaxed = call(db, "refund_order", me, "big-2", policy=Policy(Decimal(200)), **arguments)

    assert default["error"]["code"] == "confirmation_required"
    assert "150.00" in default["error"]["message"]
    assert relaxed["ok"] is True


def test_a_refund_the_rules_refuse_is_refused_without_asking_to_confirm(db: Path) -> None:
    order_id, email = an_order(db, "delivered")
    too_much = refundable_cents(db, order_id) / 100 + 1

    result = call(
        db,
        "refund_order",
        {"customer": email},
        "x-1",
        order_id=order_id,
        amount=too_much,
        reason="Wrong item",
    )

    assert result["error"]["code"] == "amount_exceeds_refundable"


def test_a_trusted_call_needs_no_confirmation(db: Path) -> None:
    order_id, _ = an_order(db, "delivered")
    everything = refundable_cents(db, order_id) / 100

    result = call(
        db,
        "refund_order",
        None,
        "t-1",
        order_id=order_id,
        amount=everything,
        reason="Staff goodwill refund",
    )

    assert result["ok"] is True


# --- an anonymous sender ---------------------------------------------------------------


def test_an_anonymous_sender_sees_the_status_only(db: Path) -> None:
    order_id, _ = an_order(db, "shipped")
    placed, _ = an_order(db, "placed")

    assert call(db, "get_order", ANONYMOUS, order_id=order_id) == {
        "ok": True,
        "limited": True,
        "order": {"order_id": order_id, "status": "shipped"},
    }
    assert call(db, "track_shipment", ANONYMOUS, order_id=placed) == {
        "ok": True,
        "limited": True,
        "order_id": placed,
        "status": "placed",
    }
    assert call(db, "get_order", ANONYMOUS, order_id="ORD-000001")["error"]["code"] == (
        "order_not_found"
    )


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("find_orders", {"email": "aisha.okafor@example.com"}),
        ("cancel_order", {"order_id": "ORD-000001", "reason": "Changed my mind"}),
        ("refund_order", {"order_id": "ORD-000001", "amount": 5, "reason": "Broken"}),
        (
            "update_shipping_address",
            {"order_id": "ORD-000001", "address": "1 Elm Avenue, Austin 73301, USA"},
        ),
    ],
)
def test_an_anonymous_sender_is_asked_to_write_from_the_orders_email(
    db: Path, tool: str, arguments: dict[str, Any]
) -> None:
    if "order_id" in arguments:
        arguments = {**arguments, "order_id": an_order(db, "placed")[0]}
    before = snapshot(db)

    result = call(db, tool, ANONYMOUS, "anon-1", confirmed=True, **arguments)

    assert result["error"]["code"] == "verification_required"
    message = result["error"]["message"]
    assert "verified sender: please write to us from the email address" in message
    if "order_id" in arguments:
        # It names the order the customer wrote, and the same words stand for an order
        # that does not exist: nothing about the order is revealed.
        assert arguments["order_id"] in message
        unknown = {**arguments, "order_id": "ORD-000001"}
        missing = call(db, tool, ANONYMOUS, "anon-2", confirmed=True, **unknown)
        assert missing["error"]["message"] == message.replace(arguments["order_id"], "ORD-000001")
    assert snapshot(db) == before


def test_search_faq_needs_no_identity(db: Path) -> None:
    question = {"query": "Can I pay with PayPal?"}

    answers = [call(db, "search_faq", who, **question) for who in (None, ANONYMOUS)]

    assert answers[0] == answers[1]
    assert answers[0]["matches"][0]["topic"] == "payment_methods"


# --- idempotency keys belong to their principal ----------------------------------------


def test_a_key_replays_only_for_the_principal_that_used_it(db: Path) -> None:
    order_id, owner = an_order(db, "placed")
    arguments = {"order_id": order_id, "reason": "Changed my mind"}
    first = call(db, "cancel_order", {"customer": owner}, "shared-key", **arguments)

    with pytest.raises(IdempotencyConflictError) as caught:
        call(db, "cancel_order", {"customer": someone_else(db, owner)}, "shared-key", **arguments)
    with pytest.raises(IdempotencyConflictError):
        call(db, "cancel_order", None, "shared-key", **arguments)

    assert first["ok"] is True
    assert owner not in str(caught.value)
    assert order_id not in str(caught.value)
    assert call(db, "cancel_order", {"customer": owner.upper()}, "shared-key", **arguments) == first


def test_a_refused_principal_leaves_the_key_free_for_the_verified_call(db: Path) -> None:
    order_id, owner = an_order(db, "placed")
    arguments = {"order_id": order_id, "reason": "Changed my mind"}

    refused = call(db, "cancel_order", ANONYMOUS, "verify-then-cancel", **arguments)
    done = call(db, "cancel_order", {"customer": owner}, "verify-then-cancel", **arguments)

    assert refused["error"]["code"] == "verification_required"
    assert done["ok"] is True
