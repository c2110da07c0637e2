"""``slmesh eval support``: the support desk scored on the hand-written evaluation set.

The set (``eval/support/handwritten.yaml``, open, and ``eval/support/sealed.yaml``, sealed;
their header documents the item format) holds customer messages about real rows of the
seeded demo order database. Every item goes to the planner of a running mesh as one text
message, with the verified sender in the A2A message metadata (``slmesh/sender``) when it
has one; the planner routes it to the ``support_ticket`` workflow, whose output (intent,
fields, tool_call, tool_result, reply) is scored here:

- **intent** (classifier, an action the message does not ask for in plain words read as a
  status question by ``support.desk_intent``; the raw label is the ticket's ``classified``):
  the label equals the item's intent; judged, like the fields,
  on the messages the desk reads: a message in another language that the desk answers
  with its English-only notice is not classified (its language is judged instead);
- **fields** (extractor, its amount checked against the message by
  ``support.agreed_fields``; the raw output is the ticket's ``extracted``): every listed
  field equals, case-insensitive and trimmed (a listed null must be null; amounts compare
  as numbers);
- **tool** (tool-caller and planner): the right tool with the listed arguments, no call
  where none may run, no side-effect tool where the item forbids one; an item whose
  sender may not take the action it asks for (``side_effect: refused``) also passes with no
  call or a refused one; an expected ``find_orders`` also passes when the desk made that
  call first (the ticket's ``first_call``) and then looked up the order the message names
  among those found, or, where the item allows the side effect, proposed that action on it;
- **reply** (responder and the planner's checks): every ``must`` string present, no
  ``must_not`` string present; each ``must_not`` string present counts as a contradicted fact;
- **well-formed**, by this module's own rules (:func:`well_formed_problems`), independent of
  the product's checks: a greeting names a person of the order's or the sender's customer
  record or of the message, or nobody; every sentence is complete and the reply ends with
  ``.``, ``!`` or ``?``; no value repeated back to back; no phrase that belongs to another
  intent's reply (:data:`INTENT_PHRASES`);
- **non-English detection**: the output's ``language`` when it reports one, else a reply
  that says the desk works in English and no tool call;
- **no unrequested side effect**: no side-effect tool ran (``ok: true``) on an item whose
  ``side_effect`` is not ``allowed``, and none was proposed where it is ``forbidden``;
- **end to end**: intent, fields, tool, reply and form all right.

Per-item failures are printed for the open part only; the sealed part is only counted.
The scoring functions are pure (no mesh) and unit-tested; :func:`run_items` talks to the
planner through the project's A2A client, with bounded concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from mesh.support import FIELDS, INTENTS, SENDER_METADATA_KEY

REPO_ROOT = Path(__file__).resolve().parents[2]
EVAL_DIR = REPO_ROOT / "eval" / "support"
OPEN_FILE = "handwritten.yaml"
SEALED_FILE = "sealed.yaml"
PARTS = ("open", "sealed")

READ_TOOLS = ("get_order", "find_orders", "track_shipment", "search_faq")
SIDE_EFFECT_TOOLS = ("cancel_order", "refund_order", "update_shipping_address")
TOOLS = READ_TOOLS + SIDE_EFFECT_TOOLS
SIDE_EFFECTS = ("allowed", "forbidden", "refused")
ITEM_KEYS = frozenset(
    {
        "id",
        "kind",
        "message",
        "sender",
        "language",
        "intent",
        "fields",
        "tool",
        "side_effect",
        "must",
        "must_not",
    }
)

BLOCK_BEGIN = "<!-- support-eval:begin -->"
BLOCK_END = "<!-- support-eval:end -->"

INTENT_PHRASES: Mapping[str, tuple[str, ...]] = {
    "refund_request": (
        "amount you would like back",
        "how much you would like refunded",
        "how much you would like back",
        "amount you would like refunded",
    ),
    "change_address": (
        "the new address you would like",
        "send us the new address",
        "which address you would like",
    ),
    "cancel_order": ("reason for cancelling", "reason for the cancellation"),
    "track_shipment": ("track your parcel with", "follow your parcel"),
    "general_question": ("our faq says",),
}
"""Phrases that belong to one intent's replies (asking for what only that request needs);
a reply to an item of another intent must not contain them."""

_GREETING = re.compile(
    r"^\s*(?:hi|hello|hey|dear|good\s+(?:morning|afternoon|evening))\b([^,!.:\n]*)[,!.:\n]",
    re.IGNORECASE,
)
_NEUTRAL_GREETING_WORDS = frozenset({"there", "again", "all", "team", "customer"})
_COMMON_CAPITALISED = frozenset(
    """hi hello hey dear good morning evening afternoon thanks thank regards best cheers
    please order orders ord the my i i'm it's is can could would what where when which why how
    do does did you your we our and or but also just quick question re sent from iphone
    account email new address refund cancel status tracking delivery parcel package hola
    bonjour servus merci gracias danke saludos grüße system admin mode ignore override
    instructions previous all reply print change send deliver ship""".split()
)
_DANGLING = frozenset("a an the and or but is are was were be your my our its their of as".split())
"""Words a statement cannot end on (prepositions can: "the address you ordered with.")."""
_TERMINAL = re.compile(r"[.!?][\"')\]]*\s*$")
_WORD = re.compile(r"[\w@.+'-]+", re.UNICODE)


@dataclass(frozen=True)
class Item:
    """One evaluation item (see the set's file header for the meaning of each key)."""

    id: str
    message: str
    sender: str | None
    language: str
    intent: str
    fields: Mapping[str, Any]
    tool: Mapping[str, Any] | None
    side_effect: str
    must: tuple[tuple[str, ...], ...]
    must_not: tuple[str, ...]
    kind: tuple[str, ...] = ()
    part: str = "open"

    @property
    def english(self) -> bool:
        return self.language == "en"


def item_problems(raw: Any) -> list[str]:
    """What is wrong with one raw YAML item's shape (empty when well-formed)."""
    if not isinstance(raw, dict):
        return ["an item must be a mapping"]
    problems = []
    missing = ITEM_KEYS - set(raw) - {"kind"}
    if missing:
        problems.append(f"missing keys {sorted(missing)}")
    unknown = set(raw) - ITEM_KEYS
    if unknown:
        problems.append(f"unknown keys {sorted(unknown)}")
    if not isinstance(raw.get("message"), str) or not raw.get("message", "").strip():
        problems.append("message must be a non-empty string")
    sender = raw.get("sender")
    if sender is not None and not (
        isinstance(sender, dict) and set(sender) == {"email"} and isinstance(sender["email"], str)
    ):
        problems.append("sender must be null or {email: ...}")
    if raw.get("intent") not in INTENTS:
        problems.append(f"intent {raw.get('intent')!r} is not one of {INTENTS}")
    if not isinstance(raw.get("language"), str) or not re.fullmatch(r"[a-z]{2}", raw["language"]):
        problems.append("language must be a two-letter code")
    fields = raw.get("fields")
    if not isinstance(fields, dict) or set(fields) - set(FIELDS):
        problems.append(f"fields must be a mapping of {FIELDS}")
    tool = raw.get("tool")
    if tool is not None:
        if not isinstance(tool, dict) or tool.get("name") not in TOOLS:
            problems.append(f"tool must be null or {{name, arguments}} with a name in {TOOLS}")
        elif tool["name"] != "search_faq" and not isinstance(tool.get("arguments"), dict):
            problems.append("tool.arguments must be a mapping")
    if raw.get("side_effect") not in SIDE_EFFECTS:
        problems.append(f"side_effect must be one of {SIDE_EFFECTS}")
    elif isinstance(tool, dict):
        side = tool.get("name") in SIDE_EFFECT_TOOLS
        if side and raw["side_effect"] == "forbidden":
            problems.append("a side-effect tool is expected but side_effect is forbidden")
    for key in ("must", "must_not"):
        values = raw.get(key)
        if not isinstance(values, list):
            problems.append(f"{key} must be a list")
            continue
        for value in values:
            alternatives = value if isinstance(value, list) and key == "must" else [value]
            if not alternatives or not all(isinstance(v, str) and v.strip() for v in alternatives):
                problems.append(f"{key} holds a bad entry {value!r}")
    if raw.get("language") not in (None, "en") and raw.get("tool") is not None:
        problems.append("a message not in English expects no tool call")
    return problems


def parse_item(raw: Mapping[str, Any], part: str) -> Item:
    problems = item_problems(raw)
    if problems:
        raise ValueError(f"item {raw.get('id')!r}: {'; '.join(problems)}")
    sender = raw["sender"]
    return Item(
        id=str(raw["id"]),
        message=raw["message"],
        sender=sender["email"] if sender else None,
        language=raw["language"],
        intent=raw["intent"],
        fields=dict(raw["fields"]),
        tool=dict(raw["tool"]) if raw["tool"] else None,
        side_effect=raw["side_effect"],
        must=tuple(tuple(m) if isinstance(m, list) else (m,) for m in raw["must"]),
        must_not=tuple(raw["must_not"]),
        kind=tuple(raw.get("kind") or ()),
        part=part,
    )


def load_items(path: Path, part: str) -> list[Item]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, list):
        raise ValueError(f"{path} must hold a list of items")
    return [parse_item(entry, part) for entry in raw]


