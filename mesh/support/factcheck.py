"""The fact check every drafted reply passes before it leaves the mesh.

:func:`check_reply` reads a reply against the facts it was drafted from (the tool result,
through :func:`mesh.support.facts.reply_facts`) and lists every problem: a fact of some
kind (order id, status, carrier, tracking number, date, amount, currency, product, email,
name) that is not the case's fact of that kind, a fact the outcome requires that is missing
(a cut-off reply), a phrase that belongs to another intent's or outcome's reply, and the
well-formedness rules of :func:`form_problems`. An empty list means the reply may be sent.

What the check knows of each kind comes from the tools' result schemas (the statuses: the
``enum`` of every ``x-fact: status`` property) and from the order data's own vocabularies
(carriers, products, currencies), plus the paraphrases replies use for a status ("on its
way" = shipped). Text the case trusts as a whole (the tools agent's
own refusal message, an FAQ answer, each earlier order a listing names with its own product
and status) must appear verbatim and is not read word by word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from mesh.support import replies
from mesh.support.facts import addressed_name
from mesh.tools import orders
from mesh.tools.catalog import TOOLS

_ORDER_ID = re.compile(r"\bORD-\d+\b")
_EMAIL = re.compile(r"[^\s@(),;:]+@[^\s@(),;:]+\.[A-Za-z0-9-]*[A-Za-z0-9]")
_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_AMOUNT = re.compile(r"(?<![\w.-])(\d+\.\d{2})(?:\s+([A-Z]{3}))?\b")
_DIGITS = re.compile(r"[^\s,;:()\"']*\d[^\s,;:()\"']*")
_WORD = re.compile(r"[A-Za-zÀ-ÿ][A-Za-zÀ-ÿ'\u2019-]*")
_SENTENCE_END = re.compile(r"[.!?][\"')]?$")
_GREETING = re.compile(r"^(Hi|Hello|Hey|Dear)\b\s*([^,.!?]*)([,.!?])")
_REPEAT = re.compile(r"(?<![\w.-])([\w.@-]+)\s+\1(?![\w-]|\.\w)", re.IGNORECASE)
_CURRENCY_WORDS = {
    "dollars": "USD", "dollar": "USD", "euros": "EUR", "euro": "EUR", "pounds": "GBP",
    "pound": "GBP", "francs": "CHF", "kronor": "SEK", "kroner": "DKK", "zloty": "PLN",
}  # fmt: skip
# The paraphrases replies use for a status, longest first (each status's own word is added
# from the tools' result schemas, :func:`statuses`).
_STATUS_PARAPHRASES = (
    ("has not shipped yet", "placed"),
    ("has not shipped", "placed"),
    ("not shipped yet", "placed"),
    ("not yet shipped", "placed"),
    ("is being prepared", "placed"),
    ("on its way", "shipped"),
    ("in transit", "shipped"),
    ("has shipped", "shipped"),
    ("was shipped", "shipped"),
    ("was delivered", "delivered"),
    ("has been delivered", "delivered"),
    ("has arrived", "delivered"),
    ("canceled", "cancelled"),
    ("processing", "placed"),
)


@cache
def statuses() -> frozenset[str]:
    """Every status a tool result may state: the ``enum`` of each ``x-fact: status`` property
    of the tools' result schemas."""
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, Mapping):
            if node.get("x-fact") == "status" and isinstance(node.get("enum"), list):
                found.update(str(value) for value in node["enum"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for tool in TOOLS.values():
        walk(tool.result_schema)
    unknown = {status for _, status in _STATUS_PARAPHRASES} - found
    if unknown:
        raise RuntimeError(f"paraphrases name statuses no tool returns: {sorted(unknown)}")
    return frozenset(found)


@cache
def _status_phrases() -> tuple[tuple[str, str], ...]:
    """Status claims, the paraphrases first, then each status's own word."""
    return (*_STATUS_PARAPHRASES, *((status, status) for status in sorted(statuses())))


_NOT_A_STATUS = (
    "will now be delivered to",
    "be delivered to",
    "placed the order",
    "would like refunded",
)
# Claims that something was done: allowed only when that tool ran and succeeded.
_ACTION_PHRASES = {
    "is now cancelled": "cancel_order",
    "i have cancelled": "cancel_order",
    "i have refunded": "refund_order",
    "will now be delivered to": "update_shipping_address",
    "i have updated": "update_shipping_address",
    "i have changed": "update_shipping_address",
}
# Date claims by role: the words just before a date say which of the case's dates it is.
_DATE_ROLES = (
    ("arrive by", "estimated_delivery"),
    ("expected on", "estimated_delivery"),
    ("expected by", "estimated_delivery"),
    ("delivered on", "delivered_on"),
    ("arrived on", "delivered_on"),
    ("shipped on", "shipped_on"),
    ("sent on", "shipped_on"),
    ("dispatched on", "shipped_on"),
)
_ALWAYS_ALLOWED_WORDS = frozenset({"I", "I'm", "I'd", "I'll", "ORD", "OK"})
# Facts each outcome's reply must state (a reply cut short misses one of them).
_REQUIRED = {
    "get_order": ("order_id", "status", "product", "amount", "currency"),
    "find_orders": ("email", "latest_order_id", "latest_status"),
    "track_shipment": ("order_id", "carrier", "tracking_number"),
    "cancel_order": ("order_id", "amount", "currency"),
    "refund_order": ("order_id", "amount", "currency"),
    "update_shipping_address": ("order_id", "shipping_address"),
    "search_faq": ("answer",),
}


def check_reply(facts: Mapping[str, Any], reply: str) -> list[str]:
    """Every reason ``reply`` may not be sent for ``facts``; empty when it may."""
    problems = form_problems(reply)
    problems += _greeting_problems(facts, reply)
    text, trusted_problems = _without_trusted(facts, reply)
    problems += trusted_problems
    problems += _phrase_problems(facts, reply)
    problems += _id_problems(facts, text)
    problems += _money_problems(facts, text)
    problems += _date_problems(facts, text)
    problems += _digit_problems(facts, text)
    problems += _vocabulary_problems(facts, text)
    problems += _status_problems(facts, text)
    problems += _action_problems(facts, text)
    problems += _capitalised_problems(facts, text)
    problems += _missing_problems(facts, reply)
    return list(dict.fromkeys(problems))


def form_problems(reply: str) -> list[str]:
    """Well-formedness: one non-empty paragraph of complete sentences, no value said twice."""
    problems: list[str] = []
    stripped = reply.strip()
    if not stripped:
        return ["the reply is empty"]
    if "\n" in stripped:
        problems.append("the reply is more than one line")
    if not _SENTENCE_END.search(stripped):
        problems.append("the reply does not end with sentence punctuation (cut off?)")
    for sentence in re.split(r"(?<=[.!?])\s+", stripped):
        if len(_WORD.findall(sentence)) < 2 and not _DIGITS.search(sentence):
            problems.append(f"incomplete sentence {sentence!r}")
    for match in _REPEAT.finditer(stripped):
        problems.append(f"{match.group(1)!r} is repeated back to back")
    return problems


def _greeting_problems(facts: Mapping[str, Any], reply: str) -> list[str]:
    text = reply.strip()
    match = _GREETING.match(text)
    if match is None:
        return []
    addressed = addressed_name(facts.get("customer"))
    if addressed and text[match.end(1) :].startswith(f" {addressed},"):
        return []
    named = match.group(2).strip()
    if not named:
        return []
    return [f"the greeting names {named!r}, not the customer ({addressed or 'nobody'})"]


def _trusted_texts(facts: Mapping[str, Any]) -> list[str]:
    texts = []
    if not facts.get("ok") and isinstance(facts.get("message"), str):
        texts.append(facts["message"])
    if facts.get("tool") == "search_faq":
        texts.append(facts.get("answer") or replies.unknown_question_answer())
    if facts.get("ok") and facts.get("tool") in ("get_order", "track_shipment"):
        # The address on file, stated to its owner who asked for it: verbatim only.
        texts.append(facts.get("shipping_address"))
    # An earlier order a listing names, with its own product and status: verbatim, so a
    # status can never move from one order to another.
    texts.extend(replies.listed_order(order) for order in facts.get("earlier_orders") or ())
    return [text for text in texts if text]


def _without_trusted(facts: Mapping[str, Any], reply: str) -> tuple[str, list[str]]:
    """The reply with the case's trusted texts cut out; a trusted text must be verbatim."""
    problems = []
    text = reply
    for trusted in _trusted_texts(facts):
        if trusted in text:
            text = text.replace(trusted, " ")
        else:
            problems.append(f"the reply does not quote {trusted[:60]!r} as the source says it")
    return text, problems


def _phrase_problems(facts: Mapping[str, Any], reply: str) -> list[str]:
    """Fixed sentences of another intent's or outcome's reply."""
    expected = replies.write_reply(facts)
    return [
        f"{sentence!r} belongs to another kind of reply"
        for sentence in replies.fixed_sentences()
        if sentence in reply and sentence not in expected
    ]


def _values(facts: Mapping[str, Any], *keys: str) -> set[str]:
    return {str(facts[key]) for key in keys if facts.get(key) not in (None, "")}


def _id_problems(facts: Mapping[str, Any], text: str) -> list[str]:
    problems = []
    order_ids = _values(facts, "order_id", "latest_order_id") | {replies.EXAMPLE_ORDER_ID}
    for found in _ORDER_ID.findall(text):
        if found not in order_ids:
            problems.append(f"order id {found} is not the case's")
    emails = {email.lower() for email in _values(facts, "email")}
    for found in _EMAIL.findall(text):
        if found.rstrip(".").lower() not in emails:
            problems.append(f"email {found} is not the case's")
    tracking = _values(facts, "tracking_number")
    for token in _DIGITS.findall(text):
        token = token.rstrip(".!?")
        if _looks_like_tracking(token) and token not in tracking and not _ORDER_ID.match(token):
            problems.append(f"tracking number {token} is not the case's")
    return problems


def _looks_like_tracking(token: str) -> bool:
    return (
        len(token) >= 8
        and any(c.isdigit() for c in token)
        and any(c.isalpha() for c in token)
        and token.isalnum()
    )


def _money_problems(facts: Mapping[str, Any], text: str) -> list[str]:
    problems = []
    amounts = _values(facts, "amount")
    currency = facts.get("currency")
    for amount, code in _AMOUNT.findall(text):
        if amount not in amounts:
            problems.append(f"amount {amount} is not the case's")
        if code and code in orders.CURRENCIES and code != currency:
            problems.append(f"currency {code} is not the case's ({currency})")
    for word in _WORD.findall(text):
        code = word if word in orders.CURRENCIES else _CURRENCY_WORDS.get(word.lower())
        if code is not None and code != currency:
            problems.append(f"currency {word} is not the case's ({currency})")
    return problems


def _date_problems(facts: Mapping[str, Any], text: str) -> list[str]:
    problems = []
    dates = _values(facts, "estimated_delivery", "delivered_on", "shipped_on")
    for match in _DATE.finditer(text):
        before = text[max(0, match.start() - 24) : match.start()].lower()
        role = next((key for phrase, key in _DATE_ROLES if before.rstrip().endswith(phrase)), None)
        if role is not None:
            if facts.get(role) != match.group():
                problems.append(
                    f"date {match.group()} is stated as {role}, which is {facts.get(role)}"
                )
        elif match.group() not in dates:
            problems.append(f"date {match.group()} is not one of the case's dates")
    return problems


def _digit_problems(facts: Mapping[str, Any], text: str) -> list[str]:
    """Any other token with a digit must be one of the facts' own (or a reply constant)."""
    tokens = {
        token.rstrip(".!?")
        for value in facts.values()
        if value is not None and not isinstance(value, bool)
        for token in _DIGITS.findall(str(value))
    }
    allowed = {replies.EXAMPLE_ORDER_ID}
    if facts.get("ok") and facts.get("tool") == "refund_order":
        allowed.add(replies.REFUND_DAYS)
    problems = []
    count = facts.get("count")
    for stated in re.findall(r"\b(\d+) orders?\b", text):
        if str(count) != stated:
            problems.append(f"{stated} orders stated, the case has {count}")
    for token in _DIGITS.findall(text):
        token = token.rstrip(".!?")
        if not token or token in allowed or _DATE.fullmatch(token) or _AMOUNT.fullmatch(token):
            continue
        if _ORDER_ID.fullmatch(token) or _EMAIL.fullmatch(token):
            continue
        if token not in tokens:
            problems.append(f"{token!r} is not copied from the facts")
    return problems


def _vocabulary_problems(facts: Mapping[str, Any], text: str) -> list[str]:
    problems = []
    carriers = _values(facts, "carrier")
    for carrier in orders.CARRIERS:
        if re.search(rf"\b{re.escape(carrier)}\b", text) and carrier not in carriers:
            problems.append(f"carrier {carrier} is not the case's")
    products = _values(facts, "product", "latest_product")
    for product in orders.PRODUCTS:
        if product in text and not any(product in own for own in products):
            problems.append(f"product {product} is not the case's")
    return problems


def _status_problems(facts: Mapping[str, Any], text: str) -> list[str]:
    allowed = _values(facts, "status", "latest_status")
    if facts.get("ok") and facts.get("tool") == "cancel_order":
        allowed.add("cancelled")
    if facts.get("ok") and facts.get("tool") == "refund_order":
        allowed.add("refunded")
    if facts.get("delivered_on"):
        allowed.add("delivered")  # a refunded order was delivered first
    problems = []
    lowered = text.lower()
    for phrase in _NOT_A_STATUS:
        lowered = lowered.replace(phrase, " ")
    for phrase, status in _status_phrases():
        pattern = rf"\b{re.escape(phrase)}\b"
        if re.search(pattern, lowered):
            if status not in allowed:
                problems.append(
                    f"{phrase!r} says {status}, but the case's status is "
                    f"{' or '.join(sorted(allowed)) or 'not known'}"
                )
            lowered = re.sub(pattern, " ", lowered)
    return problems


def _action_problems(facts: Mapping[str, Any], text: str) -> list[str]:
    lowered = text.lower()
    return [
        f"{phrase!r} claims {tool} was done, but it was not"
        for phrase, tool in _ACTION_PHRASES.items()
        if phrase in lowered and not (facts.get("ok") and facts.get("tool") == tool)
    ]


def _capitalised_problems(facts: Mapping[str, Any], text: str) -> list[str]:
    """A capitalised word inside a sentence is a name, product, carrier or place: copied."""
    sources = " ".join(str(value) for value in facts.values() if isinstance(value, str))
    problems = []
    for sentence in re.split(r"(?<=[.!?,])\s+", text.strip()):
        words = _WORD.findall(sentence)
        for word in (w.rstrip("-'\u2019") for w in words[1:]):
            if word[0].isupper() and word not in _ALWAYS_ALLOWED_WORDS and word not in sources:
                problems.append(f"{word!r} is not a word of the facts")
    return problems


def _missing_problems(facts: Mapping[str, Any], reply: str) -> list[str]:
    if not facts.get("ok"):
        keys: Iterable[str] = ()
    elif facts.get("limited"):
        keys = ("order_id", "status")
    elif facts.get("tool") == "find_orders" and not facts.get("count"):
        keys = ("email",)
    else:
        keys = _REQUIRED.get(str(facts.get("tool")), ())
        if facts.get("tool") == "track_shipment":
            keys = (
                *keys,
                "estimated_delivery" if facts.get("status") == "shipped" else "delivered_on",
            )
    return [
        f"the reply leaves out the {key} ({facts[key]})"
        for key in keys
        if facts.get(key) not in (None, "") and str(facts[key]) not in reply
    ]
