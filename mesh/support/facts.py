"""The facts of a case: what the reply may state, taken from the tool result and nothing else.

:func:`reply_facts` turns one tool call and its result into the responder's input. The
planner calls it on real results and training calls it on simulated ones, so the
responder learns on exactly what it is later given. A fact of a kind the tool result
holds (status, carrier, the customer's name on the order) always comes from the result;
the customer's own message counts only for what the result does not hold (the name a
customer signs with when the result carries none), so a reply never repeats a customer's
wrong claim.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mesh.tools.orders import PRODUCTS

_NAME_PART = re.compile(r"^(?:Mc|Mac|O['\u2019]|D['\u2019])?[^\W\d_]+$")
_NOT_NAMES = frozenset(
    {
        "Hi", "Hello", "Hey", "Dear", "Thanks", "Thank", "Please", "Order", "Regards", "Best",
        "Cheers", "Customer", "Support", "Team", "Sir", "Madam", "Mr", "Mrs", "Ms", "Dr",
        "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
        "Morning", "Evening", "Afternoon", "Greetings", "Hiya", "Thx", "Ta", "Kind", "Warm",
        "Sincerely", "Yours", "Love", "Sent", "From", "Merci", "Gracias", "Grazie", "Danke",
        "Obrigado", "Obrigada", "Bedankt", "Tack", "Takk", "Tak", "Hola", "Hallo", "Ola",
        "Bonjour", "Ciao", "Salut", "Servus", "Saludos", "Grüße", "Gruss", "Grüß", "Namaste",
    }
)  # fmt: skip
"""Words a message opens or signs off with that are no one's name ("Hola!", "Merci.")."""
_PRODUCT_WORDS = frozenset(word for product in PRODUCTS for word in product.split())


_INITIAL = re.compile(r"[A-Z]\.")


def _name_word(word: str) -> bool:
    """One word of a person's name: capitalised letters, apostrophes and hyphens allowed
    ("José", "O'Brien", "Anne-Marie", "McKay", "Łukasz"); not all capitals ("SSD")."""
    parts = word.split("-")
    return (
        len(word) >= 2
        and word[0].isupper()
        and not word.isupper()
        and word not in _NOT_NAMES
        and all(part and _NAME_PART.match(part) and part[0].isupper() for part in parts)
    )


LISTED_ORDERS = 5
"""At most this many of a customer's orders a reply names (newest first): a customer without
their order number can pick one by its number."""


def addressed_name(customer: object) -> str | None:
    """The part of a customer's name a greeting uses: the first name ("Olga" of "Olga
    Petrov"), or an initial with the surname after it ("M. Mensah", never "M.").
    ``None`` when there is no name."""
    if not isinstance(customer, str) or not customer.strip():
        return None
    words = customer.split()
    if len(words) > 1 and _INITIAL.fullmatch(words[0]):
        return f"{words[0]} {words[1]}"
    return words[0]


def plausible_name(name: object, message: str | None = None) -> str | None:
    """``name`` if it reads as a person's name (and appears in ``message`` when given).

    One to three capitalised words of letters: "Olga Petrov", "José", "Anne-Marie Dubois".
    Anything else the extractor may return ("with", "SSD", "Coffee Grinder" when the
    words are a product's) is dropped, so a greeting never names a product or a stray word.
    """
    if not isinstance(name, str):
        return None
    words = name.strip().split()
    if not 1 <= len(words) <= 3:
        return None
    # An initial may stand before a surname ("M. Mensah"), never alone or last.
    if not all(
        _name_word(w) or (_INITIAL.fullmatch(w) and i < len(words) - 1) for i, w in enumerate(words)
    ):
        return None
    if all(word in _PRODUCT_WORDS for word in words):
        return None
    if message is not None and name.strip() not in message:
        return None
    return " ".join(words)


_DASHES = frozenset({"|", "-", "--", "\u2013", "\u2014", "/"})


def written_name(name: str, message: str) -> str:
    """The extractor's ``name`` as the message writes it on one line.

    A signature the model ran on into the lines below ("Rahul Kim Field Technician",
    "Kofi Inviato da iPhone") keeps its first line, up to a comma or a bar; a sign-off word
    before it goes ("Gracias Sofía"); and a line that holds nothing but a name (titles and
    sign-off words aside) gives all of it ("Dr. Valentina Nakamura" for "Nakamura", "Thanks,
    Elena O'Brien" for "Elena"); an initial before a surname keeps it ("M. Mensah" for
    "M"). A name the message does not write is returned as it is.
    """
    words = name.split()
    while words and words[0].strip(",.!") in _NOT_NAMES:
        words.pop(0)
    pattern = r"\s+".join(map(re.escape, words))
    found = re.search(rf"(?<!\w){pattern}(?!\w)", message) if words else None
    if found is None:
        return name
    start = message.rfind("\n", 0, found.start()) + 1
    end = message.find("\n", found.start())
    end = len(message) if end < 0 else end
    kept: list[str] = []
    for word in message[found.start() : min(found.end(), end)].split():
        if word in _DASHES:
            break
        kept.append(word.rstrip(",;:"))
        if word.endswith((",", ";", ":")):
            break
    line = [w.strip(",.;:!") for w in message[start:end].split()]
    line = [w for w in line if w and w not in _NOT_NAMES]
    if 1 <= len(line) <= 3 and all(_name_word(w) for w in line) and set(kept) <= set(line):
        return " ".join(line)
    signature = [w.strip(",;:!") for w in message[start:end].split()]
    signature = [w for w in signature if w and w.strip(".") not in _NOT_NAMES]
    surname = [w.rstrip(".") for w in signature[1:]]
    if (
        2 <= len(signature) <= 3
        and _INITIAL.fullmatch(signature[0])
        and all(_name_word(w) for w in surname)
        and set(kept) <= set(surname)
    ):
        return " ".join([signature[0], *surname])  # "V. Brennan" signed, "Brennan" read
    written = " ".join(kept) or name
    if re.fullmatch(r"[A-Z]\.?", written):
        # A signature "M. Mensah" read as "M": the initial with the surname after it.
        signed = re.search(rf"\b{written[0]}\.\s?[A-Z][\w'\u2019-]+", message)
        if signed is not None:
            return signed.group(0)
    return written