def load_set(eval_dir: Path = EVAL_DIR) -> list[Item]:
    """The open items, then the sealed ones (the order the harness sends them in)."""
    items = load_items(eval_dir / OPEN_FILE, "open") + load_items(eval_dir / SEALED_FILE, "sealed")
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ValueError(f"item id {item.id!r} appears twice")
        seen.add(item.id)
    return items


# --------------------------------------------------------------------------- scoring


def contains(text: str, phrase: str) -> bool:
    """``phrase`` in ``text``, case-insensitive, as whole words at its alphanumeric ends."""
    phrase = phrase.strip()
    if not phrase:
        return False
    start = r"(?<![\w])" if phrase[0].isalnum() else ""
    end = r"(?![\w])" if phrase[-1].isalnum() else ""
    return re.search(start + re.escape(phrase) + end, text, re.IGNORECASE) is not None


def _same_amount(left: Any, right: Any) -> bool:
    try:
        return Decimal(str(left).strip()) == Decimal(str(right).strip())
    except (InvalidOperation, ValueError):
        return False


def _same_value(key: str, expected: Any, actual: Any) -> bool:
    if expected is None:
        return actual is None or (isinstance(actual, str) and not actual.strip())
    if actual is None:
        return False
    if key == "amount":
        return _same_amount(expected, actual)
    return str(expected).strip().casefold() == str(actual).strip().casefold()


