"""The tools a function-calling SLM may propose, and how one proposed call is checked and run.

Two kinds of failure are kept apart on purpose. A *malformed* call (not an object, an
unknown tool, arguments that break the tool's JSON schema, a side-effecting call without
an idempotency key) raises a :class:`ToolCallError` whose message says exactly what is
wrong, so the planner can repair the SLM's output. A well-formed call that the business
rules refuse (no such order, an order that has already shipped) is a normal result,
``{"ok": false, "error": {"code", "message"}}``, because the responder must explain it
to the customer.

Side-effecting tools run in one write transaction together with the lookup and store of
their idempotency key, so a retried call replays the first result and changes nothing
twice: on SQLite under the file's write lock, on PostgreSQL under a lock on the key and a
row lock on the order, so replicas sharing the database apply each key once and never
refund more than is refundable.

A call may name the customer it acts for (``principal``, see :class:`Principal`); the
tools then answer only about that customer's orders and account, an anonymous sender
sees an order's status and nothing else, and a refund above :class:`Policy`'s limit waits
for the customer's confirmation. A call without ``principal`` is a trusted mesh-internal
call (staff tooling holding the mesh's API token, explicit plans) with full access.
Refusals for someone else's order read the same whether or not the order exists.

Every tool also declares the JSON schema of its result (:attr:`Tool.result_schema`,
refusals included); properties that carry a fact a reply may state are marked
``"x-fact": KIND`` (one of :data:`FACT_KINDS`), which :func:`fact_kinds` lists per tool.
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar

from jsonschema import Draft202012Validator

from mesh.schema import SchemaValidator
from mesh.tools import faq, orders
from mesh.tools.connection import Connection

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ORDER_ID_PATTERN = r"^ORD-\d{6}$"
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,128}$"
"""1-128 printable ASCII characters without spaces: UUIDs, ``task-id:step`` and the like."""

_ENVELOPE_KEYS = (
    "name",
    "arguments",
    "idempotency_key",
    "principal",
    "confirmed",
    "ask_first",
    "currency",
)
_MAX_REASON_CHARS = 300

FACT_KINDS = (
    "order_id",
    "status",
    "carrier",
    "tracking_number",
    "date",
    "amount",
    "currency",
    "product",
    "email",
    "name",
    "address",
    "faq_answer",
)
"""The kinds of fact a result property may carry (its ``x-fact``)."""

DEFAULT_CONFIRM_REFUND_ABOVE = Decimal("100.00")
"""A customer's refund above this amount (in the order's currency) needs confirmation."""

Handler = Callable[[Connection, Mapping[str, Any]], dict[str, Any]]


class ToolCallError(ValueError):
    """A proposed tool call is malformed; nothing was executed."""

    code: ClassVar[str] = "invalid_tool_call"

    def to_dict(self) -> dict[str, Any]:
        """The ``{"code", "message"}`` object sent back to the caller."""
        return {"code": self.code, "message": str(self)}


class MalformedCallError(ToolCallError):
    """The call's envelope (``name``, ``arguments``, ``idempotency_key``, ``principal``,
    ``confirmed``) is not what it must be."""

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
    """A tool the SLM can call: what it does, its argument and result schemas, its handler."""

    name: str
    description: str
    parameters: dict[str, Any]
    handler: Handler = field(repr=False, compare=False)
    result_schema: dict[str, Any] = field(repr=False)
    side_effects: bool = False

    def __post_init__(self) -> None:
        _Validator.check_schema(self.parameters)
        _Validator.check_schema(self.result_schema)
        unknown = {kind for _, kind in _facts(self.result_schema, "")} - set(FACT_KINDS)
        if unknown:
            raise ValueError(f"{self.name}: unknown x-fact kind(s) {sorted(unknown)}")

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
class Principal:
    """Whom a call acts for: a verified customer's email (lower case), or None: anonymous.

    On the wire: ``{"customer": "<email>"}`` or ``{"anonymous": true}``.
    """

    customer: str | None = None

    @property
    def anonymous(self) -> bool:
        """Whether the sender is not verified."""
        return self.customer is None

    def to_dict(self) -> dict[str, Any]:
        """The wire form."""
        return {"anonymous": True} if self.customer is None else {"customer": self.customer}

    @classmethod
    def parse(cls, value: object) -> Principal:
        """The principal of a call envelope; raises :class:`MalformedCallError`."""
        if isinstance(value, Mapping) and set(value) == {"customer"}:
            email = value["customer"]
            if isinstance(email, str) and _EMAIL_VALIDATOR.is_valid(email.strip()):
                return cls(customer=email.strip().lower())
        elif isinstance(value, Mapping) and set(value) == {"anonymous"}:
            if value["anonymous"] is True:
                return cls()
        raise MalformedCallError(
            "'principal' must be {'customer': '<email address>'} or {'anonymous': true} "
            "(leave it out for a trusted mesh-internal call)"
        )


@dataclass(frozen=True)
class Policy:
    """The tools agent's limits on what a customer may do without confirming it."""

    confirm_refund_above: Decimal = DEFAULT_CONFIRM_REFUND_ABOVE

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Policy:
        """From the tools agent's spec options (``confirm_refund_above``: an amount >= 0)."""
        value = options.get("confirm_refund_above", DEFAULT_CONFIRM_REFUND_ABOVE)
        amount = None
        if isinstance(value, (int, float, str, Decimal)) and not isinstance(value, bool):
            try:
                amount = Decimal(str(value))
            except InvalidOperation:
                amount = None
        if amount is None or not amount.is_finite() or amount < 0:
            raise ValueError(f"options.confirm_refund_above must be an amount >= 0, got {value!r}")
        return cls(confirm_refund_above=amount)


