"""The fact check against deliberately corrupted replies: every corruption is caught.

Correct replies are the reply grammar's forms for real tool results on the demo order
database (every tool, successes and refusals); each corrupted reply changes one thing a
customer would be misled by (a status, carrier, date, amount, currency, name, product,
order id, email or tracking number swapped, a status paraphrased wrongly, the reply cut
off, a value repeated, a sentence of another intent's reply added).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from random import Random
from typing import Any

import pytest

from mesh.support.factcheck import check_reply, form_problems
from mesh.support.facts import reply_facts
from mesh.support.replies import fixed_sentences, reply_forms, write_reply
from mesh.tools import orders
from mesh.tools.catalog import run_tool_call

_LOOKUP_TOOLS = ("get_order", "track_shipment")
_STATUS_WORDS = ("placed", "shipped", "delivered", "cancelled", "refunded")
_LOOKUPS = (
    ("order_status", "get_order"),
    ("refund_request", "get_order"),
    ("change_address", "get_order"),
    ("track_shipment", "track_shipment"),
)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Facts of real tool results: lookups, tracking, finds, refusals, side effects."""
    database = tmp_path_factory.mktemp("orders") / "orders.sqlite"
    orders.create_demo_database(database)
    with sqlite3.connect(database) as conn:
        order_ids = [row[0] for row in conn.execute("SELECT order_id FROM orders LIMIT 120")]
        emails = [row[0] for row in conn.execute("SELECT email FROM customers LIMIT 25")]
    found: list[dict[str, Any]] = []
    rng = Random(7)
    for order_id in order_ids:
        intent, tool = rng.choice(_LOOKUPS)
        asked = rng.random() < 0.25  # "which address is it going to?": the owner is told
        found.append(_facts(database, intent, tool, {"order_id": order_id}, address_asked=asked))
    for email in emails:
        found.append(_facts(database, rng.choice(("order_status", "refund_request")),
                            "find_orders", {"email": email}))  # fmt: skip
    found.append(_facts(database, "order_status", "find_orders", {"email": "no.one@example.com"}))
    found.append(_facts(database, "order_status", "get_order", {"order_id": "ORD-000001"}))
    for index, order_id in enumerate(order_ids[:40]):
        key = f"check-{index}"
        if index % 3 == 0:
            call = {"order_id": order_id, "reason": "Customer request"}
            found.append(_facts(database, "cancel_order", "cancel_order", call, key))
        elif index % 3 == 1:
            call = {"order_id": order_id, "amount": 5.0, "reason": "Damaged"}
            found.append(_facts(database, "refund_request", "refund_order", call, key))
        else:
            call = {"order_id": order_id, "address": "14 Rue des Lilas, 75011 Paris, France"}
            found.append(_facts(database, "change_address", "update_shipping_address", call, key))
    for question in _FAQ_QUESTIONS:
        found.append(_facts(database, "general_question", "search_faq", {"query": question}))
        found.append(_facts(database, "refund_request", "search_faq", {"query": question}))
    return found


_FAQ_QUESTIONS = (
    "Do you ship to Canada?",
    "How long does a refund take to reach my card?",
    "Can I pay with PayPal?",
    "When is customer service open on Saturday?",
    "How much does shipping cost?",
    "Is the French Press dishwasher safe?",
)


def _facts(
    database: Path,
    intent: str,
    tool: str,
    arguments: dict[str, Any],
    key: str | None = None,
    *,
    address_asked: bool = False,
) -> dict[str, Any]:
    call: dict[str, Any] = {"name": tool, "arguments": arguments}
    if key:
        call["idempotency_key"] = key
    result = run_tool_call(database, call).result
    return reply_facts(intent, call, result, None, address_asked=address_asked)