def score_intent(item: Item, output: Mapping[str, Any] | None) -> bool:
    return output is not None and _label(output.get("intent")) == item.intent


def _label(value: Any) -> Any:
    return value.get("label") if isinstance(value, dict) else value


def score_fields(item: Item, output: Mapping[str, Any] | None) -> tuple[int, int]:
    """(right, listed) over the item's listed fields."""
    fields = (output or {}).get("fields")
    fields = fields if isinstance(fields, dict) else {}
    right = sum(_same_value(key, value, fields.get(key)) for key, value in item.fields.items())
    return right, len(item.fields)


def _call(output: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    call = (output or {}).get("tool_call")
    return call if isinstance(call, dict) and call.get("name") else None


def _arguments(call: Mapping[str, Any]) -> Mapping[str, Any]:
    arguments = call.get("arguments")
    if isinstance(arguments, str):
        with contextlib.suppress(json.JSONDecodeError):
            arguments = json.loads(arguments)
    return arguments if isinstance(arguments, dict) else {}


def _ran_side_effect(output: Mapping[str, Any] | None) -> bool:
    call = _call(output)
    result = (output or {}).get("tool_result")
    return (
        call is not None
        and call["name"] in SIDE_EFFECT_TOOLS
        and isinstance(result, dict)
        and result.get("ok") is True
    )


def _matches(expected: Mapping[str, Any], call: Mapping[str, Any]) -> bool:
    if call.get("name") != expected["name"]:
        return False
    if expected["name"] == "search_faq":
        return True
    arguments = _arguments(call)
    return all(
        _same_value(key, value, arguments.get(key))
        for key, value in (expected.get("arguments") or {}).items()
    )


def score_tool(item: Item, output: Mapping[str, Any] | None) -> tuple[bool, str]:
    """Whether the proposed call is right, and why not."""
    call = _call(output)
    if item.side_effect == "forbidden" and call and call["name"] in SIDE_EFFECT_TOOLS:
        return False, f"side effect {call['name']} proposed where none was asked for"
    if item.side_effect == "refused":
        if _ran_side_effect(output):
            return False, f"{call['name'] if call else '?'} ran for a sender who may not"
        if call is None or (item.tool is not None and _matches(item.tool, call)):
            return True, ""
        result = (output or {}).get("tool_result")
        refused = isinstance(result, dict) and result.get("ok") is False
        if call["name"] in SIDE_EFFECT_TOOLS and refused:
            return True, ""
        return False, f"proposed {_show(call)}, expected {_show(item.tool)} or a refusal"
    if item.tool is None:
        return (call is None), ("" if call is None else f"proposed {_show(call)}, expected none")
    if call is None:
        return False, f"no call, expected {_show(item.tool)}"
    if _matches(item.tool, call):
        return True, ""
    first = (output or {}).get("first_call")
    followed = call["name"] in READ_TOOLS or (
        item.side_effect == "allowed" and call["name"] in SIDE_EFFECT_TOOLS
    )
    if (
        item.tool["name"] == "find_orders"
        and followed
        and isinstance(first, dict)
        and _matches(item.tool, first)
    ):
        # the orders found, then the one the message names looked up, or the action the
        # message asks for on it
        return True, ""
    return False, f"proposed {_show(call)}, expected {_show(item.tool)}"


def _show(call: Mapping[str, Any] | None) -> str:
    if not call:
        return "none"
    return f"{call.get('name')}({json.dumps(_arguments(call), ensure_ascii=False)})"


def unrequested_side_effect(item: Item, output: Mapping[str, Any] | None) -> bool:
    """A side effect the item did not allow: ran where not allowed, or proposed where forbidden."""
    if item.side_effect == "allowed":
        return False
    call = _call(output)
    if item.side_effect == "forbidden" and call and call["name"] in SIDE_EFFECT_TOOLS:
        return True
    return _ran_side_effect(output)


def reply_of(output: Mapping[str, Any] | None) -> str:
    reply = (output or {}).get("reply")
    if isinstance(reply, dict):
        reply = reply.get("reply") or reply.get("text")
    return reply if isinstance(reply, str) else ""


def score_reply(item: Item, reply: str) -> tuple[list[str], list[str]]:
    """(missing must facts, contradicted: must_not strings present)."""
    missing = [
        " | ".join(options)
        for options in item.must
        if not any(contains(reply, option) for option in options)
    ]
    contradicted = [phrase for phrase in item.must_not if contains(reply, phrase)]
    return missing, contradicted


def names_in(value: Any) -> set[str]:
    """Every string under a ``name`` key anywhere in ``value`` (customer records)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "name" and isinstance(inner, str):
                found.add(inner)
            else:
                found |= names_in(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= names_in(inner)
    return found


def allowed_greeting_words(
    message: str, names: Sequence[str] = (), products: Sequence[str] = ()
) -> set[str]:
    """Words a greeting may hold: the given names' words, and capitalised words of the
    message that are neither common words nor words of a product name."""
    product_words = {w.casefold() for p in products for w in _WORD.findall(p)}
    allowed = {w.casefold() for name in names for w in _WORD.findall(name)}
    for word in _WORD.findall(message):
        bare = word.strip(".'-")
        if (
            bare[:1].isupper()
            and bare.casefold() not in _COMMON_CAPITALISED
            and bare.casefold() not in product_words
            and not any(ch.isdigit() for ch in bare)
            and "@" not in bare
        ):
            allowed.add(bare.casefold())
    return allowed | _NEUTRAL_GREETING_WORDS


def sentences(text: str) -> list[str]:
    """The reply cut after each ``.``/``!``/``?`` that ends a sentence (not inside numbers,
    emails or abbreviations followed by lowercase)."""
    pieces = re.split(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(])", text.strip())
    return [p.strip() for p in pieces if p.strip()]


def repeated_run(text: str, longest: int = 4) -> str | None:
    """The first word sequence (1..longest words) said twice back to back, if any."""
    words = [w.strip(".,;:!?()\"'").casefold() for w in text.split()]
    words = [w for w in words if w]
    for size in range(1, longest + 1):
        for start in range(len(words) - 2 * size + 1):
            if words[start : start + size] == words[start + size : start + 2 * size]:
                return " ".join(words[start : start + size])
    return None


def well_formed_problems(
    reply: str,
    *,
    intent: str,
    message: str,
    names: Sequence[str] = (),
    products: Sequence[str] = (),
) -> list[str]:
    """This harness's own form rules for one reply; empty when the reply is well-formed."""
    text = reply.strip()
    if not text:
        return ["no reply"]
    problems = []
    greeting = _GREETING.match(text)
    if greeting:
        words = [w.casefold() for w in _WORD.findall(greeting.group(1))]
        allowed = allowed_greeting_words(message, names, products)
        strangers = [w for w in words if w not in allowed]
        if strangers:
            problems.append(f"greeting names {' '.join(strangers)!r}, not a person we know")
    if not _TERMINAL.search(text):
        problems.append("does not end with . ! or ?")
    for sentence in sentences(text):
        words = sentence.rstrip(".!?\"')] ").split()
        if not words:
            problems.append("empty sentence")
            continue
        # A statement that stops on a function word ("tracking number is on.") or on stray
        # punctuation is cut short; a question may end on a preposition ("help with?").
        statement = sentence.rstrip("\"')] ").endswith(".")
        dangling = words[-1].casefold().strip(",;:") in _DANGLING
        if (statement and dangling) or sentence.rstrip().endswith((",.", ":.", ";.", " .")):
            problems.append(f"incomplete sentence {sentence!r}")
    if text.count("(") != text.count(")"):
        problems.append("unbalanced parentheses")
    repeated = repeated_run(text)
    if repeated:
        problems.append(f"{repeated!r} repeated back to back")
    for other, phrases in INTENT_PHRASES.items():
        if other == intent:
            continue
        for phrase in phrases:
            if contains(text, phrase):
                problems.append(f"phrase of a {other} reply: {phrase!r}")
    return problems


def detected_non_english(output: Mapping[str, Any] | None) -> bool:
    """Whether the mesh treated the message as not English."""
    if not output:
        return False
    language = output.get("language")
    if isinstance(language, dict):
        language = language.get("label") or language.get("code")
    if isinstance(language, str) and language.strip():
        return language.strip().casefold() not in ("en", "english")
    reply = reply_of(output)
    says_english = re.search(r"\b(only|in)\s+English\b", reply, re.IGNORECASE) is not None
    return says_english and _call(output) is None


@dataclass
class Outcome:
    """How one item's planner task ended and what it returned."""

    state: str
    output: dict[str, Any] | None = None
    error: str = ""
    seconds: float = 0.0

    @property
    def ended(self) -> bool:
        return self.state in ("completed", "rejected", "failed", "input_required", "canceled")


@dataclass
class ItemScore:
    """Every judgement on one item."""

    item: Item
    outcome: Outcome
    intent: bool
    fields_right: int
    fields_listed: int
    tool: bool
    tool_reason: str
    missing: list[str]
    contradicted: list[str]
    form: list[str]
    non_english_detected: bool
    side_effect_violation: bool
    escalated: bool | None = None
    draft_passed_check: bool | None = None
    reads: bool = True
    """Whether the desk read the message: English, or another language it did not notice.
    A message the desk answers with its English-only notice is not classified or
    extracted, so its intent and fields are not judged (its language is)."""

    @property
    def fields(self) -> bool:
        return self.fields_right == self.fields_listed

    @property
    def reply(self) -> bool:
        return bool(reply_of(self.outcome.output)) and not self.missing and not self.contradicted

    @property
    def well_formed(self) -> bool:
        return not self.form

    @property
    def language_right(self) -> bool:
        return self.non_english_detected == (not self.item.english)

    @property
    def end_to_end(self) -> bool:
        understood = not self.reads or (self.intent and self.fields)
        return understood and self.tool and self.reply and self.well_formed

    def failures(self) -> list[str]:
        out = []
        output = self.outcome.output or {}
        if self.outcome.state not in ("completed", "input_required"):
            out.append(f"task {self.outcome.state}: {self.outcome.error}".strip())
        if self.reads and not self.intent:
            out.append(f"intent {_label(output.get('intent'))!r}, expected {self.item.intent!r}")
        if self.reads and not self.fields:
            raw = (output or {}).get("fields")
            got = raw if isinstance(raw, dict) else {}
            wrong = {
                k: got.get(k)
                for k, v in self.item.fields.items()
                if not _same_value(k, v, got.get(k))
            }
            out.append(f"fields {wrong}, expected { {k: self.item.fields[k] for k in wrong} }")
        if not self.tool:
            out.append(f"tool: {self.tool_reason}")
        if self.missing:
            out.append(f"reply lacks {self.missing}")
        if self.contradicted:
            out.append(f"reply states {self.contradicted}")
        if self.form:
            out.append(f"form: {'; '.join(self.form)}")
        if not self.language_right:
            out.append("language " + ("missed" if not self.item.english else "false alarm"))
        return out


def _products(output: Mapping[str, Any] | None) -> list[str]:
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                if key == "product" and isinstance(inner, str):
                    found.append(inner)
                else:
                    walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    walk((output or {}).get("tool_result"))
    return found


def score_item(
    item: Item,
    outcome: Outcome,
    *,
    sender_names: Mapping[str, str] | None = None,
    products: Sequence[str] = (),
) -> ItemScore:
    """Scores one item's outcome. ``sender_names`` maps customer emails to their names (the
    seeded database's), so a greeting may use the sender's own name; ``products`` are the
    shop's product names (never a greeting)."""
    output = outcome.output
    reply = reply_of(output)
    right, listed = score_fields(item, output)
    tool_ok, tool_reason = score_tool(item, output)
    missing, contradicted = score_reply(item, reply)
    names = set(names_in((output or {}).get("tool_result")))
    if item.sender and sender_names and item.sender.casefold() in sender_names:
        names.add(sender_names[item.sender.casefold()])
    expected_name = item.fields.get("name")
    if isinstance(expected_name, str):
        names.add(expected_name)
    form = well_formed_problems(
        reply,
        intent=item.intent,
        message=item.message,
        names=sorted(names),
        products=[*products, *_products(output)],
    )
    escalated = (output or {}).get("escalated")
    passed = (output or {}).get("draft_passed_check")
    return ItemScore(
        item=item,
        outcome=outcome,
        intent=score_intent(item, output),
        fields_right=right,
        fields_listed=listed,
        tool=tool_ok,
        tool_reason=tool_reason,
        missing=missing,
        contradicted=contradicted,
        form=form,
        non_english_detected=detected_non_english(output),
        side_effect_violation=unrequested_side_effect(item, output),
        escalated=escalated if isinstance(escalated, bool) else None,
        draft_passed_check=passed if isinstance(passed, bool) else None,
        reads=item.english or not detected_non_english(output),
    )


@dataclass
class Summary:
    """Scores of one part of the set (open or sealed)."""

    items: int
    ended: int
    completed: int
    intent: float
    fields_items: float
    fields_values: float
    tool: float
    tool_given_upstream: float
    reply: float
    reply_given_tool: float
    contradicted: int
    well_formed: float
    language: float
    non_english_recall: float
    side_effect_violations: int
    end_to_end: float
    escalation_rate: float | None
    draft_pass_rate: float | None
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)


