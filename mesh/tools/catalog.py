"""The tools a function-calling SLM may propose, and how one proposed call is checked and run.

Two kinds of failure are kept apart on purpose. A *malformed* call (not an object, an
unknown tool, arguments that break the tool's JSON schema, a side-effecting call without
an idempotency key) raises a :class:`ToolCallError` whose message says exactly what is
wrong, so the planner can repair the SLM's output. A well-formed call that the business
rules refuse (no such order, an order that has already shipped) is a normal result,
``{"ok": false, "error": {"code", "message"}}``, because the responder must explain it
to the customer.

Side-effecting tools run in one SQLite write transaction together with the lookup and
store of their idempotency key, so a retried call replays the first result and changes
nothing twice.
"""

from __future__ import annotations

import copy
import difflib
import json
import sqlite3
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from jsonschema import Draft202012Validator

from mesh.schema import SchemaValidator
from mesh.tools import orders

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ORDER_ID_PATTERN = r"^ORD-\d{6}$"
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,128}$"
"""1-128 printable ASCII characters without spaces: UUIDs, ``task-id:step`` and the like."""

_ENVELOPE_KEYS = frozenset({"name", "arguments", "idempotency_key"})
_MAX_REASON_CHARS = 300

Handler = Callable[[sqlite3.Connection, Mapping[str, Any]], dict[str, Any]]


class ToolCallError(ValueError):
    """A proposed tool call is malformed; nothing was executed."""

    code: ClassVar[str] = "invalid_tool_call"

    def to_dict(self) -> dict[str, Any]:
        """The ``{"code", "message"}`` object sent back to the caller."""
        return {"code": self.code, "message": str(self)}


class MalformedCallError(ToolCallError):
    """The call is not an object of ``name``, ``arguments`` and ``idempotency_key``."""

    code = "malformed_call"


class UnknownToolError(ToolCallError):
    """The call names a tool that the catalog does not have."""

    code = "unknown_tool"


class MissingIdempotencyKeyError(ToolCallError):
    """A side-effecting call came without the key that makes retries safe."""

    code = "missing_idempotency_key"


class IdempotencyConflictError(ToolCallError):
    """An idempotency key was reused for a different call; retries must repeat the call."""

    code = "idempotency_conflict"


@dataclass(frozen=True)
class ArgumentProblem:
    """One schema violation: where (a JSON pointer into the arguments) and why."""

    pointer: str
    reason: str

    def describe(self) -> str:
        """``/amount: ...``; the whole arguments object reads as ``(root)``."""
        return f"{self.pointer or '(root)'}: {self.reason}"


class InvalidArgumentsError(ToolCallError):
    """The arguments break the tool's JSON schema; every problem is listed."""

    code = "invalid_arguments"

    def __init__(self, tool: str, problems: list[ArgumentProblem]) -> None:
        self.tool = tool
        self.problems = tuple(problems)
        listing = "; ".join(problem.describe() for problem in self.problems)
        super().__init__(f"invalid arguments for {tool}: {listing}")

    def to_dict(self) -> dict[str, Any]:
        """Adds ``problems`` (pointer and reason each) so a planner can repair them."""
        return {
            **super().to_dict(),
            "problems": [{"pointer": p.pointer, "reason": p.reason} for p in self.problems],
        }


@dataclass(frozen=True)
class Tool:
    """A tool the SLM can call: what it does, its argument schema, and its handler."""

    name: str
    description: str
    parameters: dict[str, Any]
    handler: Handler = field(repr=False, compare=False)
    side_effects: bool = False

    def __post_init__(self) -> None:
        _Validator.check_schema(self.parameters)

    def spec(self) -> dict[str, Any]:
        """The tool in OpenAI function-calling form, for SLM prompts."""
        parameters = {k: copy.deepcopy(v) for k, v in self.parameters.items() if k != "$schema"}
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": parameters,
            },
        }


@dataclass(frozen=True)
class ToolCall:
    """A call that passed :func:`parse_call`: a known tool with schema-valid arguments."""

    tool: Tool
    arguments: dict[str, Any]
    idempotency_key: str | None = None

    @property
    def name(self) -> str:
        """The tool's name."""
        return self.tool.name


@dataclass(frozen=True)
class Execution:
    """The result of running a call; ``replayed`` when it came from an earlier attempt."""

    result: dict[str, Any]
    replayed: bool = False


def tool_specs() -> list[dict[str, Any]]:
    """Every tool in OpenAI function-calling form, in catalog order."""
    return [tool.spec() for tool in TOOLS.values()]


