"""Named planner functions: the deterministic glue between agent steps (``fn:`` steps).

Plans may come from requests, so a plan can only name functions registered here, never
an import path. Each takes the step's rendered input and returns a JSON value; they run
in the planner's Ray workers next to agent calls and must not block for long.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mesh.support import policy
from mesh.support.factcheck import check_reply
from mesh.support.facts import plausible_name, reply_facts
from mesh.support.replies import (
    NON_ENGLISH_REPLY,
    ask_reference_reply,
    declined_reply,
    unreadable_order_reply,
    with_aside,
    write_reply,
)
from mesh.tools.faq import terms

PlannerFunction = Callable[[Any], Any]

FAQ_QUERY_CHARS = 500
"""The longest query search_faq takes (its argument schema's maxLength)."""

FUNCTIONS: dict[str, PlannerFunction] = {}


def planner_function(name: str) -> Callable[[PlannerFunction], PlannerFunction]:
    """Registers a function under ``name`` for ``fn:`` steps."""

    def register(fn: PlannerFunction) -> PlannerFunction:
        FUNCTIONS[name] = fn
        return fn

    return register


class FunctionInputError(ValueError):
    """A planner function got input it cannot use."""


def _mapping(value: Any, fn: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise FunctionInputError(f"{fn} needs an object input, got {type(value).__name__}")
    return value


@planner_function("identity")
def identity(value: Any) -> Any:
    """The input itself (renames or reshapes a value with a template)."""
    return value


@planner_function("first")
def first(value: Any) -> Any:
    """The first non-null item of a list."""
    if not isinstance(value, list):
        raise FunctionInputError("first needs a list input")
    return next((v for v in value if v is not None), None)


@planner_function("support.prepare")
def support_prepare(value: Any) -> dict[str, Any]:
    """A message as the models will see it: bounded, its language, who sent it."""
    case = _mapping(value, "support.prepare")
    message = case.get("message")
    if not isinstance(message, str) or not message.strip():
        raise FunctionInputError("support.prepare needs a non-empty 'message'")
    text, truncated = policy.bounded_message(message)
    language = policy.language_of(text)
    sender = case.get("sender")
    return {
        "text": text,
        "truncated": truncated,
        "language": language,
        "english": language == "en",
        "sender": sender if isinstance(sender, Mapping) and sender.get("email") else None,
    }


@planner_function("support.agreed_fields")
def support_agreed_fields(value: Any) -> dict[str, Any]:
    """The extractor's fields, the amount checked against the message the models read and
    the name against the message as written (:func:`policy.agreed_fields`)."""
    case = _mapping(value, "support.agreed_fields")
    fields = case.get("fields")
    message = str(case.get("message") or "")
    return policy.agreed_fields(
        fields if isinstance(fields, Mapping) else {},
        message,
        written=str(case.get("written") or message),
    )


@planner_function("support.desk_intent")
def support_desk_intent(value: Any) -> object:
    """The intent the desk acts on (:func:`policy.desk_intent`): the classifier's, read
    against the message and the extractor's fields."""
    case = _mapping(value, "support.desk_intent")
    fields = case.get("fields")
    return policy.desk_intent(
        case.get("intent"),
        str(case.get("message") or ""),
        fields if isinstance(fields, Mapping) else None,
    )


@planner_function("support.principal")
def support_principal(value: Any) -> dict[str, Any]:
    """Who tool calls act for: ``{"customer": email}`` of a verified sender, else anonymous."""
    return policy.principal_of(value)


@planner_function("support.authorize_call")
def support_authorize_call(value: Any) -> dict[str, Any] | None:
    """The tool call as the tools agent receives it: consent checked, principal attached.

    The proposed tool must fit the desk's intent and take its amount or address from
    a plausible span (:func:`policy.agreed_call`); a side-effecting call the message does
    not ask for in plain words becomes a lookup of the same order; an English message with
    no call (no order id or email) becomes an FAQ search, unless it names an order number
    we cannot read, or is a request about an order (then a verified sender's orders are
    listed; an anonymous sender is asked for the order number); a lookup of an order whose
    refund the message asks for, with its amount, becomes that refund asked first
    (:func:`policy.asked_refund`), and one whose cancellation it asks for that cancellation
    asked first (:func:`policy.asked_cancel`); every call acts for the verified sender, or
    for nobody.
    """
    case = _mapping(value, "support.authorize_call")
    call, message = case.get("call"), str(case.get("message") or "")
    if not isinstance(call, Mapping) or not isinstance(call.get("name"), str):
        if not case.get("english") or len(message.strip()) < 3:
            return None
        if policy.malformed_order_reference(message):
            return None  # an order number we cannot read: final_reply asks for it again
        sender = policy.principal_of(case.get("sender")).get("customer")
        if case.get("intent") in policy.ORDER_INTENTS:
            # A request about "my parcel" from a verified sender who named no order: the
            # sender's own orders, so the reply can ask which one. From an anonymous
            # sender there is nothing to look up: final_reply asks for the order number.
            if not sender:
                return None
            return {
                "name": "find_orders",
                "arguments": {"email": sender},
                "principal": {"customer": sender},
            }
        # No order id or email to act on: the question goes to the shop's FAQ (the search
        # takes at most FAQ_QUERY_CHARS: the message's start, cut at a word).
        query = (
            message
            if len(message) <= FAQ_QUERY_CHARS
            else (message[:FAQ_QUERY_CHARS].rsplit(" ", 1)[0])
        )
        call = {"name": "search_faq", "arguments": {"query": query}}
    raw_fields = case.get("fields")
    fields: Mapping[str, Any] = raw_fields if isinstance(raw_fields, Mapping) else {}
    agreed = policy.agreed_call(call, case.get("intent"), fields, message)
    name, arguments = agreed["name"], agreed["arguments"]
    written = case.get("written")
    if name == "update_shipping_address" and isinstance(written, str):
        # The address as the message writes it on its lines, not run on into a sign-off.
        address = policy.written_address(arguments.get("address"), written)
        if policy.plausible_address(address, message):
            arguments = {**arguments, "address": address}
    if not policy.asks_for(message, name, arguments.get("address")) and "order_id" in arguments:
        name, arguments = "get_order", {"order_id": arguments["order_id"]}
    principal = policy.principal_of(case.get("sender"))
    looked_up = {"name": name, "arguments": arguments}
    asked = policy.asked_refund(looked_up, case.get("intent"), fields, message) or (
        policy.asked_cancel(looked_up, case.get("intent"), fields, message)
    )
    if asked is not None:
        return {**asked, "principal": principal}
    authorized: dict[str, Any] = {"name": name, "arguments": arguments, "principal": principal}
    if name == "refund_order":
        # "20 GBP back": the currency written beside the amount goes with the call, and the
        # tools agent refuses a refund asked in another currency than the order's.
        currency = policy.amount_currency(message, arguments.get("amount"))
        if currency is not None:
            authorized["currency"] = currency
        if policy.amount_in_words(message, arguments.get("amount")):
            # "twelve dollars back": the customer confirms the figure the desk read first.
            authorized["ask_first"] = True
    return authorized


@planner_function("support.full_refund")
def support_full_refund(value: Any) -> dict[str, Any] | None:
    """The refund of everything left on the order that the message asks for without an
    amount, from the order's lookup (:func:`policy.full_refund`); ``None`` otherwise."""
    case = _mapping(value, "support.full_refund")
    call, fields = case.get("call"), case.get("fields")
    if not isinstance(call, Mapping):
        return None
    return policy.full_refund(
        call,
        case.get("result"),
        case.get("intent"),
        fields if isinstance(fields, Mapping) else {},
        str(case.get("message") or ""),
    )


@planner_function("support.named_order")
def support_named_order(value: Any) -> dict[str, Any] | None:
    """The lookup of the order a message names by its product, among the sender's orders
    that the desk listed (:func:`policy.named_order`); ``None`` otherwise."""
    case = _mapping(value, "support.named_order")
    call = case.get("call")
    if not isinstance(call, Mapping):
        return None
    fields = case.get("fields")
    return policy.named_order(
        call,
        case.get("result"),
        str(case.get("message") or ""),
        case.get("intent"),
        fields if isinstance(fields, Mapping) else {},
    )


@planner_function("support.aside_call")
def support_aside_call(value: Any) -> dict[str, Any] | None:
    """An FAQ search for a general question asked beside the order request (the ticket
    answers both), or the question of a message the classifier reads as a general question
    though it names an order; ``None`` when there is none or the ticket is an FAQ search
    already."""
    case = _mapping(value, "support.aside_call")
    call = case.get("call")
    if not isinstance(call, Mapping) or call.get("name") in (None, "search_faq"):
        return None
    question = policy.aside_question(str(case.get("message") or ""), case.get("intent"))
    if question is None:
        return None
    return {
        "name": "search_faq",
        "arguments": {"query": question[:FAQ_QUERY_CHARS]},
        "principal": policy.principal_of(case.get("sender")),
    }


@planner_function("support.reply_facts")
def support_reply_facts(value: Any) -> dict[str, Any] | None:
    """The responder's input from a case: intent, the tool call, its result, the customer.

    The FAQ's answer to a message the classifier read as an order request but the desk as
    a general question ("how long till a refund is on my card?": no order named) keeps the
    classifier's intent, so the reply still offers to check the customer's order.
    ``None`` when no tool ran (no order id, email or question to act on).
    """
    case = _mapping(value, "support.reply_facts")
    call, result = case.get("call"), case.get("result")
    if not call or not isinstance(result, Mapping):
        return None
    customer = plausible_name(case.get("customer"), case.get("message"))
    intent = str(case.get("intent") or "general_question")
    classified = case.get("classified")
    if (
        intent == "general_question"
        and isinstance(call, Mapping)
        and call.get("name") == "search_faq"
        and isinstance(classified, str)
        and classified in policy.ORDER_INTENTS
    ):
        intent = classified
    address_asked = policy.asks_address(str(case.get("message") or ""))
    return reply_facts(intent, call, result, customer, address_asked=address_asked)


@planner_function("support.check_reply")
def support_check_reply(value: Any) -> list[str]:
    """The fact check of a drafted reply (a ``check:`` of the draft step): its problems."""
    case = _mapping(value, "support.check_reply")
    facts, draft = case.get("input"), case.get("value")
    if not isinstance(facts, Mapping):
        raise FunctionInputError("support.check_reply needs the facts as the step's input")
    if not isinstance(draft, str):
        return [f"the draft is {type(draft).__name__}, not text"]
    return check_reply(facts, draft)


@planner_function("support.safe_reply")
def support_safe_reply(value: Any) -> str:
    """The reply built from the facts alone, when no draft passes the fact check."""
    return write_reply(_mapping(value, "support.safe_reply"))


@planner_function("support.final_reply")
def support_final_reply(value: Any) -> str:
    """The reply the customer gets: the checked draft, or the desk's fixed answers.

    A message in another language gets the English notice; a message with nothing to
    act on, or with no topic word ("hello?"), or a request about an order that names none
    and that the FAQ has nothing on, gets the request for an order number or email; a
    side question's FAQ answer (or the way to a person) follows the reply.
    """
    case = _mapping(value, "support.final_reply")
    prepared = case.get("case")
    if isinstance(prepared, Mapping) and not prepared.get("english", True):
        return NON_ENGLISH_REPLY
    message = prepared.get("text") if isinstance(prepared, Mapping) else None
    customer = plausible_name(case.get("customer"), message)
    intent = case.get("intent")
    if _found_nothing(case.get("call"), case.get("result")) and (
        intent in policy.ORDER_INTENTS or not terms(message or "")
    ):
        # Nothing the FAQ could answer, and either a request about an order that names
        # none ("where is my parcel?") or no question at all ("hello?"): ask for the order.
        return ask_reference_reply(customer, intent)
    if case.get("reply"):
        aside = case.get("aside")
        if isinstance(aside, Mapping):
            return with_aside(str(case["reply"]), aside)
        return str(case["reply"])
    if isinstance(message, str) and policy.malformed_order_reference(message):
        return unreadable_order_reply(customer)
    return ask_reference_reply(customer, case.get("intent"))


def _found_nothing(call: object, result: object) -> bool:
    """Whether ``call`` was an FAQ search that found no entry."""
    return (
        isinstance(call, Mapping)
        and call.get("name") == "search_faq"
        and isinstance(result, Mapping)
        and bool(result.get("ok"))
        and not result.get("matches")
    )


@planner_function("support.confirmation_question")
def support_confirmation_question(value: Any) -> str | None:
    """The reply as a question when the ticket's side effect waits for the customer's yes."""
    case = _mapping(value, "support.confirmation_question")
    result = case.get("result")
    error = result.get("error") if isinstance(result, Mapping) else None
    if isinstance(error, Mapping) and error.get("code") == "confirmation_required":
        return str(case.get("reply") or "")
    return None


@planner_function("support.batch_items")
def support_batch_items(value: Any) -> list[dict[str, Any]]:
    """A batch's messages as support_ticket inputs: ``{message, sender}`` each."""
    if not isinstance(value, list):
        raise FunctionInputError("support.batch_items needs a list of messages")
    items = []
    for item in value:
        if isinstance(item, Mapping):
            items.append({"message": item.get("text"), "sender": item.get("sender")})
        else:
            items.append({"message": item, "sender": None})
    return items


@planner_function("support.confirmed_call")
def support_confirmed_call(value: Any) -> dict[str, Any] | None:
    """The call a ticket held back for confirmation, confirmed; None unless the answer is yes."""
    case = _mapping(value, "support.confirmed_call")
    ticket = _mapping(case.get("ticket"), "support.confirmed_call")
    call = ticket.get("tool_call")
    if not isinstance(call, Mapping) or not policy.is_yes(str(case.get("answer") or "")):
        return None
    return {**call, "confirmed": True}


@planner_function("support.confirmation_reply")
def support_confirmation_reply(value: Any) -> str:
    """The checked reply to a confirmed call, or what the desk says when it was declined."""
    case = _mapping(value, "support.confirmation_reply")
    if case.get("reply"):
        return str(case["reply"])
    ticket = _mapping(case.get("ticket"), "support.confirmation_reply")
    raw_call, raw_fields = ticket.get("tool_call"), ticket.get("fields")
    call: Mapping[str, Any] = raw_call if isinstance(raw_call, Mapping) else {}
    order_id = (call.get("arguments") or {}).get("order_id")
    fields: Mapping[str, Any] = raw_fields if isinstance(raw_fields, Mapping) else {}
    customer = plausible_name(fields.get("name"), str(ticket.get("message") or ""))
    return declined_reply(customer, order_id)


@planner_function("support.summarize")
def support_summarize(value: Any) -> dict[str, Any]:
    """Fan-in of a batch of tickets: counts by intent, tool and outcome."""
    tickets = _mapping(value, "support.summarize").get("tickets")
    if not isinstance(tickets, list):
        raise FunctionInputError("support.summarize needs {'tickets': [...]}")
    by_intent: dict[str, int] = {}
    by_tool: dict[str, int] = {}
    failed = refused = 0
    for ticket in tickets:
        if not isinstance(ticket, Mapping) or "error" in ticket:
            failed += 1
            continue
        intent = str(ticket.get("intent"))
        by_intent[intent] = by_intent.get(intent, 0) + 1
        call = ticket.get("tool_call") or {}
        tool = call.get("name", "none") if isinstance(call, Mapping) else "none"
        by_tool[tool] = by_tool.get(tool, 0) + 1
        result = ticket.get("tool_result")
        if isinstance(result, Mapping) and result.get("ok") is False:
            refused += 1
    return {
        "tickets": len(tickets),
        "failed": failed,
        "tool_refused": refused,
        "by_intent": dict(sorted(by_intent.items())),
        "by_tool": dict(sorted(by_tool.items())),
    }