def reply_facts(
    intent: str,
    call: Mapping[str, Any],
    result: Mapping[str, Any],
    customer: str | None = None,
    *,
    address_asked: bool = False,
) -> dict[str, Any]:
    """The responder's input for one case: what was asked, what ran, what came back.

    ``customer`` is the name the customer gave (the extractor's ``name``, already checked
    with :func:`plausible_name`); the name on the order or account wins when the result
    has one. ``address_asked``: the message asks where the order is being sent ("which
    address is ORD-1 going to?"), so a full lookup's facts hold its shipping address (a
    limited one, for an anonymous sender, never does).
    """
    name = call["name"]
    arguments = call.get("arguments", {})
    facts: dict[str, Any] = {
        "intent": intent,
        "tool": name,
        "ok": bool(result.get("ok")),
        "customer": _customer_name(result) or customer,
    }
    if not result.get("ok"):
        error = result.get("error", {})
        if "order_id" in arguments:
            facts["order_id"] = arguments["order_id"]
        elif "email" in arguments:
            facts["email"] = arguments.get("email")
        facts["error"] = error.get("code")
        facts["message"] = error.get("message")
        if error.get("code") in _HIDES_OWNER:
            facts["customer"] = customer  # nothing of another customer's record
        return facts
    if result.get("limited"):
        order = result.get("order", result)
        facts.update(limited=True, order_id=order["order_id"], status=order["status"])
        return facts
    if name == "get_order":
        order = result["order"]
        facts.update(
            order_id=order["order_id"],
            status=order["status"],
            product=order["product"],
            amount=order["amount"],
            currency=order["currency"],
        )
        if address_asked and order.get("shipping_address"):
            facts["shipping_address"] = order["shipping_address"]
    elif name == "find_orders":
        found = result["orders"]
        latest = found[0] if found else {}
        facts.update(
            email=result["customer"]["email"],
            count=result["count"],
            latest_order_id=latest.get("order_id"),
            latest_status=latest.get("status"),
            latest_product=latest.get("product"),
        )
        if len(found) > 1:
            facts["earlier_orders"] = [
                {"order_id": o["order_id"], "product": o["product"], "status": o["status"]}
                for o in found[1:LISTED_ORDERS]
            ]
    elif name == "track_shipment":
        facts.update(
            order_id=result["order_id"],
            status=result["status"],
            carrier=result["carrier"],
            tracking_number=result["tracking_number"],
            shipped_on=_day(result["shipped_at"]),
            delivered_on=_day(result["delivered_at"]),
            estimated_delivery=result["estimated_delivery"],
        )
        if address_asked and result.get("shipping_address"):
            facts["shipping_address"] = result["shipping_address"]
    elif name in ("cancel_order", "refund_order"):
        facts.update(
            order_id=result["order_id"], amount=result["amount"], currency=result["currency"]
        )
    elif name == "update_shipping_address":
        facts.update(order_id=result["order_id"], shipping_address=result["shipping_address"])
    elif name == "search_faq":
        # Every entry returned answers a part of the question: the reply gives them all.
        matches = result.get("matches") or []
        facts.update(
            topic=matches[0]["topic"] if matches else None,
            answer=" ".join(m["answer"] for m in matches) if matches else None,
        )
    return facts


def facts_of_result(result: Mapping[str, Any], intent: str = "order_status") -> dict[str, Any]:
    """The facts of a bare tool result (a plan that drafts a reply straight from one).

    The tool is recognised by the result's shape; a refusal keeps its own message.
    """
    if "matches" in result:
        tool = "search_faq"
    elif "orders" in result:
        tool = "find_orders"
    elif "order" in result:
        tool = "get_order"
    elif "carrier" in result or "tracking_number" in result:
        tool = "track_shipment"
    elif "refund_id" in result:
        tool = "refund_order"
    elif "previous_address" in result:
        tool = "update_shipping_address"
    elif "previous_status" in result:
        tool = "cancel_order"
    elif result.get("ok") is False:
        tool = "get_order"
    else:
        raise ValueError("not a support-desk tool result")
    return reply_facts(intent, {"name": tool, "arguments": {}}, result)


_HIDES_OWNER = frozenset({"not_your_order", "not_your_account", "verification_required"})


def _customer_name(result: Mapping[str, Any]) -> str | None:
    order = result.get("order")
    if isinstance(order, Mapping) and isinstance(order.get("customer"), Mapping):
        return order["customer"].get("name")
    customer = result.get("customer")
    if isinstance(customer, Mapping):
        return customer.get("name")
    return None


def _day(stamp: str | None) -> str | None:
    return stamp[:10] if stamp else None
