"""PII redaction of recorded calls, applied before anything reaches the dataset store.

Emails, phone numbers, payment card numbers (Luhn-checked) and known names are replaced by
surrogates. One :class:`Redaction` covers one call: the same value gets the same surrogate
in the input, the output and the error, so a student trained on redacted calls still learns
to copy a value from its input to its output. Surrogates come from a per-call counter
(``user1@example.com``, ``user2@example.com``, ...), so nothing about the original value
survives and nothing links two calls of the same person.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])"
)
# Digits in groups separated by single spaces or dashes; not part of an id like ORD-123456.
CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
# Optional +country code, optional (area code), then digit groups split by space, dot or dash.
PHONE = re.compile(
    r"(?<![\w+.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{1,5}(?:[ "
    r".-]?\d{1,5}){1,6}(?![\w-]|\.\d)"
)

SURROGATE_NAMES = (
    "Alex Morgan",
    "Sam Taylor",
    "Jordan Lee",
    "Casey Brooks",
    "Robin Hayes",
    "Drew Carter",
    "Jamie Fox",
    "Riley Quinn",
    "Avery Stone",
    "Morgan Blake",
    "Taylor Reed",
    "Cameron Ellis",
)
"""Surrogate names, handed out in order within one call (then ``Person 13``, ...)."""

_KINDS = ("email", "card", "name", "phone")
"""Overlap priority: an email containing a name stays one email, a card is not a phone."""


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number carries."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _luhn_digit(body: str) -> str:
    for check in "0123456789":
        if luhn_valid(body + check):
            return check
    raise AssertionError("unreachable: one check digit always fits")


def _is_phone(text: str) -> bool:
    digits = sum(c.isdigit() for c in text)
    if text.startswith("+"):
        return 8 <= digits <= 15
    # Without a country code at least 9 digits: dates (2024-05-01) and amounts stay.
    return 9 <= digits <= 15


@dataclass
class Redaction:
    """The surrogates of one call; call it on each of the call's texts in turn."""

    names: Iterable[str] = ()
    found: Counter[str] = field(default_factory=Counter)
    """How many distinct values of each kind were replaced."""

    def __post_init__(self) -> None:
        self._surrogates: dict[tuple[str, str], str] = {}
        self._name_parts: list[tuple[str, re.Pattern[str], str]] = []
        full: list[tuple[str, str]] = []
        for name in dict.fromkeys(n.strip() for n in self.names if n and n.strip()):
            surrogate = self._surrogate("name", name.casefold())
            full.append((name, surrogate))
        # Whole names first (longest first), then their single words: "Aisha" alone too.
        patterns = sorted(full, key=lambda pair: -len(pair[0]))
        for name, surrogate in full:
            words, fake = name.split(), surrogate.split()
            if len(words) > 1:
                patterns += [
                    (w, fake[min(i, len(fake) - 1)]) for i, w in enumerate(words) if len(w) > 1
                ]
        seen: set[str] = set()
        for value, surrogate in patterns:
            if value.casefold() not in seen:
                seen.add(value.casefold())
                pattern = re.compile(rf"(?<!\w){re.escape(value)}(?!\w)", re.IGNORECASE)
                self._name_parts.append((value, pattern, surrogate))

    def __call__(self, text: str | None) -> str | None:
        if not text:
            return text
        spans: list[tuple[int, int, str]] = []
        for kind in _KINDS:
            for start, end, surrogate in self._matches(kind, text):
                if all(end <= s or start >= e for s, e, _ in spans):
                    spans.append((start, end, surrogate))
        if not spans:
            return text
        out, last = [], 0
        for start, end, surrogate in sorted(spans):
            out += [text[last:start], surrogate]
            last = end
        out.append(text[last:])
        return "".join(out)

    def _matches(self, kind: str, text: str) -> Iterable[tuple[int, int, str]]:
        if kind == "email":
            for m in EMAIL.finditer(text):
                yield m.start(), m.end(), self._surrogate("email", m.group().casefold())
        elif kind == "card":
            for m in CARD.finditer(text):
                digits = re.sub(r"\D", "", m.group())
                if luhn_valid(digits):
                    yield m.start(), m.end(), self._card(digits, m.group())
        elif kind == "phone":
            for m in PHONE.finditer(text):
                if _is_phone(m.group()):
                    key = ("+" if m.group().startswith("+") else "") + re.sub(r"\D", "", m.group())
                    yield m.start(), m.end(), self._surrogate("phone", key)
        else:
            for _, pattern, surrogate in self._name_parts:
                for m in pattern.finditer(text):
                    yield m.start(), m.end(), surrogate

    def _surrogate(self, kind: str, key: str) -> str:
        existing = self._surrogates.get((kind, key))
        if existing is not None:
            return existing
        self.found[kind] += 1
        n = self.found[kind]
        if kind == "email":
            value = f"user{n}@example.com"
        elif kind == "phone":
            value = f"+1-202-555-{n % 10000:04d}"  # 555 numbers are reserved as fictional
        elif kind == "card":
            body = f"40000000000{n % 10000:04d}"  # a Visa test range, never issued
            value = body + _luhn_digit(body)
        else:
            value = SURROGATE_NAMES[n - 1] if n <= len(SURROGATE_NAMES) else f"Person {n}"
        self._surrogates[(kind, key)] = value
        return value

    def _card(self, digits: str, original: str) -> str:
        number = self._surrogate("card", digits)
        separator = next((c for c in original if not c.isdigit()), "")
        if not separator:
            return number
        return separator.join(number[i : i + 4] for i in range(0, len(number), 4))
