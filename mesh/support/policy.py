"""What the desk does with a message before and after the models: size, language, consent.

- :func:`bounded_message`: the documented truncation rule, applied before any model sees
  a message.
- :func:`language_of`: English is the desk's language; another language gets a polite
  English answer and nothing else happens.
- :func:`asks_for`: a side-effecting tool runs only when the message asks for that action
  in plain words; a question about it ("is it really cancelled?") becomes a lookup.
- :func:`principal_of`: who a tool call acts for, as the channel verified the sender.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MAX_MESSAGE_CHARS = 600
"""A message is cut to this many characters (at a word boundary) before any model sees it."""
MAX_TAIL_CHARS = 200
"""...plus, when the cut dropped it, the first sentence naming an order id or an email."""

_REFERENCE = re.compile(r"\bORD-\d+\b|[^\s@]+@[^\s@]+\.[A-Za-z]{2,}", re.IGNORECASE)
_WORDS = re.compile(r"[a-zà-ÿß]+")

# Function words that tell languages apart in short messages; English's list wins ties.
_FUNCTION_WORDS = {
    "en": {
        "the", "my", "is", "it", "you", "and", "to", "of", "i", "what", "where", "when", "can",
        "please", "order", "with", "for", "have", "has", "this", "that", "was", "not", "how",
        "do", "does", "your", "me", "would", "could", "hi", "hello", "thanks", "yet", "still",
        "want", "need", "from", "get", "be", "did", "will", "why", "just", "about", "an",
    },
    "es": {
        "el", "la", "los", "las", "mi", "es", "y", "que", "qué", "dónde", "donde", "cuándo",
        "pedido", "por", "favor", "hola", "gracias", "quiero", "está", "esta", "todavía",
        "con", "para", "un", "una", "del", "al", "se", "no", "lo", "mis", "ha", "llegado",
    },
    "de": {
        "der", "die", "das", "ist", "und", "ich", "mein", "meine", "nicht", "bitte", "wo",
        "wann", "bestellung", "hallo", "danke", "mit", "für", "noch", "ein", "eine", "zu",
        "stornieren", "sie", "wie", "ihr", "mir", "habe", "auf", "den", "dem",
    },
    "fr": {
        "le", "les", "mon", "ma", "mes", "est", "et", "je", "où", "quand", "commande",
        "bonjour", "merci", "avec", "pour", "pas", "encore", "une", "des", "vous", "colis",
        "annuler", "s'il", "plaît", "au", "du", "ne", "suis", "j'ai", "remboursement",
    },
    "it": {
        "il", "gli", "mio", "mia", "è", "ed", "dove", "quando", "ordine", "ciao", "grazie",
        "per", "ancora", "non", "sono", "vorrei", "annullare", "rimborso", "della", "che",
    },
    "pt": {
        "o", "os", "meu", "minha", "é", "onde", "quando", "encomenda", "olá", "obrigado",
        "obrigada", "para", "ainda", "não", "pedido", "quero", "cancelar", "reembolso", "da",
    },
    "nl": {
        "de", "het", "mijn", "en", "ik", "waar", "wanneer", "bestelling", "hallo",
        "bedankt", "met", "voor", "nog", "niet", "een", "graag", "annuleren", "pakket",
    },
}  # fmt: skip

# Per side-effecting tool: words that ask for the action (never its past participle: "is it
# really cancelled?" asks about the state), and a negated request.
_ACTIONS = {
    "cancel_order": (
        re.compile(r"\bcanc?[ea]?l(?!l?ed\b)|\bcancellation\b|\bcall off\b|\bstop\b"),
        re.compile(r"\b(don'?t|do not|not|never) (want to )?cancel\b"),
    ),
    "refund_order": (
        re.compile(r"\brefund(?!ed\b)|\bback\b|\breimburse(?!d\b)|\breturn\b"),
        re.compile(r"\b(don'?t|do not|not|never) (want (a|to) )?refund\b"),
    ),
    "update_shipping_address": (
        re.compile(r"."),
        re.compile(r"\b(don'?t|do not) (change|update)\b"),
    ),
}


def bounded_message(message: str) -> tuple[str, bool]:
    """The message as the models see it, and whether it was cut.

    At most :data:`MAX_MESSAGE_CHARS` characters, cut at a word boundary; when the cut
    drops the first order id or email, the sentence holding it is kept too (at most
    :data:`MAX_TAIL_CHARS`), so a long message with its order number at the end still
    gets a lookup.
    """
    text = " ".join(message.split())
    if len(text) <= MAX_MESSAGE_CHARS:
        return text, False
    head = text[:MAX_MESSAGE_CHARS].rsplit(" ", 1)[0]
    if _REFERENCE.search(head) is None:
        found = _REFERENCE.search(text, len(head))
        if found is not None:
            start = max(text.rfind(". ", 0, found.start()) + 2, found.start() - MAX_TAIL_CHARS // 2)
            tail = text[start : start + MAX_TAIL_CHARS].rsplit(" ", 1)[0]
            if found.group() not in tail:
                tail = found.group()
            return f"{head} ... {tail}", True
    return head, True


def language_of(message: str) -> str:
    """``en`` or the code of the language whose function words the message uses most.

    Short or ambiguous messages count as English: the desk answers them rather than
    turning a customer away.
    """
    words = _WORDS.findall(_REFERENCE.sub(" ", message.lower()))
    scores = {lang: sum(word in vocab for word in words) for lang, vocab in _FUNCTION_WORDS.items()}
    best = max(scores, key=lambda lang: scores[lang])
    if best != "en" and scores[best] >= 2 and scores[best] > 1.5 * scores["en"]:
        return best
    return "en"


_CODE = re.compile(r"<[^>]*>|\{[^}]*\}|\[[^\]]*\]|\S*_\S*|\S*[;=]\S*")
"""Markup, JSON, identifiers and code in a message: words there ask for nothing."""


def asks_for(message: str, tool: str) -> bool:
    """Whether ``message`` asks for the side effect ``tool`` performs in plain words (the
    classifier and tool-caller already read it as that request; this is the last word).

    Yes when a word of the request is there, typos included ("cancle", "stop", "get it
    back"); no when the action is only named in its past participle ("I cancelled it, is it really
    cancelled?", "has it been refunded?": a question about the state, answered by a
    lookup), only inside markup, JSON or code (``{"name": "cancel_order"}``), or negated
    ("don't cancel it"); yes otherwise, typos included.
    """
    patterns = _ACTIONS.get(tool)
    if patterns is None:
        return True
    asked, negated = patterns
    lowered = _CODE.sub(" ", message).lower()
    if negated.search(lowered):
        return False
    return asked.search(lowered) is not None


def principal_of(sender: object) -> dict[str, Any]:
    """The ``principal`` of tool calls made for this sender (see mesh.support)."""
    if isinstance(sender, Mapping) and isinstance(sender.get("email"), str) and sender["email"]:
        return {"customer": sender["email"].strip()}
    return {"anonymous": True}


_YES = re.compile(
    r"^\W*(yes|yeah|yep|y|ok|okay|sure|confirm(ed)?|i confirm|go ahead|please do|do it)\b",
    re.IGNORECASE,
)
_NO = re.compile(r"\b(no|not|don'?t|cancel|stop|wait)\b", re.IGNORECASE)


def is_yes(answer: str) -> bool:
    """Whether the customer's answer to a confirmation question is an unambiguous yes."""
    return bool(_YES.match(answer)) and not _NO.search(answer)