def test_the_address_on_file_is_stated_to_its_owner_who_asked_verbatim_only(
    cases: list[dict[str, Any]],
) -> None:
    told = [f for f in cases if f.get("shipping_address") and f["tool"] in _LOOKUP_TOOLS]
    assert len(told) >= 10
    for facts in told:
        reply = write_reply(facts)
        assert f"The delivery address on it is {facts['shipping_address']}." in reply
        assert check_reply(facts, reply) == []
        other = next(f["shipping_address"] for f in told if f["order_id"] != facts["order_id"])
        assert check_reply(facts, reply.replace(facts["shipping_address"], other)), reply
        digit = re.search(r"\d", facts["shipping_address"])
        if digit is not None:
            wrong = str((int(digit.group()) + 1) % 10)
            moved = facts["shipping_address"].replace(digit.group(), wrong, 1)
            assert check_reply(facts, reply.replace(facts["shipping_address"], moved)), reply


def test_every_correct_reply_passes(cases: list[dict[str, Any]]) -> None:
    replies = [(facts, form) for facts in cases for form in reply_forms(facts)]
    rejected = [(reply, check_reply(facts, reply)) for facts, reply in replies]
    rejected = [(reply, problems) for reply, problems in rejected if problems]
    assert len(replies) >= 200
    assert len(rejected) <= 0.02 * len(replies), rejected[:5]


def test_corrupted_replies_are_all_rejected(cases: list[dict[str, Any]]) -> None:
    rng = Random(11)
    corrupted = [
        (kind, facts, bad)
        for facts in cases
        for kind, corrupt in _CORRUPTIONS.items()
        if (bad := corrupt(facts, write_reply(facts), rng)) is not None
    ]
    kinds = {kind for kind, _, _ in corrupted}
    assert len(corrupted) >= 300
    assert kinds == set(_CORRUPTIONS), set(_CORRUPTIONS) - kinds
    missed = [(kind, bad) for kind, facts, bad in corrupted if not check_reply(facts, bad)]
    assert missed == []


def test_the_issue_examples_are_rejected() -> None:
    """Replies a user saw: a cancelled order said to have shipped, the ship date as ETA."""
    cancelled = {
        "intent": "order_status", "tool": "get_order", "ok": True, "customer": "Mia Chen",
        "order_id": "ORD-479919", "status": "cancelled", "product": "Coffee Grinder",
        "amount": "89.00", "currency": "USD",
    }  # fmt: skip
    reply = "Hi Coffee, your order ORD-479919 (Coffee Grinder, 89.00 USD) is shipped."
    problems = check_reply(cancelled, reply)
    assert any("greeting" in p for p in problems)
    assert any("says shipped" in p for p in problems)
    tracked = {
        "intent": "track_shipment", "tool": "track_shipment", "ok": True, "customer": None,
        "order_id": "ORD-737161", "status": "shipped", "carrier": "Royal Mail",
        "tracking_number": "RM123456789012", "shipped_on": "2025-03-04",
        "delivered_on": None, "estimated_delivery": "2025-03-09",
    }  # fmt: skip
    reply = (
        "Hello, your order ORD-737161 is on its way with Mail. The tracking number is "
        "RM123456789012 and it should arrive by 2025-03-04."
    )
    problems = check_reply(tracked, reply)
    assert any("estimated_delivery" in p for p in problems)
    assert any("leaves out the carrier" in p for p in problems)


def test_form_rules() -> None:
    assert form_problems("Hello, your order is on its way.") == []
    assert form_problems("Hello, your order ORD-1 is on") != []
    assert form_problems("Hi Ann, 329.00 329.00 USD is refunded.") != []
    assert form_problems("") == ["the reply is empty"]


# -- corruptions ----------------------------------------------------------------------------

Corruption = Callable[[dict[str, Any], str, Random], str | None]


def _swap_value(key: str, candidates: Callable[[dict[str, Any], Random], str]) -> Corruption:
    def corrupt(facts: dict[str, Any], reply: str, rng: Random) -> str | None:
        value = facts.get(key)
        if not isinstance(value, str) or value not in reply:
            return None
        other = candidates(facts, rng)
        return None if other == value else reply.replace(value, other)

    return corrupt