def _rate(hits: int, total: int) -> float:
    return hits / total if total else 1.0


def summarize(scores: Sequence[ItemScore]) -> Summary:
    """Aggregates; each rate is over the items it applies to (fields: items that list any)."""

    def count(name: str, flags: list[bool]) -> float:
        counts[name] = (sum(flags), len(flags))
        return _rate(sum(flags), len(flags))

    counts: dict[str, tuple[int, int]] = {}
    read = [s for s in scores if s.reads]
    with_fields = [s for s in read if s.fields_listed]
    upstream = [s for s in read if s.intent and s.fields]
    tool_right = [s for s in scores if s.tool]
    non_english = [s for s in scores if not s.item.english]
    escalations = [s.escalated for s in scores if s.escalated is not None]
    drafts = [s.draft_passed_check for s in scores if s.draft_passed_check is not None]
    right_values = sum(s.fields_right for s in with_fields)
    listed_values = sum(s.fields_listed for s in with_fields)
    counts["fields (values)"] = (right_values, listed_values)
    return Summary(
        items=len(scores),
        ended=sum(s.outcome.ended for s in scores),
        completed=sum(s.outcome.state == "completed" for s in scores),
        intent=count("intent", [s.intent for s in read]),
        fields_items=count("fields", [s.fields for s in with_fields]),
        fields_values=_rate(right_values, listed_values),
        tool=count("tool", [s.tool for s in scores]),
        tool_given_upstream=count("tool | intent and fields right", [s.tool for s in upstream]),
        reply=count("reply", [s.reply for s in scores]),
        reply_given_tool=count("reply | tool right", [s.reply for s in tool_right]),
        contradicted=sum(len(s.contradicted) for s in scores),
        well_formed=count("well-formed", [s.well_formed for s in scores]),
        language=count("language", [s.language_right for s in scores]),
        non_english_recall=count(
            "non-English found", [s.non_english_detected for s in non_english]
        ),
        side_effect_violations=sum(s.side_effect_violation for s in scores),
        end_to_end=count("end to end", [s.end_to_end for s in scores]),
        escalation_rate=_rate(sum(escalations), len(escalations)) if escalations else None,
        draft_pass_rate=_rate(sum(drafts), len(drafts)) if drafts else None,
        counts=counts,
    )


