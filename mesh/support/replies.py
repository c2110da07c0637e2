"""The reply grammar: every form a reply may take, per intent and outcome, with slots for facts.

A reply is one of a few sentence forms chosen by the case's tool, outcome and intent,
whose slots are filled by copying a fact of the slot's own kind. :func:`reply_forms` lists
the forms that fit one case with their slots filled: the responder SLM's output is
constrained to that list (its ``choices_from`` option), so it cannot state a status,
carrier, date or amount the tool did not return, nor run one phrase into another.
:func:`write_reply` is the reference form: the responder's training target and the safe
reply the planner falls back on when a draft fails the fact check.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from typing import Any

from mesh.support.facts import addressed_name, facts_of_result
from mesh.tools import faq
from mesh.tools.catalog import REDIRECTABLE_STATUS, REFUNDABLE_STATUSES

EXAMPLE_ORDER_ID = "ORD-123456"
"""The placeholder replies use to show what an order number looks like."""
REFUND_DAYS = "5"
"""Business days a refund takes to arrive (the refund_time FAQ entry says the same)."""

_FIND_NEXT = {
    "order_status": "Let me know which one you would like details on.",
    "track_shipment": "Reply with the order number you want to track and I will check it.",
    "cancel_order": "Reply with the order number you want to cancel.",
    "refund_request": "Reply with the order number and the amount you would like refunded.",
    "change_address": "Reply with the order number and the full new address.",
    "general_question": "Let me know which one you would like details on.",
}
_LOOKUP_NEXT = {
    "refund_request": "To refund it, please tell me the amount you would like back.",
    "change_address": "Please send me the full new address and I will update it.",
}
"""What the customer can do next about an order they asked to refund or redirect..."""
_LOOKUP_CANNOT = {
    ("refund_request", "placed"): "It has not shipped yet, so there is nothing to refund; "
    "I can cancel it instead if you ask me to.",
    ("refund_request", "refunded"): "It has already been refunded in full.",
    ("refund_request", "cancelled"): "Its payment was returned when it was cancelled, so "
    "there is nothing left to refund.",
    ("change_address", "shipped"): "Its delivery address can no longer be changed: only an "
    "order still in our warehouse can be redirected.",
}
"""...unless its status rules that out (the tools agent would refuse the action), keyed by
intent and status; the address sentence holds for every status but ``placed``."""
_ANYTHING_ELSE = "Is there anything else I can help with?"
_NOT_REACHED = (
    "If it has not reached you, the carrier can tell you where it was left with that number."
)
"""After a delivery the carrier reports: what to do when the parcel is not there."""
_ERROR_NEXT = {
    "order_not_found": "Could you check the order number?",
    "not_your_order": "Could you check the order number?",
    "customer_not_found": "Could you check the email address or send me your order number?",
    "not_your_account": "Could you check the email address or send me your order number?",
    "confirmation_required": 'Reply "yes" to confirm and I will go ahead.',
    "currency_mismatch": "How much would you like back in that currency?",
}
_LIMITED_NEXT = (
    "For more details, please write to us from the email address you placed the order with."
)
_ASK_REFERENCE = {
    "general_question": "Could you tell me your order number (it looks like "
    f"{EXAMPLE_ORDER_ID}) or the email address you ordered with, so I can look into it?",
}
_ASK_DEFAULT = (
    "I'd be glad to help. Please send me your order number (it looks like "
    f"{EXAMPLE_ORDER_ID}) or the email address you ordered with."
)
_FAQ_ORDER_NEXT = (
    f"If you send me your order number (it looks like {EXAMPLE_ORDER_ID}), I can check your "
    "order too."
)
NON_ENGLISH_REPLY = (
    "Hello, thank you for your message. Our support desk answers in English only. Please "
    f"write to us in English with your order number (it looks like {EXAMPLE_ORDER_ID}) or "
    "the email address you ordered with, and we will gladly help with orders, deliveries, "
    "cancellations, refunds and address changes."
)
"""The whole reply to a message in another language: what the desk can do, in English."""


def unknown_question_answer() -> str:
    """What the desk says when the FAQ has no answer: how to reach a person, and when."""
    answers = {entry.topic: entry.answer for entry in faq.entries()}
    return f"{answers['contact']} {answers['opening_hours']}"


def greeting(customer: object, word: str = "Hi") -> str:
    """``Hi Olga,`` (the first name only, :func:`~mesh.support.facts.addressed_name`: ``Hi
    M. Mensah,`` for an initial) or ``Hello,`` when there is no name."""
    name = addressed_name(customer)
    return f"{word} {name}," if name else "Hello,"


def write_reply(facts: Mapping[str, Any]) -> str:
    """The reference reply for these facts (the first of :func:`reply_forms`)."""
    return _body(facts, greeting(facts.get("customer")))


def reply_forms(facts: Mapping[str, Any]) -> list[str]:
    """Every reply the responder may give for these facts, the reference first.

    The forms differ only in wording around the facts (the greeting's word), never in
    which facts they state or where.
    """
    forms = [write_reply(facts)]
    if facts.get("customer"):
        forms.append(_body(facts, greeting(facts.get("customer"), "Hello")))
    return forms


def reply_choices(text: str) -> list[str]:
    """:func:`reply_forms` of the responder's JSON input (its ``choices_from`` hook)."""
    value = json.loads(text)
    if not isinstance(value, Mapping) or "ok" not in value:
        raise ValueError("the responder's input must be the facts of a case or a tool result")
    facts = value if "tool" in value else facts_of_result(value)
    return reply_forms(facts)


def declined_reply(customer: object, order_id: object) -> str:
    """The reply when a customer does not confirm: nothing was changed."""
    what = f"order {order_id}" if isinstance(order_id, str) and order_id else "your order"
    return f"{greeting(customer)} all right, I have not made any change to {what}."


@cache
def fixed_sentences() -> tuple[str, ...]:
    """The grammar's sentences without slots: each belongs to some intents and outcomes only."""
    sentences = {_ANYTHING_ELSE, _LIMITED_NEXT, _FAQ_ORDER_NEXT, _NOT_REACHED}
    for table in (_FIND_NEXT, _LOOKUP_NEXT, _LOOKUP_CANNOT, _ERROR_NEXT):
        sentences.update(table.values())
    return tuple(sorted(sentences))


def ask_reference_reply(customer: str | None, intent: str | None) -> str:
    """The reply when no tool could run: ask for an order number or email."""
    return f"{greeting(customer)} {_ASK_REFERENCE.get(str(intent), _ASK_DEFAULT)}"


def aside_reply(result: Mapping[str, Any]) -> str:
    """The sentence answering a side question from its FAQ search result (verbatim entries),
    or saying the desk could not answer it and how to reach a person."""
    matches = result.get("matches") if result.get("ok") else None
    if isinstance(matches, list) and matches:
        return "About your other question: " + " ".join(str(m["answer"]) for m in matches)
    return (
        "I could not answer your other question here; a person from our team can help: "
        f"{unknown_question_answer()}"
    )


def with_aside(reply: str, aside: Mapping[str, Any]) -> str:
    """The reply followed by its side question's answer (:func:`aside_reply`); a closing
    "Is there anything else I can help with?" moves after it, so it stays the last word."""
    if reply.endswith(_ANYTHING_ELSE):
        body = reply[: -len(_ANYTHING_ELSE)].rstrip()
        return f"{body} {aside_reply(aside)} {_ANYTHING_ELSE}"
    return f"{reply} {aside_reply(aside)}"


def unreadable_order_reply(customer: str | None) -> str:
    """The reply when the message names an order number that is not one of ours."""
    return (
        f"{greeting(customer)} I could not read the order number in your message: our order "
        f"numbers look like {EXAMPLE_ORDER_ID} (ORD- and six digits). Could you check it and "
        "send it again, or send me the email address you ordered with?"
    )


def _lookup_next(intent: str, status: str) -> str:
    """The sentence after an order's lookup: how to go on with the request, or why the
    order's status rules it out."""
    if intent == "refund_request" and status not in REFUNDABLE_STATUSES:
        return _LOOKUP_CANNOT.get((intent, status), _ANYTHING_ELSE)
    if intent == "change_address" and status != REDIRECTABLE_STATUS:
        return _LOOKUP_CANNOT[(intent, "shipped")]
    return _LOOKUP_NEXT.get(intent, _ANYTHING_ELSE)


def listed_order(order: Mapping[str, Any]) -> str:
    """One order of a listing: ``ORD-2 (Desk Lamp, delivered)``."""
    return f"{order['order_id']} ({order['product']}, {order['status']})"


def _earlier_orders(facts: Mapping[str, Any]) -> str:
    """ " Before it: ORD-2 (Desk Lamp, delivered) and ORD-1 (Yoga Mat, cancelled)." (and how
    many more), so the customer can name the order they mean; "" for one order."""
    earlier = [listed_order(order) for order in facts.get("earlier_orders", [])]
    if not earlier:
        return ""
    if int(facts["count"]) > 1 + len(earlier):
        earlier.append("older ones")
    listed = earlier[0] if len(earlier) == 1 else f"{', '.join(earlier[:-1])} and {earlier[-1]}"
    return f" Before it: {listed}."


def _body(facts: Mapping[str, Any], greet: str) -> str:
    body = _outcome(facts, greet)
    address = facts.get("shipping_address")
    if not address or facts["tool"] not in ("get_order", "track_shipment") or not facts["ok"]:
        return body
    # The address on file, for its owner who asked for it: before the closing question.
    said = f"The delivery address on it is {address}."
    if body.endswith(_ANYTHING_ELSE):
        return f"{body[: -len(_ANYTHING_ELSE)].rstrip()} {said} {_ANYTHING_ELSE}"
    return f"{body} {said}"


def _outcome(facts: Mapping[str, Any], greet: str) -> str:
    tool = facts["tool"]
    if not facts["ok"]:
        after = _ERROR_NEXT.get(str(facts.get("error")), "")
        if facts.get("error") == "confirmation_required":
            return f"{greet} I can do that. {facts['message']} {after}"
        return " ".join(part for part in (f"{greet} I'm sorry.", facts["message"], after) if part)
    if facts.get("limited"):
        return f"{greet} order {facts['order_id']} is {facts['status']}. {_LIMITED_NEXT}"
    if tool == "get_order":
        after = _lookup_next(str(facts["intent"]), str(facts["status"]))
        return (
            f"{greet} your order {facts['order_id']} ({facts['product']}, {facts['amount']} "
            f"{facts['currency']}) is {facts['status']}. {after}"
        )
    if tool == "find_orders":
        if not facts["count"]:
            return (
                f"{greet} I could not find any orders for {facts['email']}. "
                "Could you send me your order number?"
            )
        count = "1 order" if facts["count"] == 1 else f"{facts['count']} orders"
        return (
            f"{greet} I found {count} for {facts['email']}. The latest is "
            f"{facts['latest_order_id']} ({facts['latest_product']}), which is "
            f"{facts['latest_status']}.{_earlier_orders(facts)} {_FIND_NEXT[facts['intent']]}"
        )
    if tool == "track_shipment":
        if facts["status"] == "shipped":
            return (
                f"{greet} your order {facts['order_id']} is on its way with {facts['carrier']}. "
                f"The tracking number is {facts['tracking_number']} and it should arrive by "
                f"{facts['estimated_delivery']}."
            )
        if facts.get("delivered_on"):
            since = (
                f" {_NOT_REACHED}"
                if facts["status"] == "delivered"
                else f" It has since been {facts['status']}."
            )
            return (
                f"{greet} your order {facts['order_id']} was delivered on "
                f"{facts['delivered_on']} by {facts['carrier']} (tracking number "
                f"{facts['tracking_number']}).{since}"
            )
        return (
            f"{greet} your order {facts['order_id']} is {facts['status']}. It went out with "
            f"{facts['carrier']} (tracking number {facts['tracking_number']})."
        )
    if tool == "cancel_order":
        return (
            f"{greet} your order {facts['order_id']} is now cancelled and the "
            f"{facts['amount']} {facts['currency']} will be returned to you."
        )
    if tool == "refund_order":
        return (
            f"{greet} I have refunded {facts['amount']} {facts['currency']} for order "
            f"{facts['order_id']}. It should reach your account within {REFUND_DAYS} business "
            "days."
        )
    if tool == "search_faq":
        if not facts.get("answer"):
            return (
                f"{greet} I'm sorry, I don't know the answer to that question. A person from "
                f"our team can help: {unknown_question_answer()}"
            )
        after = "" if facts["intent"] == "general_question" else f" {_FAQ_ORDER_NEXT}"
        return f"{greet} thanks for asking. {facts['answer']}{after}"
    return (
        f"{greet} I have updated the delivery address: your order {facts['order_id']} will "
        f"now be delivered to {facts['shipping_address']}."
    )