def _other(choices: tuple[str, ...], current: object, rng: Random) -> str:
    return rng.choice([c for c in choices if c != current])


def _status(facts: dict[str, Any], reply: str, rng: Random) -> str | None:
    for key in ("status", "latest_status"):
        value = facts.get(key)
        if facts.get("ok") and isinstance(value, str) and re.search(rf"is {value}\b", reply):
            wrong = _other(_STATUS_WORDS, value, rng)
            if wrong == "delivered" and facts.get("delivered_on"):
                wrong = "placed"
            return re.sub(rf"is {value}\b", f"is {wrong}", reply, count=1)
    return None


def _paraphrase(facts: dict[str, Any], reply: str, rng: Random) -> str | None:
    """A status claimed in other words than the template's, contradicting the facts."""
    if "is on its way" in reply:
        return reply.replace("is on its way", "was delivered")
    if "was delivered on" in reply and facts.get("status") == "delivered":
        return reply.replace("was delivered on", "is on its way, sent on")
    if "is now cancelled" in reply:
        return reply.replace("is now cancelled", "has already shipped")
    status = facts.get("status")
    if facts.get("tool") == "get_order" and facts.get("ok") and status:
        phrase = "is on its way" if status != "shipped" else "has not shipped yet"
        return reply.replace(f"is {status}", phrase, 1)
    return None


def _date(facts: dict[str, Any], reply: str, rng: Random) -> str | None:
    for key in ("estimated_delivery", "delivered_on"):
        value = facts.get(key)
        if isinstance(value, str) and value in reply:
            shipped = facts.get("shipped_on")
            if shipped and shipped != value and rng.random() < 0.5:
                return reply.replace(value, shipped)
            year, month, day = value.split("-")
            shifted = f"{year}-{month}-{(int(day) % 28) + 1:02d}"
            return reply.replace(value, shifted if shifted != value else f"{year}-{month}-28")
    return None


def _amount(facts: dict[str, Any], reply: str, rng: Random) -> str | None:
    value = facts.get("amount")
    if not isinstance(value, str) or value not in reply:
        return None
    whole, cents = value.split(".")
    return reply.replace(value, f"{int(whole) + rng.randint(1, 90)}.{cents}")


def _truncate(facts: dict[str, Any], reply: str, rng: Random) -> str | None:
    words = reply.split()
    cut = rng.randint(3, len(words) - 2)
    while cut > 3 and words[cut - 1][-1] in ".!?":
        cut -= 1
    return " ".join(words[:cut])


def _repeat(facts: dict[str, Any], reply: str, rng: Random) -> str | None:
    for key in ("amount", "order_id", "tracking_number", "latest_order_id", "email"):
        value = facts.get(key)
        if isinstance(value, str) and value in reply:
            return reply.replace(value, f"{value} {value}", 1)
    return None


def _foreign_phrase(facts: dict[str, Any], reply: str, rng: Random) -> str | None:
    own = write_reply(facts)
    foreign = [s for s in fixed_sentences() if s not in own]
    return f"{reply} {rng.choice(foreign)}"


def _greeting(facts: dict[str, Any], reply: str, rng: Random) -> str | None:
    words = ("Coffee", "Speaker", "Reply", "Tracking", "Anna", "Lukas", "With")
    if reply.startswith("Hello,"):
        return reply.replace("Hello,", f"Hi {rng.choice(words)},", 1)
    first = str(facts.get("customer") or "").split()[:1]
    if first:
        return reply.replace(f"Hi {first[0]},", f"Hi {_other(words, first[0], rng)},", 1)
    return None


def _order_id(facts: dict[str, Any], reply: str, rng: Random) -> str | None:
    value = facts.get("order_id") or facts.get("latest_order_id")
    if not isinstance(value, str) or value not in reply:
        return None
    return reply.replace(value, f"ORD-{rng.randint(100000, 999999)}")