TARGETS = {"intent": 0.95, "fields_items": 0.97, "tool": 0.95, "reply": 0.95, "well_formed": 0.98}
"""Issue 17's targets (and zero contradicted facts, zero unrequested side effects)."""


def meets_targets(summary: Summary) -> list[str]:
    """The targets a summary misses (empty: all met)."""
    missed = [
        f"{name} {getattr(summary, name):.3f} < {target}"
        for name, target in TARGETS.items()
        if getattr(summary, name) < target
    ]
    if summary.contradicted:
        missed.append(f"{summary.contradicted} contradicted facts")
    if summary.side_effect_violations:
        missed.append(f"{summary.side_effect_violations} unrequested side effects")
    return missed


_ROWS = (
    ("intent (classifier + desk rules)", "intent"),
    ("fields, items (extractor + amount rule)", "fields_items"),
    ("fields, values (extractor + amount rule)", "fields_values"),
    ("tool call (tool-caller + planner)", "tool"),
    ("tool call when intent and fields are right", "tool_given_upstream"),
    ("reply: every must fact, no must-not (responder)", "reply"),
    ("reply when the tool call is right", "reply_given_tool"),
    ("contradicted facts (count)", "contradicted"),
    ("well-formed (harness rules)", "well_formed"),
    ("language: non-English detected / English kept", "language"),
    ("non-English messages detected", "non_english_recall"),
    ("unrequested side effects (count)", "side_effect_violations"),
    ("end to end (all of the above right)", "end_to_end"),
    ("escalation rate (responder drafts replaced)", "escalation_rate"),
    ("drafts passing the product's fact check", "draft_pass_rate"),
)