@dataclass(frozen=True)
class ToolCall:
    """A call that passed :func:`parse_call`: a known tool with schema-valid arguments."""

    tool: Tool
    arguments: dict[str, Any]
    idempotency_key: str | None = None
    principal: Principal | None = None
    confirmed: bool = False
    ask_first: bool = False
    """The caller wants the customer's yes before a refund of any amount (not only one above
    the limit) or a cancellation: set when the desk is less sure the message asks for it."""
    currency: str | None = None
    """The currency the customer wrote a refund's amount in ("20 GBP back"); the amount
    argument is in the order's currency, so a refund asked in another one is refused."""

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


def fact_kinds(tool_name: str) -> dict[str, str]:
    """``{pointer: kind}`` of every fact-bearing property of a tool's result.

    Pointers are JSON Pointers into the result with ``*`` for any array item, e.g.
    ``/order/status`` -> ``status``, ``/orders/*/order_id`` -> ``order_id``,
    ``/matches/*/answer`` -> ``faq_answer``. Raises KeyError for an unknown tool.
    """
    return dict(_facts(TOOLS[tool_name].result_schema, ""))


def result_facts(tool_name: str, result: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    """``(pointer, kind, value)`` of every fact a real result holds, nulls left out.

    Pointers here are concrete (``/orders/0/status``); their patterns are the keys of
    :func:`fact_kinds`.
    """
    found = []
    for pattern, kind in fact_kinds(tool_name).items():
        for pointer, value in _resolve(result, pattern.split("/")[1:], ""):
            if value is not None:
                found.append((pointer, kind, value))
    return found


def _resolve(value: object, tokens: list[str], pointer: str) -> Iterator[tuple[str, object]]:
    if not tokens:
        yield pointer, value
        return
    token, rest = tokens[0], tokens[1:]
    if token == "*" and isinstance(value, list):
        for n, item in enumerate(value):
            yield from _resolve(item, rest, f"{pointer}/{n}")
        return
    name = token.replace("~1", "/").replace("~0", "~")
    if isinstance(value, Mapping) and name in value:
        yield from _resolve(value[name], rest, f"{pointer}/{token}")


def parse_call(payload: object) -> ToolCall:
    """Checks a proposed call ``{"name", "arguments", "idempotency_key"?, "principal"?,
    "confirmed"?, "ask_first"?, "currency"?}``.

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
    unexpected = sorted(set(payload) - set(_ENVELOPE_KEYS))
    if unexpected:
        raise MalformedCallError(
            f"unexpected field(s) {', '.join(map(repr, unexpected))} in tool call; "
            f"allowed: {', '.join(map(repr, _ENVELOPE_KEYS))}"
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
    principal = Principal.parse(payload["principal"]) if "principal" in payload else None
    confirmed = payload.get("confirmed", False)
    if not isinstance(confirmed, bool):
        raise MalformedCallError(f"'confirmed' must be true or false, got {_json_type(confirmed)}")
    ask_first = payload.get("ask_first", False)
    if not isinstance(ask_first, bool):
        raise MalformedCallError(f"'ask_first' must be true or false, got {_json_type(ask_first)}")
    currency = payload.get("currency")
    if currency is not None and currency not in orders.CURRENCIES:
        raise MalformedCallError(
            f"'currency' must be one of {', '.join(orders.CURRENCIES)}, got {currency!r}"
        )
    if tool.side_effects and key is None:
        raise MissingIdempotencyKeyError(
            f"{tool.name} changes the order, so it needs an 'idempotency_key' beside "
            "'arguments'; a retry with the same key is then applied only once"
        )
    return ToolCall(
        tool=tool,
        arguments=dict(arguments),
        idempotency_key=key,
        principal=principal,
        confirmed=confirmed,
        ask_first=ask_first,
        currency=currency,
    )


def execute_call(
    database: str | Path, call: ToolCall, *, policy: Policy | None = None
) -> Execution:
    """Runs a parsed call against the SQLite order database at ``database`` (blocking: use a
    worker thread); see :func:`execute_on`."""
    with closing(orders.connect(database)) as conn:
        return execute_on(conn, call, policy=policy)


def execute_on(conn: Connection, call: ToolCall, *, policy: Policy | None = None) -> Execution:
    """Runs a parsed call on an open order database connection (SQLite or PostgreSQL).

    A side-effecting call first looks up its idempotency key: a recorded result is
    returned as is (``replayed``), a key recorded for a different call raises
    :class:`IdempotencyConflictError`, and otherwise the call runs and its result is
    recorded in the same transaction. Read-only calls ignore the key.

    The principal is part of what a key identifies: a key first used for one customer
    (or for a trusted call) replays for nobody else. ``confirmed`` is not: once a
    confirmed refund ran, its retry replays it. A call the principal may not make, or
    one awaiting confirmation, changes nothing and is not recorded, so the same key
    can carry the verified or confirmed call that follows.
    """
    policy = policy or Policy()
    if not call.tool.side_effects:
        decided = _authorize(conn, call, policy)
        return Execution(decided or call.tool.handler(conn, call.arguments))
    if call.idempotency_key is None:
        raise MissingIdempotencyKeyError(f"{call.name} needs an 'idempotency_key'")
    fingerprint = _fingerprint(call)
    order_id = call.arguments.get("order_id")
    with orders.write_transaction(
        conn,
        idempotency_key=call.idempotency_key,
        order_id=order_id if isinstance(order_id, str) else None,
    ):
        recorded = orders.recorded_call(conn, call.idempotency_key)
        if recorded is not None:
            if recorded.tool != call.name or recorded.arguments != fingerprint:
                raise _conflict(call, recorded)
            return Execution(recorded.result, replayed=True)
        decided = _authorize(conn, call, policy)
        if decided is not None:
            return Execution(decided)
        result = call.tool.handler(conn, call.arguments)
        orders.record_call(
            conn, call.idempotency_key, call.name, fingerprint, result, at=orders.utc_now()
        )
    return Execution(result)


def run_tool_call(
    database: str | Path, payload: object, *, policy: Policy | None = None
) -> Execution:
    """:func:`parse_call` then :func:`execute_call`."""
    return execute_call(database, parse_call(payload), policy=policy)


def _fingerprint(call: ToolCall) -> str:
    """What a recorded key stands for; a trusted call's keeps its original form."""
    if call.principal is None:
        return _canonical_json(call.arguments)
    return _canonical_json({"arguments": call.arguments, "principal": call.principal.to_dict()})


def _conflict(call: ToolCall, recorded: orders.RecordedCall) -> IdempotencyConflictError:
    if call.principal is not None:
        # The recorded call may be another customer's: say nothing about it.
        return IdempotencyConflictError(
            f"idempotency key {call.idempotency_key!r} was already used for a different "
            "call; use a new key for a different call"
        )
    return IdempotencyConflictError(
        f"idempotency key {call.idempotency_key!r} was already used for "
        f"{recorded.tool} with arguments {recorded.arguments}; "
        "use a new key for a different call"
    )


# --- authorization -------------------------------------------------------------------------

_VERIFY = (
    "To protect our customers' orders I can only do this for a verified sender: please "
    "write to us from the email address the order was placed with."
)


def _verify_for(order_id: str) -> str:
    """:data:`_VERIFY` for a change to one order: it names the order the customer wrote, and
    says nothing about it (the same words whether or not it exists)."""
    return (
        f"To protect our customers' orders I can only change order {order_id} for a verified "
        "sender: please write to us from the email address it was placed with."
    )


def _not_your_order(order_id: str) -> dict[str, Any]:
    # The same words whether or not the order exists, and nothing about it.
    return _refused(
        "not_your_order",
        f"I could not find order {order_id} among the orders placed with the email address "
        "you are writing from, so I cannot look it up or change it.",
    )


def _authorize(conn: Connection, call: ToolCall, policy: Policy) -> dict[str, Any] | None:
    """The result a principal gets instead of running the call, or None to run it.

    For an anonymous sender that is a status-only view of an order (get_order,
    track_shipment) or a refusal; for a customer, a refusal of what is not theirs or a
    request to confirm a large refund.
    """
    principal = call.principal
    if principal is None or call.name in _PUBLIC_TOOLS:
        return None
    if "email" in call.arguments:
        if principal.customer is None:
            return _refused("verification_required", _VERIFY)
        if call.arguments["email"].strip().lower() != principal.customer:
            return _refused(
                "not_your_account",
                "I can only list the orders of the email address you are writing from.",
            )
        return None
    if "order_id" not in call.arguments:
        # A tool about neither an order nor an account that is not public: fail closed.
        return _refused("verification_required", _VERIFY)
    order_id = call.arguments["order_id"]
    limited = _LIMITED_VIEWS.get(call.name)
    if principal.customer is None:
        if limited is None:
            return _refused("verification_required", _verify_for(order_id))
        order = orders.get_order(conn, order_id)
        return limited(order) if order is not None else _order_not_found(order_id)
    order = orders.get_order(conn, order_id)
    if order is None or order.customer_email.lower() != principal.customer:
        return _not_your_order(order_id)
    if (
        call.name == "refund_order"
        and call.currency not in (None, order.currency)
        and order.status in REFUNDABLE_STATUSES  # else the refusal says why it cannot be
    ):
        # "20 GBP back" on an order paid in CAD: refunding 20 CAD moves a sum nobody asked for.
        return _refused(
            "currency_mismatch",
            f"Order {order.order_id} was paid in {order.currency}, so a refund is made in "
            f"{order.currency}.",
        )
    if call.name == "refund_order" and not call.confirmed:
        return _unconfirmed_refund(order, call.arguments, policy, always=call.ask_first)
    if call.name == "cancel_order" and call.ask_first and not call.confirmed:
        return _unconfirmed_cancel(order)
    return None


def _unconfirmed_cancel(order: orders.Order) -> dict[str, Any] | None:
    """``confirmation_required`` for a cancellation the caller asked first about; None where
    the business rules refuse it anyway (the refusal says why at once)."""
    if order.status != "placed":
        return None
    return _refused(
        "confirmation_required",
        f"Cancelling order {order.order_id} ({order.product}) needs your confirmation.",
    )


def _unconfirmed_refund(
    order: orders.Order, args: Mapping[str, Any], policy: Policy, *, always: bool = False
) -> dict[str, Any] | None:
    """``confirmation_required`` for a refund of everything left or above the limit, or of
    any amount the business rules allow when the caller asked first (``ask_first``)."""
    cents = orders.to_cents(args["amount"])
    if order.status not in REFUNDABLE_STATUSES or cents > order.refundable_cents:
        return None  # the business rules refuse it anyway
    small = cents < order.refundable_cents and cents <= orders.to_cents(policy.confirm_refund_above)
    if small and not always:
        return None
    return _refused(
        "confirmation_required",
        # Customer-facing like every refusal message (the responder quotes it); the caller
        # repeats the call with "confirmed": true once the customer has said yes.
        f"A refund of {orders.format_money(cents)} {order.currency} on order "
        f"{order.order_id} needs your confirmation.",
    )


def _limited_order(order: orders.Order) -> dict[str, Any]:
    view = {"order_id": order.order_id, "status": order.status}
    return {"ok": True, "limited": True, "order": view}


def _limited_shipment(order: orders.Order) -> dict[str, Any]:
    return {"ok": True, "limited": True, "order_id": order.order_id, "status": order.status}


_LIMITED_VIEWS: Mapping[str, Callable[[orders.Order], dict[str, Any]]] = {
    "get_order": _limited_order,
    "track_shipment": _limited_shipment,
}
"""What an anonymous sender may see of an order, per read-only tool: its status."""

_PUBLIC_TOOLS = frozenset({"search_faq"})
"""Tools about no order or account, which any sender may call."""

REFUNDABLE_STATUSES = ("shipped", "delivered")
"""Statuses an order can be refunded in (the desk's replies and rules read them from here)."""
REDIRECTABLE_STATUS = "placed"
"""The status an order's shipping address can still be changed in."""
ALREADY = {
    "shipped": "it has already shipped",
    "delivered": "it has already been delivered",
    "cancelled": "it was cancelled",
    "refunded": "it has been refunded",
}
"""Why an order past ``placed`` can no longer be changed, as a refusal says it."""


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


def _get_order(conn: Connection, args: Mapping[str, Any]) -> dict[str, Any]:
    order = orders.get_order(conn, args["order_id"])
    if order is None:
        return _order_not_found(args["order_id"])
    return {"ok": True, "order": order_view(order)}


def _find_orders(conn: Connection, args: Mapping[str, Any]) -> dict[str, Any]:
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


def _track_shipment(conn: Connection, args: Mapping[str, Any]) -> dict[str, Any]:
    order = orders.get_order(conn, args["order_id"])
    if order is None:
        return _order_not_found(args["order_id"])
    if order.status == "placed":
        return _refused("not_shipped", not_shipped_message(order.order_id))
    if order.status == "cancelled":
        return _refused("not_shipped", f"Order {order.order_id} was cancelled before it shipped.")
    return shipment_view(order)


def not_redirectable_message(order: orders.Order) -> str:
    """Why an order past ``placed`` keeps its shipping address, in plain words."""
    return (
        f"The shipping address of order {order.order_id} cannot be changed: "
        f"{ALREADY[order.status]}; only orders that have not shipped can be redirected."
    )


def not_shipped_message(order_id: str) -> str:
    """Why a placed order has no tracking yet, and when orders leave the warehouse (the
    first part of the FAQ's ``delivery_times`` answer, so the two never disagree)."""
    answer = next(entry.answer for entry in faq.entries() if entry.topic == "delivery_times")
    dispatch = answer.split(";")[0].strip().rstrip(".")
    return f"Order {order_id} has not shipped yet, so there is no tracking number. {dispatch}."


def _cancel_order(conn: Connection, args: Mapping[str, Any]) -> dict[str, Any]:
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


def _refund_order(conn: Connection, args: Mapping[str, Any]) -> dict[str, Any]:
    order = orders.get_order(conn, args["order_id"])
    if order is None:
        return _order_not_found(args["order_id"])
    if order.status not in REFUNDABLE_STATUSES:
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


def _update_shipping_address(conn: Connection, args: Mapping[str, Any]) -> dict[str, Any]:
    order = orders.get_order(conn, args["order_id"])
    if order is None:
        return _order_not_found(args["order_id"])
    if order.status != REDIRECTABLE_STATUS:
        return _refused("address_not_updatable", not_redirectable_message(order))
    address = args["address"].strip()
    orders.change_shipping_address(conn, order.order_id, address, at=orders.utc_now())
    return {
        "ok": True,
        "order_id": order.order_id,
        "previous_address": order.shipping_address,
        "shipping_address": address,
    }


def _search_faq(conn: Connection, args: Mapping[str, Any]) -> dict[str, Any]:
    matches = faq.search(conn, args["query"])
    return {"ok": True, "count": len(matches), "matches": [match.view() for match in matches]}


_Validator = SchemaValidator
_KEY_VALIDATOR = _Validator({"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN})
_EMAIL = {
    "type": "string",
    "format": "email",
    "pattern": r"^[^@\s]+@[^@\s]+\.[A-Za-z0-9-]*[A-Za-z0-9]$",
    "maxLength": 254,
    "description": "The customer's email address.",
}
_EMAIL_VALIDATOR = _Validator(_EMAIL, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _object_schema(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "$schema": SCHEMA_DIALECT,
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


# --- result schemas ---------------------------------------------------------------------


def _fact(kind: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "x-fact": kind}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "type": [schema["type"], "null"]}


def _closed(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _success(properties: dict[str, Any]) -> dict[str, Any]:
    return _closed({"ok": {"const": True}, **properties})


def _refusal(codes: tuple[str, ...]) -> dict[str, Any]:
    return _closed(
        {
            "ok": {"const": False},
            "error": _closed(
                {"code": {"enum": list(codes)}, "message": {"type": "string", "minLength": 1}}
            ),
        }
    )


def _result(*successes: dict[str, Any], refusals: tuple[str, ...] = ()) -> dict[str, Any]:
    branches = [*successes, _refusal(refusals)] if refusals else list(successes)
    return {"$schema": SCHEMA_DIALECT, "oneOf": branches}


def _facts(schema: Mapping[str, Any], pointer: str) -> Iterator[tuple[str, str]]:
    """``(pointer, kind)`` of every ``x-fact`` under ``schema``, branches merged."""
    if "x-fact" in schema:
        yield pointer, schema["x-fact"]
    for name, sub in schema.get("properties", {}).items():
        yield from _facts(sub, f"{pointer}/{name.replace('~', '~0').replace('/', '~1')}")
    if isinstance(schema.get("items"), Mapping):
        yield from _facts(schema["items"], f"{pointer}/*")
    for keyword in ("oneOf", "anyOf", "allOf"):
        for sub in schema.get(keyword, ()):
            yield from _facts(sub, pointer)


_MONEY = {"type": "string", "pattern": r"^-?\d+\.\d{2}$"}
_TIMESTAMP = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"}
_FACT_ORDER_ID = _fact("order_id", {"type": "string", "pattern": r"^ORD-\d{6}$"})
_FACT_STATUS = _fact("status", {"enum": list(orders.ORDER_STATUSES)})
_FACT_AMOUNT = _fact("amount", _MONEY)
_FACT_CURRENCY = _fact("currency", {"type": "string", "pattern": "^[A-Z]{3}$"})
_FACT_PRODUCT = _fact("product", {"type": "string", "minLength": 1})
_FACT_ADDRESS = _fact("address", {"type": "string", "minLength": 1})
_FACT_DATE = _fact("date", _TIMESTAMP)
_FACT_MAYBE_DATE = _fact("date", _nullable(_TIMESTAMP))
_FACT_CUSTOMER = _closed(
    {
        "name": _fact("name", {"type": "string", "minLength": 1}),
        "email": _fact("email", {"type": "string", "minLength": 3}),
    }
)
_ORDER_VIEW = _closed(
    {
        "order_id": _FACT_ORDER_ID,
        "status": _FACT_STATUS,
        "product": _FACT_PRODUCT,
        "quantity": {"type": "integer", "minimum": 1},
        "amount": _FACT_AMOUNT,
        "currency": _FACT_CURRENCY,
        "ordered_at": _FACT_DATE,
        "shipping_address": _FACT_ADDRESS,
        "carrier": _fact("carrier", {"type": ["string", "null"]}),
        "tracking_number": _fact("tracking_number", {"type": ["string", "null"]}),
        "shipped_at": _FACT_MAYBE_DATE,
        "delivered_at": _FACT_MAYBE_DATE,
        "cancelled_at": _FACT_MAYBE_DATE,
        "refunded_amount": _FACT_AMOUNT,
        "refundable_amount": _FACT_AMOUNT,
        "customer": _FACT_CUSTOMER,
    }
)
_LIMITED_ORDER = _closed({"order_id": _FACT_ORDER_ID, "status": _FACT_STATUS})
_FIND_ORDERS_RESULT = _success(
    {
        "customer": _FACT_CUSTOMER,
        "count": {"type": "integer", "minimum": 0},
        "orders": {
            "type": "array",
            "items": _closed(
                {
                    "order_id": _FACT_ORDER_ID,
                    "status": _FACT_STATUS,
                    "product": _FACT_PRODUCT,
                    "quantity": {"type": "integer", "minimum": 1},
                    "amount": _FACT_AMOUNT,
                    "currency": _FACT_CURRENCY,
                    "ordered_at": _FACT_DATE,
                }
            ),
        },
    }
)
_SHIPMENT_RESULT = _success(
    {
        "order_id": _FACT_ORDER_ID,
        "status": _FACT_STATUS,
        "carrier": _fact("carrier", {"type": "string", "minLength": 1}),
        "tracking_number": _fact("tracking_number", {"type": "string", "minLength": 1}),
        "shipped_at": _FACT_DATE,
        "delivered_at": _FACT_MAYBE_DATE,
        "estimated_delivery": _fact(
            "date", {"type": ["string", "null"], "pattern": r"^\d{4}-\d{2}-\d{2}$"}
        ),
        "shipping_address": _FACT_ADDRESS,
    }
)

# --- argument schemas -------------------------------------------------------------------

_ORDER_ID = {
    "type": "string",
    "pattern": ORDER_ID_PATTERN,
    "description": "Order id exactly as the customer wrote it, e.g. ORD-104233.",
}
DEFAULT_REASON = "Customer request"
"""The reason a cancel or refund call carries when the customer gave none."""
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
            result_schema=_result(
                _success({"order": _ORDER_VIEW}),
                _success({"limited": {"const": True}, "order": _LIMITED_ORDER}),
                refusals=("order_not_found", "not_your_order"),
            ),
        ),
        Tool(
            name="find_orders",
            description="List a customer's orders, newest first, by the email address "
            "they ordered with. Use when the customer gives no order id.",
            parameters=_object_schema({"email": _EMAIL}),
            handler=_find_orders,
            result_schema=_result(
                _FIND_ORDERS_RESULT,
                refusals=("customer_not_found", "not_your_account", "verification_required"),
            ),
        ),
        Tool(
            name="track_shipment",
            description="Carrier, tracking number and delivery dates of a shipped order.",
            parameters=_object_schema({"order_id": _ORDER_ID}),
            handler=_track_shipment,
            result_schema=_result(
                _SHIPMENT_RESULT,
                _success({"limited": {"const": True}, **_LIMITED_ORDER["properties"]}),
                refusals=("order_not_found", "not_shipped", "not_your_order"),
            ),
        ),
        Tool(
            name="cancel_order",
            description="Cancel an order that has not shipped yet (status 'placed').",
            parameters=_object_schema({"order_id": _ORDER_ID, "reason": _REASON}),
            handler=_cancel_order,
            result_schema=_result(
                _success(
                    {
                        "order_id": _FACT_ORDER_ID,
                        "status": _FACT_STATUS,
                        "previous_status": _FACT_STATUS,
                        "amount": _FACT_AMOUNT,
                        "currency": _FACT_CURRENCY,
                    }
                ),
                refusals=(
                    "order_not_found",
                    "not_cancellable",
                    "not_your_order",
                    "verification_required",
                    "confirmation_required",
                ),
            ),
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
            result_schema=_result(
                _success(
                    {
                        "order_id": _FACT_ORDER_ID,
                        "refund_id": {"type": "integer", "minimum": 1},
                        "amount": _FACT_AMOUNT,
                        "currency": _FACT_CURRENCY,
                        "refunded_amount": _FACT_AMOUNT,
                        "refundable_amount": _FACT_AMOUNT,
                        "status": _FACT_STATUS,
                    }
                ),
                refusals=(
                    "order_not_found",
                    "not_refundable",
                    "amount_exceeds_refundable",
                    "currency_mismatch",
                    "not_your_order",
                    "verification_required",
                    "confirmation_required",
                ),
            ),
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
            result_schema=_result(
                _success(
                    {
                        "order_id": _FACT_ORDER_ID,
                        "previous_address": _FACT_ADDRESS,
                        "shipping_address": _FACT_ADDRESS,
                    }
                ),
                refusals=(
                    "order_not_found",
                    "address_not_updatable",
                    "not_your_order",
                    "verification_required",
                ),
            ),
            side_effects=True,
        ),
        Tool(
            name="search_faq",
            description="Search the shop's policies and FAQ (shipping countries, delivery "
            "and refund times, payment methods, opening hours, returns, warranty, contact). "
            "Use for a general question that names no order.",
            parameters=_object_schema(
                {
                    "query": {
                        "type": "string",
                        "minLength": 3,
                        "maxLength": 500,
                        "pattern": r"\S",
                        "description": "The customer's question, in their words.",
                    }
                }
            ),
            handler=_search_faq,
            result_schema=_result(
                _success(
                    {
                        "count": {"type": "integer", "minimum": 0, "maximum": faq.MAX_MATCHES},
                        "matches": {
                            "type": "array",
                            "maxItems": faq.MAX_MATCHES,
                            "items": _closed(
                                {
                                    "topic": {"type": "string", "minLength": 1},
                                    "question": {"type": "string", "minLength": 1},
                                    "answer": _fact("faq_answer", {"type": "string"}),
                                }
                            ),
                        },
                    }
                )
            ),
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