def parse_call(payload: object) -> ToolCall:
    """Checks a proposed call ``{"name", "arguments", "idempotency_key"?}``.

    ``arguments`` may also be a JSON string, as OpenAI-style function calls emit it.
    Whole-number floats become ints first, because A2A data parts carry every number
    as a double and a retry must compare equal to the first attempt.
    Raises a :class:`ToolCallError` subclass naming each thing that is wrong.
    """
    if not isinstance(payload, Mapping):
        raise MalformedCallError(
            "a tool call must be a JSON object with 'name' and 'arguments', "
            f"got {_json_type(payload)}"
        )
    unexpected = sorted(set(payload) - _ENVELOPE_KEYS)
    if unexpected:
        raise MalformedCallError(
            f"unexpected field(s) {', '.join(map(repr, unexpected))} in tool call; "
            "allowed: 'name', 'arguments', 'idempotency_key'"
        )
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        raise MalformedCallError(f"'name' must be a non-empty string, got {_json_type(name)}")
    tool = TOOLS.get(name)
    if tool is None:
        close = difflib.get_close_matches(name, TOOLS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownToolError(f"unknown tool {name!r} (available: {', '.join(TOOLS)}){hint}")
    arguments = _normalize_numbers(_decode_arguments(payload.get("arguments", {})))
    problems = _schema_problems(tool, arguments)
    if problems or not isinstance(arguments, Mapping):
        raise InvalidArgumentsError(tool.name, problems)
    key = payload.get("idempotency_key")
    if key is not None and not (isinstance(key, str) and _KEY_VALIDATOR.is_valid(key)):
        raise MalformedCallError(
            "'idempotency_key' must be 1-128 printable ASCII characters without spaces"
        )
    if tool.side_effects and key is None:
        raise MissingIdempotencyKeyError(
            f"{tool.name} changes the order, so it needs an 'idempotency_key' beside "
            "'arguments'; a retry with the same key is then applied only once"
        )
    return ToolCall(tool=tool, arguments=dict(arguments), idempotency_key=key)


def execute_call(database: str | Path, call: ToolCall) -> Execution:
    """Runs a parsed call against the order database (blocking: use a worker thread).

    A side-effecting call first looks up its idempotency key: a recorded result is
    returned as is (``replayed``), a key recorded for a different call raises
    :class:`IdempotencyConflictError`, and otherwise the call runs and its result is
    recorded in the same transaction. Read-only calls ignore the key.
    """
    with closing(orders.connect(database)) as conn:
        if not call.tool.side_effects:
            return Execution(call.tool.handler(conn, call.arguments))
        if call.idempotency_key is None:
            raise MissingIdempotencyKeyError(f"{call.name} needs an 'idempotency_key'")
        fingerprint = _canonical_json(call.arguments)
        with orders.write_transaction(conn):
            recorded = orders.recorded_call(conn, call.idempotency_key)
            if recorded is not None:
                if recorded.tool != call.name or recorded.arguments != fingerprint:
                    raise IdempotencyConflictError(
                        f"idempotency key {call.idempotency_key!r} was already used for "
                        f"{recorded.tool} with arguments {recorded.arguments}; "
                        "use a new key for a different call"
                    )
                return Execution(recorded.result, replayed=True)
            result = call.tool.handler(conn, call.arguments)
            orders.record_call(
                conn, call.idempotency_key, call.name, fingerprint, result, at=orders.utc_now()
            )
        return Execution(result)


def run_tool_call(database: str | Path, payload: object) -> Execution:
    """:func:`parse_call` then :func:`execute_call`."""
    return execute_call(database, parse_call(payload))


def _refused(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


def _order_not_found(order_id: str) -> dict[str, Any]:
    return _refused("order_not_found", f"There is no order {order_id}.")


def order_view(order: orders.Order) -> dict[str, Any]:
    """An order as the tools return it (and as the responder's training data shows it)."""
    return {
        "order_id": order.order_id,
        "status": order.status,
        "product": order.product,
        "quantity": order.quantity,
        "amount": orders.format_money(order.amount_cents),
        "currency": order.currency,
        "ordered_at": order.ordered_at,
        "shipping_address": order.shipping_address,
        "carrier": order.carrier,
        "tracking_number": order.tracking_number,
        "shipped_at": order.shipped_at,
        "delivered_at": order.delivered_at,
        "cancelled_at": order.cancelled_at,
        "refunded_amount": orders.format_money(order.refunded_cents),
        "refundable_amount": orders.format_money(order.refundable_cents),
        "customer": {"name": order.customer_name, "email": order.customer_email},
    }


def _get_order(conn: sqlite3.Connection, args: Mapping[str, Any]) -> dict[str, Any]:
    order = orders.get_order(conn, args["order_id"])
    if order is None:
        return _order_not_found(args["order_id"])
    return {"ok": True, "order": order_view(order)}


def _find_orders(conn: sqlite3.Connection, args: Mapping[str, Any]) -> dict[str, Any]:
    customer = orders.find_customer(conn, args["email"])
    if customer is None:
        return _refused("customer_not_found", f"There is no customer with email {args['email']}.")
    found = orders.orders_of_customer(conn, customer.id)
    return {
        "ok": True,
        "customer": {"name": customer.name, "email": customer.email},
        "count": len(found),
        "orders": [
            {
                "order_id": order.order_id,
                "status": order.status,
                "product": order.product,
                "quantity": order.quantity,
                "amount": orders.format_money(order.amount_cents),
                "currency": order.currency,
                "ordered_at": order.ordered_at,
            }
            for order in found
        ],
    }


def shipment_view(order: orders.Order) -> dict[str, Any]:
    """Tracking facts of a shipped or delivered order (also the responder's training data)."""
    estimated = None
    if order.status == "shipped" and order.shipped_at:
        shipped = datetime.strptime(order.shipped_at, "%Y-%m-%dT%H:%M:%SZ")
        estimated = (shipped.replace(tzinfo=UTC) + timedelta(days=5)).date().isoformat()
    return {
        "ok": True,
        "order_id": order.order_id,
        "status": order.status,
        "carrier": order.carrier,
        "tracking_number": order.tracking_number,
        "shipped_at": order.shipped_at,
        "delivered_at": order.delivered_at,
        "estimated_delivery": estimated,
        "shipping_address": order.shipping_address,
    }


def _track_shipment(conn: sqlite3.Connection, args: Mapping[str, Any]) -> dict[str, Any]:
    order = orders.get_order(conn, args["order_id"])
    if order is None:
        return _order_not_found(args["order_id"])
    if order.status == "placed":
        return _refused(
            "not_shipped",
            f"Order {order.order_id} has not shipped yet, so there is no tracking number.",
        )
    if order.status == "cancelled":
        return _refused("not_shipped", f"Order {order.order_id} was cancelled before it shipped.")
    return shipment_view(order)


def _cancel_order(conn: sqlite3.Connection, args: Mapping[str, Any]) -> dict[str, Any]:
    order = orders.get_order(conn, args["order_id"])
    if order is None:
        return _order_not_found(args["order_id"])
    if order.status != "placed":
        why = {
            "shipped": "it has already shipped; it can be refunded once returned",
            "delivered": "it has already been delivered; ask for a refund instead",
            "cancelled": "it is already cancelled",
            "refunded": "it has already been refunded",
        }[order.status]
        return _refused("not_cancellable", f"Order {order.order_id} cannot be cancelled: {why}.")
    orders.cancel_order(conn, order.order_id, args["reason"], at=orders.utc_now())
    return {
        "ok": True,
        "order_id": order.order_id,
        "status": "cancelled",
        "previous_status": order.status,
        "amount": orders.format_money(order.amount_cents),
        "currency": order.currency,
    }


def _refund_order(conn: sqlite3.Connection, args: Mapping[str, Any]) -> dict[str, Any]:
    order = orders.get_order(conn, args["order_id"])
    if order is None:
        return _order_not_found(args["order_id"])
    if order.status not in ("shipped", "delivered"):
        why = {
            "placed": "it has not shipped yet; cancel it instead",
            "cancelled": "it was cancelled and never charged for shipping",
            "refunded": "it has already been fully refunded",
        }[order.status]
        return _refused("not_refundable", f"Order {order.order_id} cannot be refunded: {why}.")
    amount_cents = orders.to_cents(args["amount"])
    if amount_cents > order.refundable_cents:
        return _refused(
            "amount_exceeds_refundable",
            f"A refund of {orders.format_money(amount_cents)} {order.currency} is more than "
            f"the {orders.format_money(order.refundable_cents)} {order.currency} still "
            f"refundable on order {order.order_id}.",
        )
    refund_id = orders.add_refund(
        conn, order.order_id, amount_cents, args["reason"], at=orders.utc_now()
    )
    after = orders.get_order(conn, order.order_id)
    assert after is not None
    return {
        "ok": True,
        "order_id": order.order_id,
        "refund_id": refund_id,
        "amount": orders.format_money(amount_cents),
        "currency": order.currency,
        "refunded_amount": orders.format_money(after.refunded_cents),
        "refundable_amount": orders.format_money(after.refundable_cents),
        "status": after.status,
    }


def _update_shipping_address(conn: sqlite3.Connection, args: Mapping[str, Any]) -> dict[str, Any]:
    order = orders.get_order(conn, args["order_id"])
    if order is None:
        return _order_not_found(args["order_id"])
    if order.status != "placed":
        return _refused(
            "address_not_updatable",
            f"The shipping address of order {order.order_id} cannot be changed because it "
            f"is {order.status}; only orders that have not shipped can be redirected.",
        )
    address = args["address"].strip()
    orders.change_shipping_address(conn, order.order_id, address, at=orders.utc_now())
    return {
        "ok": True,
        "order_id": order.order_id,
        "previous_address": order.shipping_address,
        "shipping_address": address,
    }


_Validator = SchemaValidator
_KEY_VALIDATOR = _Validator({"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN})


def _object_schema(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "$schema": SCHEMA_DIALECT,
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


_ORDER_ID = {
    "type": "string",
    "pattern": ORDER_ID_PATTERN,
    "description": "Order id exactly as the customer wrote it, e.g. ORD-104233.",
}
_REASON = {
    "type": "string",
    "minLength": 3,
    "maxLength": 500,
    "pattern": r"\S",
    "description": "Why, in a short sentence, taken from the customer's message.",
}

TOOLS: Mapping[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            name="get_order",
            description="Look up one order: status, product, amount, dates, address, "
            "tracking and how much has been refunded.",
            parameters=_object_schema({"order_id": _ORDER_ID}),
            handler=_get_order,
        ),
        Tool(
            name="find_orders",
            description="List a customer's orders, newest first, by the email address "
            "they ordered with. Use when the customer gives no order id.",
            parameters=_object_schema(
                {
                    "email": {
                        "type": "string",
                        "format": "email",
                        "pattern": r"^[^@\s]+@[^@\s]+\.[A-Za-z0-9-]*[A-Za-z0-9]$",
                        "maxLength": 254,
                        "description": "The customer's email address.",
                    }
                }
            ),
            handler=_find_orders,
        ),
        Tool(
            name="track_shipment",
            description="Carrier, tracking number and delivery dates of a shipped order.",
            parameters=_object_schema({"order_id": _ORDER_ID}),
            handler=_track_shipment,
        ),
        Tool(
            name="cancel_order",
            description="Cancel an order that has not shipped yet (status 'placed').",
            parameters=_object_schema({"order_id": _ORDER_ID, "reason": _REASON}),
            handler=_cancel_order,
            side_effects=True,
        ),
        Tool(
            name="refund_order",
            description="Refund part or all of a shipped or delivered order, up to the "
            "amount not yet refunded.",
            parameters=_object_schema(
                {
                    "order_id": _ORDER_ID,
                    "amount": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "maximum": 1_000_000,
                        "multipleOf": 0.01,
                        "description": "Amount to refund in the order's currency, e.g. 19.99.",
                    },
                    "reason": _REASON,
                }
            ),
            handler=_refund_order,
            side_effects=True,
        ),
        Tool(
            name="update_shipping_address",
            description="Change where an order that has not shipped yet will be delivered.",
            parameters=_object_schema(
                {
                    "order_id": _ORDER_ID,
                    "address": {
                        "type": "string",
                        "minLength": 10,
                        "maxLength": 300,
                        # A full address holds a number and a comma: a date or a sentence
                        # copied by mistake is refused (and a grounded span never picks one).
                        "pattern": r"\d.*,|,.*\d",
                        "description": "The full new address: street and number, city, "
                        "postcode, country.",
                    },
                }
            ),
            handler=_update_shipping_address,
            side_effects=True,
        ),
    )
}
"""Every tool by name."""

_VALIDATORS = {
    name: _Validator(tool.parameters, format_checker=Draft202012Validator.FORMAT_CHECKER)
    for name, tool in TOOLS.items()
}


def _schema_problems(tool: Tool, arguments: object) -> list[ArgumentProblem]:
    """Every violation, pointing at the offending property rather than its parent."""
    problems: dict[ArgumentProblem, None] = {}
    for error in _VALIDATORS[tool.name].iter_errors(arguments):
        pointer = _pointer(error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, Mapping):
            for name in error.validator_value:
                if name not in error.instance:
                    problems[ArgumentProblem(f"{pointer}/{_escape(name)}", "required, missing")] = (
                        None
                    )
        elif error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
            allowed = list(error.schema.get("properties", {}))
            for name in sorted(set(error.instance) - set(allowed)):
                reason = f"unexpected property (allowed: {', '.join(allowed)})"
                problems[ArgumentProblem(f"{pointer}/{_escape(name)}", reason)] = None
        else:
            problems[ArgumentProblem(pointer, _shorten(error.message))] = None
    return sorted(problems, key=lambda problem: problem.pointer)


def _pointer(path: Any) -> str:
    return "".join(f"/{_escape(str(part))}" for part in path)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _shorten(text: str) -> str:
    if len(text) <= _MAX_REASON_CHARS:
        return text
    return text[: _MAX_REASON_CHARS - 1] + "…"


def _decode_arguments(arguments: object) -> object:
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.loads(arguments)
    except json.JSONDecodeError as exc:
        raise MalformedCallError(f"'arguments' is a string but not valid JSON: {exc}") from exc


def _normalize_numbers(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {key: _normalize_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalize_numbers(item) for item in value]
    return value


def _canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