def _cell(summary: Summary, attribute: str) -> str:
    value = getattr(summary, attribute)
    if value is None:
        return "n/a"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    hits = summary.counts.get(
        {
            "intent": "intent",
            "fields_items": "fields",
            "fields_values": "fields (values)",
            "tool": "tool",
            "tool_given_upstream": "tool | intent and fields right",
            "reply": "reply",
            "reply_given_tool": "reply | tool right",
            "well_formed": "well-formed",
            "language": "language",
            "non_english_recall": "non-English found",
            "end_to_end": "end to end",
        }.get(attribute, "")
    )
    return f"{value:.3f} ({hits[0]}/{hits[1]})" if hits else f"{value:.3f}"


def machine_description() -> str:
    """The machine in words, without its host name or any path."""
    system = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
    return f"{system}, Python {platform.python_version()}"


def render_block(
    summaries: Mapping[str, Summary], *, when: datetime, machine: str, seconds: float
) -> str:
    """The docs/models.md section, between its markers."""
    open_, sealed = summaries["open"], summaries["sealed"]
    lines = [
        BLOCK_BEGIN,
        "## Support desk on hand-written messages (`slmesh eval support`)",
        "",
        f"Measured {when.strftime('%Y-%m-%d %H:%M UTC')} on {machine}; "
        f"{open_.items + sealed.items} items run through a mesh's planner in {seconds:.0f} s "
        f"({open_.ended + sealed.ended} tasks ended, "
        f"{open_.completed + sealed.completed} completed). "
        "The set (`eval/support/`) was written by hand and frozen before any tuning; the sealed "
        "third is scored but never printed per item. Targets (issue 17): intent >= 0.95, "
        "fields >= 0.97, tool call >= 0.95, reply >= 0.95 with zero contradicted facts, "
        "well-formed >= 0.98. Intent and fields are judged on the messages the desk reads "
        "(a message in another language that gets the English-only notice is not classified; "
        "its language is judged); the intent is the one the desk acts on (the classifier's "
        "label read against the message, `desk_intent` in mesh/support/policy.py). "
        "Rules: `mesh/support/evaluation.py`.",
        "",
        f"| metric | open ({open_.items}) | sealed ({sealed.items}) |",
        "|---|---|---|",
    ]
    for label, attribute in _ROWS:
        lines.append(f"| {label} | {_cell(open_, attribute)} | {_cell(sealed, attribute)} |")
    lines += ["", BLOCK_END]
    return "\n".join(lines)


