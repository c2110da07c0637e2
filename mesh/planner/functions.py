"""Named planner functions: the deterministic glue between agent steps (``fn:`` steps).

Plans may come from requests, so a plan can only name functions registered here, never
an import path. Each takes the step's rendered input and returns a JSON value; they run
in the planner's Ray workers next to agent calls and must not block for long.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

PlannerFunction = Callable[[Any], Any]

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


@planner_function("support.reply_facts")
def support_reply_facts(value: Any) -> dict[str, Any] | None:
    """The responder's input from a case: intent, the tool call, its result, the customer.

    ``None`` when no tool ran (no order id or email to act on). Built by the same
    function the responder was trained on.
    """
    from mesh.train.data.responder import reply_facts

    case = _mapping(value, "support.reply_facts")
    call, result = case.get("call"), case.get("result")
    if not call or not isinstance(result, Mapping):
        return None
    return reply_facts(
        str(case.get("intent") or "general_question"), call, result, case.get("customer")
    )


_ASK = {
    "general_question": "Thanks for your message. Could you tell me your order number (ORD-123456) "
    "or the email address you ordered with, so I can look into it?",
}
_ASK_DEFAULT = (
    "I'd be glad to help. Please send me your order number (it looks like "
    "ORD-123456) or the email address you ordered with."
)


@planner_function("support.final_reply")
def support_final_reply(value: Any) -> str:
    """The drafted reply, or the request for an order number when no tool could run."""
    case = _mapping(value, "support.final_reply")
    if case.get("reply"):
        return str(case["reply"])
    customer = case.get("customer")
    greet = f"Hi {str(customer).split()[0]}," if customer else "Hello,"
    return f"{greet} {_ASK.get(str(case.get('intent')), _ASK_DEFAULT)}"


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
