"""Tool-caller data: ``{"message", "intent", "fields"}`` in, one tool call out.

The call is decided by a fixed policy (:func:`plan_call`) from the intent and which
fields are present; its values are copied from ``fields``. Side-effecting tools need an
idempotency key, but the planner supplies it, so the model never writes one. A refund's
amount is written with the digits the customer used (``42.50`` stays ``42.50``): valid
JSON, and a pure copy for the model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from random import Random
from typing import Any

from mesh.tools.catalog import DEFAULT_REASON, TOOLS, ToolCallError, parse_call
from mesh.train.data.contract import ContractError, compact, judged
from mesh.train.data.dataset import Example, Stream, Task
from mesh.train.data.messages import FIELDS, INTENTS, compose

_AMOUNT_MARK = "\x00amount\x00"


def plan_call(intent: str, fields: Mapping[str, str | None]) -> dict[str, Any] | None:
    """The call a perfect tool-caller proposes, or None when no tool applies.

    With an order id: the intent's own tool, falling back to ``get_order`` when a
    refund has no amount or an address change no address; without one, ``find_orders``
    by email; with neither, nothing (the responder asks for an order number). The
    amount stays the customer's digits (a string here; :func:`call_text` writes it
    as a JSON number).
    """
    order_id, email = fields.get("order_id"), fields.get("email")
    reason = fields.get("reason") or DEFAULT_REASON
    if not order_id:
        return {"name": "find_orders", "arguments": {"email": email}} if email else None
    if intent == "track_shipment":
        return {"name": "track_shipment", "arguments": {"order_id": order_id}}
    if intent == "cancel_order":
        return {"name": "cancel_order", "arguments": {"order_id": order_id, "reason": reason}}
    if intent == "refund_request" and fields.get("amount"):
        arguments = {"order_id": order_id, "amount": fields["amount"], "reason": reason}
        return {"name": "refund_order", "arguments": arguments}
    if intent == "change_address" and fields.get("address"):
        arguments = {"order_id": order_id, "address": fields["address"]}
        return {"name": "update_shipping_address", "arguments": arguments}
    return {"name": "get_order", "arguments": {"order_id": order_id}}


def call_text(call: Mapping[str, Any]) -> str:
    """The call as the model writes it: compact JSON, the amount as a bare number."""
    arguments = dict(call["arguments"])
    amount = arguments.get("amount")
    if amount is None:
        return compact(call)
    arguments["amount"] = _AMOUNT_MARK
    text = compact({"name": call["name"], "arguments": arguments})
    return text.replace(json.dumps(_AMOUNT_MARK), str(amount))


class ToolCallerTask(Task):
    """Messages that carry an order id or an email, each intent equally often."""

    agent = "tool-caller"

    def __init__(self) -> None:
        super().__init__()
        assert self.contract.schema is not None
        names = [branch["properties"]["name"]["const"] for branch in self.contract.schema["oneOf"]]
        # The tool-caller proposes the order tools; the FAQ search is the workflow's own
        # call for a message with no order id or email (never the model's choice).
        expected = [name for name in TOOLS if name != "search_faq"]
        if names != expected:
            raise ValueError(
                f"services/tool-caller tools {names} differ from the catalog {expected}"
            )

    def make(self, rng: Random, stream: Stream) -> Example:
        intent = rng.choice(INTENTS)
        for _ in range(100):
            message = compose(rng, stream.split, invented=stream.invented, intent=intent)
            call = plan_call(intent, message.fields)
            if call is not None:
                break
        else:
            raise RuntimeError(f"no {intent} message with an order id or email")
        fields = {name: message.fields[name] for name in FIELDS}
        value = compact({"message": message.text, "intent": intent, "fields": fields})
        target = call_text(call)
        return self.render(value, target, json.loads(target), message.templates, message.entities)

    def judge(self, example: Example, output: str) -> dict[str, float]:
        def check(text: str) -> Any:
            call = self.contract.check(text, source=example.input)
            runnable(call)
            return call

        value, valid = judged(output, check, (ContractError, ToolCallError))
        expected = example.expected
        same_tool = isinstance(value, dict) and value.get("name") == expected["name"]
        return {"exact": float(value == expected), "valid": valid, "tool": float(same_tool)}


def runnable(call: Mapping[str, Any]) -> None:
    """Raises :class:`ToolCallError` unless the tools agent would accept the call.

    A side-effecting call gets a stand-in idempotency key first, as the planner adds one.
    """
    payload = dict(call)
    if TOOLS[call["name"]].side_effects:
        payload["idempotency_key"] = "check-only"
    parse_call(payload)