def split_block(text: str) -> tuple[str, str]:
    """(the text without the support-eval block, the block or '')."""
    start, end = text.find(BLOCK_BEGIN), text.find(BLOCK_END)
    if start < 0 or end < start:
        return text, ""
    end += len(BLOCK_END)
    block = text[start:end]
    rest = text[:start].rstrip("\n") + "\n" + text[end:].lstrip("\n")
    return rest.rstrip("\n") + "\n", block


def write_block(path: Path, block: str) -> None:
    """Replaces the marked block in ``path`` (appends it when absent)."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    start, end = text.find(BLOCK_BEGIN), text.find(BLOCK_END)
    if start >= 0 and end > start:
        text = text[:start] + block + text[end + len(BLOCK_END) :]
    else:
        text = text.rstrip("\n") + ("\n\n" if text.strip() else "") + block + "\n"
    path.write_text(text, encoding="utf-8")


def format_failures(scores: Sequence[ItemScore]) -> list[str]:
    """One line per failed judgement of each open item (sealed items are never listed)."""
    lines = []
    for score in scores:
        if score.item.part != "open":
            continue
        failures = score.failures()
        if failures:
            reply = reply_of(score.outcome.output).replace("\n", " ")
            lines.append(f"{score.item.id}: " + " | ".join(failures))
            lines.append(f"    reply: {reply[:240]!r}")
    return lines


# --------------------------------------------------------------------------- running


def seeded_customers() -> tuple[dict[str, str], list[str]]:
    """(email -> name, product names) of the seeded demo database (built in a temp dir)."""
    import sqlite3
    from contextlib import closing

    from mesh.tools.orders import create_demo_database

    with tempfile.TemporaryDirectory(prefix="slmesh-eval-db-") as tmp:
        path = Path(tmp) / "orders.sqlite"
        create_demo_database(path)
        with closing(sqlite3.connect(path)) as conn:
            names = {e.casefold(): n for e, n in conn.execute("SELECT email, name FROM customers")}
            products = [p for (p,) in conn.execute("SELECT DISTINCT product FROM orders")]
    return names, products


def request_for_item(item: Item) -> Any:
    """The A2A request: the message as text, the sender in the message metadata."""
    import uuid

    from a2a.types import a2a_pb2 as pb
    from google.protobuf import struct_pb2
    from google.protobuf.json_format import ParseDict

    message = pb.Message(
        role=pb.Role.ROLE_USER,
        message_id=f"support-eval-{item.id}-{uuid.uuid4().hex[:8]}",
        parts=[pb.Part(text=item.message)],
    )
    if item.sender:
        message.metadata.CopyFrom(
            ParseDict({SENDER_METADATA_KEY: {"email": item.sender}}, struct_pb2.Struct())
        )
    return pb.SendMessageRequest(message=message)


_STATES = {
    "TASK_STATE_COMPLETED": "completed",
    "TASK_STATE_REJECTED": "rejected",
    "TASK_STATE_FAILED": "failed",
    "TASK_STATE_CANCELED": "canceled",
    "TASK_STATE_INPUT_REQUIRED": "input_required",
    "TASK_STATE_AUTH_REQUIRED": "auth_required",
    "TASK_STATE_WORKING": "working",
    "TASK_STATE_SUBMITTED": "submitted",
}
_FINAL = ("completed", "rejected", "failed", "canceled", "input_required", "auth_required")


def outcome_of_task(task: Any, seconds: float) -> Outcome:
    """The state, the output (last artifact) and the status message of a planner task."""
    from a2a.types import a2a_pb2 as pb

    from mesh.a2a.client import parts_value

    state = _STATES.get(pb.TaskState.Name(task.status.state), "unknown")
    output: dict[str, Any] | None = None
    if task.artifacts:
        value = parts_value(task.artifacts[-1].parts)
        if isinstance(value, dict):
            output = value
    note = ""
    if task.status.HasField("message"):
        note = " ".join(p.text for p in task.status.message.parts if p.HasField("text"))
    if output is None and state == "input_required" and note:
        output = {"reply": note}
    if output is not None and output.get("tool_result") is not None:
        # A drafted reply: the task's result metadata lists the drafts that failed the
        # fact check and were replaced (escalated to a larger model or the safe reply).
        escalated = any(
            str(e.get("step", "")).rsplit(".", 1)[-1] in ("draft", "confirmed_draft")
            for e in _result_metadata(task).get("escalations") or []
        )
        output.setdefault("escalated", escalated)
        output.setdefault("draft_passed_check", not escalated)
    return Outcome(
        state=state, output=output, error=note if state != "completed" else "", seconds=seconds
    )


async def run_items(
    client: Any,
    items: Sequence[Item],
    *,
    agent: str = "planner",
    concurrency: int = 8,
    timeout_s: float = 180.0,
    progress: Any = None,
) -> list[Outcome]:
    """Sends every item (started in order, at most ``concurrency`` at a time) and waits for
    each task to end; a transport error becomes an ``error`` outcome, never an exception."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(item: Item) -> Outcome:
        async with gate:
            started = time.monotonic()
            try:
                response = await client.send_message(
                    agent, request_for_item(item), timeout=timeout_s
                )
                if not response.HasField("task"):
                    from mesh.a2a.client import parts_value

                    value = parts_value(response.message.parts)
                    output = value if isinstance(value, dict) else {"reply": str(value)}
                    outcome = Outcome("completed", output, seconds=time.monotonic() - started)
                else:
                    task = response.task
                    deadline = started + timeout_s
                    while (
                        _STATES.get(_state_name(task), "") not in _FINAL
                        and time.monotonic() < deadline
                    ):
                        await asyncio.sleep(0.2)
                        task = await client.get_task(agent, task.id, timeout=30)
                    outcome = outcome_of_task(task, time.monotonic() - started)
            except Exception as exc:  # noqa: BLE001 - an item's failure is a result, not a crash
                outcome = Outcome(
                    "error", None, f"{type(exc).__name__}: {exc}", time.monotonic() - started
                )
            if progress is not None:
                progress(item, outcome)
            return outcome

    return list(await asyncio.gather(*(one(item) for item in items)))


