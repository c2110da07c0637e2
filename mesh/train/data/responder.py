"""Responder data: the facts of a case as compact JSON in, the reply to the customer out.

:func:`~mesh.support.facts.reply_facts` is how a tool result becomes the responder's input
(the planner calls it on real results, training on simulated ones) and
:func:`~mesh.support.replies.write_reply` the reply the responder learns to write. :func:`simulate`
reproduces the tools agent's results (same keys, same refusal messages; a unit test
compares it with the real catalog) for orders made of entity values of one split, so
the responder is never trained on the test split's names, products or order ids.

Replies are deterministic given the facts (one wording per situation), which keeps
them consistent for customers and makes exact match a meaningful score.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from random import Random
from typing import Any

from mesh.support.facts import addressed_name, reply_facts
from mesh.support.replies import write_reply
from mesh.tools import faq, orders
from mesh.tools.catalog import (
    not_redirectable_message,
    not_shipped_message,
    order_view,
    shipment_view,
)
from mesh.tools.orders import Order
from mesh.train.data.contract import compact
from mesh.train.data.dataset import Example, Stream, Task
from mesh.train.data.entities import Entities
from mesh.train.data.messages import INTENTS
from mesh.train.data.tool_caller import plan_call

_CURRENCIES = ("USD", "EUR", "GBP", "CAD", "CHF", "SEK", "PLN", "DKK")
_STATUS_WEIGHTS = (
    ("placed", 25),
    ("shipped", 25),
    ("delivered", 35),
    ("cancelled", 8),
    ("refunded", 7),
)
_CANCEL_WHY = {
    "shipped": "it has already shipped; it can be refunded once returned",
    "delivered": "it has already been delivered; ask for a refund instead",
    "cancelled": "it is already cancelled",
    "refunded": "it has already been refunded",
}
_REFUND_WHY = {
    "placed": "it has not shipped yet; cancel it instead",
    "cancelled": "it was cancelled and never charged for shipping",
    "refunded": "it has already been fully refunded",
}


def key_facts(facts: Mapping[str, Any]) -> list[str]:
    """The strings a reply must contain: the customer's first name and the case's values."""
    wanted: list[Any] = []
    if facts.get("customer"):
        wanted.append(addressed_name(facts["customer"]))
    keys = (
        {
            "get_order": ("order_id", "status", "amount"),
            "find_orders": ("email", "latest_order_id", "latest_status"),
            "track_shipment": ("order_id", "carrier", "tracking_number"),
            "cancel_order": ("order_id", "amount"),
            "refund_order": ("order_id", "amount"),
            "update_shipping_address": ("order_id", "shipping_address"),
        }[facts["tool"]]
        if facts["ok"]
        else ("order_id", "email", "message")
    )
    wanted.extend(facts.get(key) for key in keys)
    return [str(value) for value in wanted if value is not None]


def simulate(
    call: Mapping[str, Any],
    order: Order | None,
    *,
    customer: tuple[str, str] | None = None,
    customer_orders: Sequence[Order] = (),
) -> dict[str, Any]:
    """The tools agent's result for ``call`` when the database holds ``order``.

    For ``find_orders``, ``customer`` is ``(name, email)`` of the account (None: no
    such customer) and ``customer_orders`` its orders, newest first. ``search_faq``
    needs no order: it searches the packaged FAQ entries. Calls without a principal
    (trusted) are simulated; the tools' authorization is not.
    """
    name, args = call["name"], call["arguments"]
    if name == "search_faq":
        matches = faq.search(_faq_table(), args["query"])
        return {"ok": True, "count": len(matches), "matches": [m.view() for m in matches]}
    if name == "find_orders":
        if customer is None:
            return _refused(
                "customer_not_found", f"There is no customer with email {args['email']}."
            )
        return {
            "ok": True,
            "customer": {"name": customer[0], "email": customer[1]},
            "count": len(customer_orders),
            "orders": [
                {
                    "order_id": o.order_id,
                    "status": o.status,
                    "product": o.product,
                    "quantity": o.quantity,
                    "amount": orders.format_money(o.amount_cents),
                    "currency": o.currency,
                    "ordered_at": o.ordered_at,
                }
                for o in customer_orders
            ],
        }
    if order is None:
        return _refused("order_not_found", f"There is no order {args['order_id']}.")
    oid = order.order_id
    if name == "get_order":
        return {"ok": True, "order": order_view(order)}
    if name == "track_shipment":
        if order.status == "placed":
            return _refused("not_shipped", not_shipped_message(oid))
        if order.status == "cancelled":
            return _refused("not_shipped", f"Order {oid} was cancelled before it shipped.")
        return shipment_view(order)
    if name == "cancel_order":
        if order.status != "placed":
            why = _CANCEL_WHY[order.status]
            return _refused("not_cancellable", f"Order {oid} cannot be cancelled: {why}.")
        return {
            "ok": True,
            "order_id": oid,
            "status": "cancelled",
            "previous_status": order.status,
            "amount": orders.format_money(order.amount_cents),
            "currency": order.currency,
        }
    if name == "refund_order":
        if order.status not in ("shipped", "delivered"):
            why = _REFUND_WHY[order.status]
            return _refused("not_refundable", f"Order {oid} cannot be refunded: {why}.")
        cents = orders.to_cents(args["amount"])
        if cents > order.refundable_cents:
            return _refused(
                "amount_exceeds_refundable",
                f"A refund of {orders.format_money(cents)} {order.currency} is more than the "
                f"{orders.format_money(order.refundable_cents)} {order.currency} still "
                f"refundable on order {oid}.",
            )
        refunded = order.refunded_cents + cents
        return {
            "ok": True,
            "order_id": oid,
            "refund_id": 1,
            "amount": orders.format_money(cents),
            "currency": order.currency,
            "refunded_amount": orders.format_money(refunded),
            "refundable_amount": orders.format_money(max(order.amount_cents - refunded, 0)),
            "status": "refunded" if refunded >= order.amount_cents else order.status,
        }
    if order.status != "placed":
        return _refused("address_not_updatable", not_redirectable_message(order))
    return {
        "ok": True,
        "order_id": oid,
        "previous_address": order.shipping_address,
        "shipping_address": args["address"].strip(),
    }


@cache
def _faq_table() -> sqlite3.Connection:
    """The packaged FAQ entries in an in-memory table, searched as the tools agent does."""
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    faq.seed(conn)
    return conn


class ResponderTask(Task):
    """Simulated cases: every intent, every tool, successes and refusals."""

    agent = "responder"

    def make(self, rng: Random, stream: Stream) -> Example:
        entities = Entities(stream.split, rng, invented=stream.invented)
        intent = rng.choice(INTENTS)
        fields: dict[str, str | None] = {"order_id": None, "email": None}
        if rng.random() < 0.75:
            fields["order_id"] = entities.order_id()
        else:
            fields["email"] = entities.email()
        if intent == "refund_request" and rng.random() < 0.65:
            fields["amount"] = entities.amount()
        if intent == "change_address" and rng.random() < 0.8:
            fields["address"] = entities.address()
        if rng.random() < 0.5:
            fields["reason"] = entities.reason()
        call = plan_call(intent, fields)
        assert call is not None
        name = entities.full_name()
        email = fields["email"] or entities.email(name)
        order = None
        if call["name"] != "find_orders" and rng.random() >= 0.08:
            order = _order(rng, entities, call, name, email)
        owner: tuple[str, str] | None = (name, email)
        history: list[Order] = []
        if call["name"] == "find_orders":
            roll = rng.random()
            if roll < 0.12:
                owner = None
            elif roll > 0.05 + 0.12:
                history = [
                    _order(rng, entities, call, name, email) for _ in range(rng.randint(1, 4))
                ]
                history.sort(key=lambda o: o.ordered_at, reverse=True)
        result = simulate(call, order, customer=owner, customer_orders=history)
        given = None
        if rng.random() < 0.4:
            given = name if rng.random() < 0.5 else name.split()[0]
        facts = reply_facts(intent, call, result, given)
        value = compact(facts)
        return self.render(
            value,
            write_reply(facts),
            write_reply(facts),
            frozenset(),
            {kind: frozenset(found) for kind, found in entities.used.items()},
        )

    def judge(self, example: Example, output: str) -> dict[str, float]:
        facts = json.loads(example.input)
        wanted = key_facts(facts)
        found = sum(value in output for value in wanted) / len(wanted) if wanted else 1.0
        return {
            "exact": float(output == example.expected),
            "valid": float(bool(output.strip()) and "\n" not in output),
            "facts": found,
            "all_facts": float(found == 1.0),
        }


def _order(
    rng: Random, entities: Entities, call: Mapping[str, Any], name: str, email: str
) -> Order:
    """A synthetic order; for a refund, usually one that can take the asked amount."""
    args = call["arguments"]
    statuses = [status for status, _ in _STATUS_WEIGHTS]
    status = rng.choices(statuses, weights=[weight for _, weight in _STATUS_WEIGHTS])[0]
    cents = orders.to_cents(entities.amount())
    if call["name"] == "refund_order" and rng.random() < 0.85:
        cents = max(cents, orders.to_cents(args["amount"]) + rng.randrange(0, 5000))
    ordered = datetime.combine(entities.day(), datetime.min.time(), UTC) + timedelta(
        seconds=rng.randrange(86_400)
    )
    carrier = tracking = shipped_at = delivered_at = cancelled_at = None
    if status in ("shipped", "delivered", "refunded"):
        carrier, tracking = entities.carrier(), entities.tracking_number()
        shipped = ordered + timedelta(hours=rng.randint(12, 72))
        shipped_at = _stamp(shipped)
        if status != "shipped":
            delivered_at = _stamp(shipped + timedelta(hours=rng.randint(36, 144)))
    elif status == "cancelled":
        cancelled_at = _stamp(ordered + timedelta(hours=rng.randint(1, 20)))
    refunded = cents if status == "refunded" else 0
    if status == "delivered" and rng.random() < 0.1:
        refunded = rng.randrange(1, cents) if cents > 1 else 0
    return Order(
        order_id=args.get("order_id") or entities.order_id(),
        customer_id=1,
        customer_name=name,
        customer_email=email,
        product=entities.product(),
        quantity=rng.choice((1, 1, 1, 2, 3)),
        amount_cents=cents,
        currency=rng.choice(_CURRENCIES),
        status=status,
        ordered_at=_stamp(ordered),
        shipping_address=entities.address(),
        carrier=carrier,
        tracking_number=tracking,
        shipped_at=shipped_at,
        delivered_at=delivered_at,
        cancelled_at=cancelled_at,
        refunded_cents=refunded,
    )


def _refused(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