def _number(facts: dict[str, Any], reply: str, rng: Random) -> str | None:
    """Any number the reply states (days, hours, a price in a policy) changed."""
    match = re.search(r"(?<![\w.-])(\d+)(?![\w-])", reply)
    if match is None:
        return None
    changed = str(int(match.group(1)) + rng.randint(1, 9))
    return reply[: match.start()] + changed + reply[match.end() :]


_CORRUPTIONS: dict[str, Corruption] = {
    "number": _number,
    "status": _status,
    "paraphrase": _paraphrase,
    "carrier": _swap_value("carrier", lambda f, rng: _other(orders.CARRIERS, f["carrier"], rng)),
    "date": _date,
    "amount": _amount,
    "currency": _swap_value(
        "currency", lambda f, rng: _other(orders.CURRENCIES, f["currency"], rng)
    ),
    "name": _greeting,
    "product": _swap_value("product", lambda f, rng: _other(orders.PRODUCTS, f["product"], rng)),
    "latest_product": _swap_value(
        "latest_product", lambda f, rng: _other(orders.PRODUCTS, f["latest_product"], rng)
    ),
    "order_id": _order_id,
    "email": _swap_value("email", lambda f, rng: f"x{rng.randint(1, 99)}.{f['email']}"),
    "tracking_number": _swap_value(
        "tracking_number",
        lambda f, rng: f"{f['tracking_number'][:2]}{rng.randint(10**11, 10**12 - 1)}",
    ),
    "truncated": _truncate,
    "repeated": _repeat,
    "other_intent": _foreign_phrase,
}


@pytest.mark.parametrize(
    ("intent", "status", "sentence"),
    [
        ("refund_request", "placed", "nothing to refund; I can cancel it instead"),
        ("refund_request", "refunded", "already been refunded in full"),
        ("refund_request", "cancelled", "nothing left to refund"),
        ("refund_request", "delivered", "the amount you would like back"),
        ("change_address", "delivered", "can no longer be changed"),
        ("change_address", "shipped", "can no longer be changed"),
        ("change_address", "placed", "send me the full new address"),
    ],
)
def test_a_lookup_says_what_the_status_allows(intent: str, status: str, sentence: str) -> None:
    facts = {
        "intent": intent, "tool": "get_order", "ok": True, "customer": "Ana Silva",
        "order_id": "ORD-101010", "status": status, "product": "Kettle", "amount": "39.00",
        "currency": "EUR",
    }  # fmt: skip
    reply = write_reply(facts)
    assert sentence in reply
    assert check_reply(facts, reply) == []


def test_a_listing_of_orders_names_each_with_its_own_product_and_status() -> None:
    facts = {
        "intent": "order_status", "tool": "find_orders", "ok": True, "customer": "Astrid Wang",
        "email": "astrid@example.com", "count": 4, "latest_order_id": "ORD-900948",
        "latest_status": "placed", "latest_product": "Portable SSD 1TB",
        "earlier_orders": [
            {"order_id": "ORD-100001", "product": "Desk Lamp", "status": "delivered"},
            {"order_id": "ORD-100002", "product": "Yoga Mat", "status": "cancelled"},
        ],
    }  # fmt: skip
    reply = write_reply(facts)
    assert "Before it: ORD-100001 (Desk Lamp, delivered), ORD-100002 (Yoga Mat, cancelled)" in reply
    assert reply.endswith("and older ones. Let me know which one you would like details on.")
    assert check_reply(facts, reply) == []
    # A status, product or id moved from one order to another is caught.
    for wrong in (
        reply.replace("(Yoga Mat, cancelled)", "(Yoga Mat, shipped)"),
        reply.replace("(Desk Lamp, delivered)", "(Yoga Mat, delivered)"),
        reply.replace("which is placed", "which is delivered"),
        reply.replace("ORD-100002", "ORD-100003"),
        reply.replace(", ORD-100002 (Yoga Mat, cancelled)", ""),
    ):
        assert wrong != reply
        assert check_reply(facts, wrong), wrong