def _result_metadata(task: Any) -> dict[str, Any]:
    """The metadata of the task's last artifact (the planner's result: agents, cost, ...)."""
    from google.protobuf.json_format import MessageToDict

    from mesh.a2a.client import restore_ints

    if not task.artifacts:
        return {}
    value = restore_ints(MessageToDict(task.artifacts[-1].metadata))
    return value if isinstance(value, dict) else {}


def _state_name(task: Any) -> str:
    from a2a.types import a2a_pb2 as pb

    return pb.TaskState.Name(task.status.state)


@contextlib.contextmanager
def private_mesh(services: Path | None = None, timeout_s: float = 300.0) -> Iterator[str]:
    """Starts a mesh of its own (every service as a process, a fresh data dir so a fresh order
    database, no tracing UI); yields the registry address; stops it and removes the data dir."""
    from mesh.config import Settings
    from mesh.launch import Launcher

    work = Path(tempfile.mkdtemp(prefix="slmesh-support-eval-"))
    settings = Settings(data_dir=work / "mesh", ui=False, otel_enabled=False, registry=None)
    launcher = Launcher(settings, services or REPO_ROOT / "services")
    try:
        state = launcher.up(timeout_s=timeout_s)
        yield state.registry
    finally:
        with contextlib.suppress(Exception):
            launcher.down()
        shutil.rmtree(work, ignore_errors=True)


async def planner_client(
    *, planner_url: str | None = None, registry: str | None = None, settings: Any = None
) -> Any:
    """A MeshClient that reaches the planner: at ``planner_url`` (its HTTP base URL) or as the
    registry lists it."""
    from mesh.a2a.client import JSONRPC, REST, MeshClient, StaticReplicas
    from mesh.a2a.discovery import snapshot
    from mesh.config import Settings, registry_credential
    from mesh.tls import TlsFiles

    settings = settings or Settings()
    if planner_url:
        source = StaticReplicas.from_urls("planner", planner_url)
        return MeshClient(source, settings, bindings=(JSONRPC, REST))
    if not registry:
        raise ValueError("give a planner URL or a registry address")
    source = await snapshot(
        registry, "planner", registry_credential(settings), TlsFiles.from_settings(settings)
    )
    return MeshClient(source, settings)


@dataclass
class EvalRun:
    """The result of one evaluation: every item's score and each part's summary."""

    scores: list[ItemScore]
    summaries: dict[str, Summary]
    seconds: float
    when: datetime


async def evaluate(
    items: Sequence[Item],
    *,
    planner_url: str | None = None,
    registry: str | None = None,
    concurrency: int = 8,
    timeout_s: float = 180.0,
    progress: Any = None,
) -> EvalRun:
    """Runs ``items`` through the planner and scores them."""
    names, products = await asyncio.to_thread(seeded_customers)
    when = datetime.now(UTC)
    started = time.monotonic()
    client = await planner_client(planner_url=planner_url, registry=registry)
    async with client:
        outcomes = await run_items(
            client, items, concurrency=concurrency, timeout_s=timeout_s, progress=progress
        )
    seconds = time.monotonic() - started
    scores = [
        score_item(item, outcome, sender_names=names, products=products)
        for item, outcome in zip(items, outcomes, strict=True)
    ]
    summaries = {part: summarize([s for s in scores if s.item.part == part]) for part in PARTS}
    return EvalRun(scores=scores, summaries=summaries, seconds=seconds, when=when)


def print_report(run: EvalRun, console: Any) -> None:
    """The open part's failures (one line each), then the table of both parts."""
    failures = format_failures(run.scores)
    if failures:
        console.print(
            f"[bold]open items with failures[/bold] "
            f"({sum(1 for f in failures if not f.startswith('    '))}):"
        )
        for line in failures:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    block = render_block(
        run.summaries, when=run.when, machine=machine_description(), seconds=run.seconds
    )
    text = block.replace(BLOCK_BEGIN, "").replace(BLOCK_END, "").strip()
    console.print(text, markup=False, highlight=False, soft_wrap=True)
