"""Output declarations compiled to llguidance Lark grammars for constrained decoding.

Why a compiler of our own on top of llguidance (and not its JSON Schema support): the mesh
needs three things its JSON mode does not give together: COMPACT output with every property
emitted in schema order (so a tiny model learns one exact format), bounded numbers (so a
model cannot run a number past its token budget), and *grounded* strings whose value can
only be a span of the request's input (copy-constrained decoding). llguidance does the hard
part: a token-level Earley parser over the whole vocabulary, fast for 150k-token BPE and for
character vocabularies alike, with ``substring_chunks`` lexemes for the spans.

Supported JSON Schema subset (anything else raises :class:`SchemaError` up front, so output
that decoding produced always validates):

- ``type``: ``object``, ``array``, ``string``, ``integer``, ``number``, ``boolean``, ``null``,
  or a list of these (``["string", "null"]`` for nullable);
- ``enum`` (of any JSON values) and ``const``;
- ``anyOf`` / ``oneOf`` of any supported schemas. ``oneOf`` is decoded like ``anyOf``: its
  branches must be disjoint (e.g. tool calls told apart by a ``const`` name), otherwise
  output matching two branches fails validation;
- objects: ``properties`` (emitted in declaration order, all of them, compact: ``{"a":1}``),
  ``required`` (must name declared properties), ``additionalProperties`` (``false``; any
  other value is accepted but no extra property is ever generated);
- arrays: ``items`` (one schema), ``minItems``, ``maxItems``;
- strings: ``minLength``, ``maxLength``, ``enum``, ``pattern`` and ``x-grounded``.
  ``pattern`` keeps JSON Schema's search semantics (``^``/``$`` anchor it) but must be a
  regex the Rust ``regex`` crate understands (no look-around, no back-references); a
  patterned string never contains quotes, backslashes or control characters;
- ``"x-grounded": true`` on a string: the value is a span of the input text. Spans start and
  end on chunk boundaries, where a chunk is a run of word characters (``\\w+``), a run of
  whitespace, or one other character; a span never starts or ends with whitespace, and is
  at least one character. Quotes, backslashes and control characters copied from the input
  are JSON-escaped correctly. ``minLength``, ``maxLength`` and ``pattern`` still apply to
  the span; with any of them a span covers at most 48 chunks (about 20 words).
  Characters the tokenizer cannot produce split the input: spans never cross them; a
  patterned span never crosses a quote, backslash or control character either;
- ``"x-grounded": true`` on a number or integer: the value is written exactly as one of
  the numbers in the input (a whole number as written there that the bounds accept: from
  ``42.50`` only ``42.50``, never ``42`` or ``50``);
- ``"x-grounded": "/json/pointer"`` on a string, number or integer: the input is JSON and
  the value is one of its values at or under that JSON Pointer (RFC 6901; ``""`` is the
  whole input), copied whole: a string value as it stands, a number as written (a JSON
  number, or a string that is just a number, ``"42.50"``). For outputs that pass on what an
  earlier step extracted (a tool call's arguments from the extractor's ``fields``): a
  value is never cut short, run on, or taken from the message around it. Values the
  limits, the pattern or the tokenizer rule out are left out;
- integers: ``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum`` (any
  integer bounds); without bounds, at most 15 digits;
- numbers: at most 15 integer digits and 6 fraction digits (no exponent); ``multipleOf``
  ``10^-k`` (k fraction digits); ``minimum: 0`` / ``exclusiveMinimum: 0`` (non-negative /
  positive); ``maximum`` / ``exclusiveMaximum`` M >= 1 bound the integer digits (output
  stays below the largest power of ten not above M: conservative, but always valid);
- annotations are ignored: ``title``, ``description``, ``default``, ``examples``,
  ``$schema``, ``$comment``, ``format`` (not enforced: pair it with a ``pattern``).

A choice set (labels) is the bare label text, no quotes.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from mesh.slm.errors import GroundingError, SchemaError

GROUNDED = "x-grounded"
"""Schema keyword marking a string whose value must be copied from the input."""

MAX_INT_DIGITS = 15
MAX_FRACTION_DIGITS = 6

_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$schema", "$comment", "format", "$id"}
)
_KEYWORDS: dict[str, frozenset[str]] = {
    "object": frozenset({"properties", "required", "additionalProperties"}),
    "array": frozenset({"items", "minItems", "maxItems"}),
    "string": frozenset({"minLength", "maxLength", "pattern", GROUNDED}),
    "integer": frozenset(
        {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", GROUNDED}
    ),
    "number": frozenset(
        {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", GROUNDED}
    ),
    "boolean": frozenset(),
    "null": frozenset(),
}
_COMBINATORS = frozenset({"anyOf", "oneOf"})

# One character of JSON string content: a plain character or an escape (no lone surrogates).
_UNIT = (
    r'(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]'
    r"|\\u(?:[0-9a-cA-Ce-fE-F][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}))"
)
_SAFE = r'[^"\\\x00-\x1f]'
# A unit that is not whitespace: grounded spans start and end with one.
_EDGE = (
    r'(?:[^"\\\x00-\x1f\s]|\\["\\/]'
    r"|\\u(?:[0-9a-cA-Ce-fE-F][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}))"
)
_CHUNK = re.compile(r"\s+|\w+|[^\s\w]", re.UNICODE)
# What a patterned string never contains (see ``_SAFE``).
_UNSAFE = re.compile(r'["\\\x00-\x1f]')


@dataclass(frozen=True)
class Choice:
    """A choice set: the output is exactly one of ``labels`` (bare text, no quotes)."""

    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.labels or any(not isinstance(x, str) or not x for x in self.labels):
            raise SchemaError("a choice set needs at least one non-empty string label")

    def with_source(self, source: str) -> Choice:
        """The same set: labels do not depend on the input."""
        return self


@dataclass(frozen=True)
class JsonOutput:
    """A JSON value valid against ``schema``; ``source`` is the text grounded strings copy from."""

    schema: Mapping[str, Any]
    source: str = ""

    def with_source(self, source: str) -> JsonOutput:
        return JsonOutput(self.schema, source)


@dataclass(frozen=True)
class GroundedText:
    """Free text on one line in which no fact can be invented.

    Every word that holds a digit or an ``@`` (order ids, amounts, dates, emails, tracking
    numbers) and, with ``names``, every capitalised word inside a sentence (names,
    products, carriers) must be one of the facts of ``source``, copied whole. The facts of
    a JSON object are its scalar values that hold a digit or ``@`` and, with ``names``, its
    string values and their capitalised words; of other text, its words that hold a digit
    or ``@`` or start with a capital. A sentence's first word and the pronoun ``I`` are
    free; so is every other word. Words and facts are separated by spaces or punctuation,
    so two facts cannot be glued into a new one. ``allow`` lists words that are always
    facts (the agent's own constants, such as a refund's "5" business days).
    """

    source: str = ""
    names: bool = True
    allow: tuple[str, ...] = ()

    def with_source(self, source: str) -> GroundedText:
        return GroundedText(source, self.names, self.allow)

    def facts(self) -> tuple[str, ...]:
        """The strings that may be copied, longest first."""
        found = dict.fromkeys(text_facts(self.source, names=self.names))
        found.update(dict.fromkeys(a for a in self.allow if a))
        return tuple(sorted(found, key=len, reverse=True))


OutputConstraint = Choice | JsonOutput | GroundedText


_FACT_MARK = re.compile(r"[0-9@]")
_SENTENCE_END = ".!?"
_MID_SEPARATORS = ' ()[]{},;:"$€£#'
"""What may stand between the words and facts of grounded text (no newline: one line)."""
_SEPARATORS = _MID_SEPARATORS + _SENTENCE_END
_SEPARATOR_RUN = re.compile("([" + re.escape(_SEPARATORS) + "]+)")
_WORD_RUN = re.compile("[^" + re.escape(_SEPARATORS) + "]+")
_FREE_CAPITALISED = ("I", "I'm", "I'll", "I've", "I'd")
"""Capitalised words allowed inside a sentence without being a fact."""


def text_facts(source: str, *, names: bool = True) -> tuple[str, ...]:
    """The facts :class:`GroundedText` may copy from ``source`` (see there)."""
    found: dict[str, None] = {}

    def add(text: str) -> None:
        text = text.strip(_SEPARATORS + "'")
        if text and "\n" not in text:
            found[text] = None

    try:
        value = json.loads(source)
    except ValueError:
        value = None
    if isinstance(value, (dict, list)):
        for item in _scalars(value):
            text = item if isinstance(item, str) else _compact(item)
            if _FACT_MARK.search(text) or (names and isinstance(item, str)):
                add(text)
            if names and isinstance(item, str):
                for word in _SEPARATOR_RUN.split(item):
                    if word[:1].isupper():
                        add(word)
    else:
        for word in source.split():
            word = word.strip(_SEPARATORS + "'")
            if _FACT_MARK.search(word) or (names and word[:1].isupper()):
                add(word)
    return tuple(sorted(found, key=len, reverse=True))


def _scalars(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _scalars(item)
    elif isinstance(value, list):
        for item in value:
            yield from _scalars(item)
    elif value is not None and not isinstance(value, bool):
        yield value


def invented_facts(constraint: GroundedText, text: str) -> list[str]:
    """The words of ``text`` that should have been copied from the source and were not.

    Reads ``text`` as the grammar does: at each word's start a fact that ends where a
    separator (or the text) begins is one chunk; anything else up to the next separator is
    a word, which may hold no digit or ``@`` and, inside a sentence, start with a capital
    only if it is ``I`` or one of its contractions.
    """
    facts = constraint.facts()
    invented: list[str] = []
    head, at = True, 0
    while at < len(text):
        separators = _SEPARATOR_RUN.match(text, at)
        if separators:
            head = head or any(ch in _SENTENCE_END for ch in separators.group())
            at = separators.end()
            continue
        fact = next(
            (
                f
                for f in facts
                if text.startswith(f, at)
                and (at + len(f) == len(text) or text[at + len(f)] in _SEPARATORS)
            ),
            None,
        )
        if fact is not None:
            at += len(fact)
        else:
            word = _WORD_RUN.match(text, at).group()  # type: ignore[union-attr]  # matches any char
            at += len(word)
            if _FACT_MARK.search(word) or (
                constraint.names
                and not head
                and word[:1].isupper()
                and word not in _FREE_CAPITALISED
            ):
                invented.append(word)
        head = False
    return invented


def _grounded_text_grammar(
    constraint: GroundedText, representable: Callable[[str], bool] | None
) -> str:
    def chars(text: str) -> str:
        return "".join("\\" + ch if ch in "[]\\^-/" else ch for ch in text)

    mid, every = chars(_MID_SEPARATORS), chars(_SEPARATORS)
    # A fact with a character the tokenizer cannot produce cannot be copied: left out.
    facts = [f for f in constraint.facts() if representable is None or all(map(representable, f))]
    fact = " | FACT" if facts else ""
    if constraint.names:
        lines = [
            "start: (SEP_MID | SEP_END)? head (SEP_MID tail | SEP_END head)* (SEP_MID | SEP_END)?",
            "head: WORD" + fact,
            "tail: LOWER | PRONOUN" + fact,
            f"LOWER: /[^\\s0-9@{every}\\p{{Lu}}][^\\s0-9@{every}]*/",
            "PRONOUN: " + " | ".join(_literal(w) for w in _FREE_CAPITALISED),
        ]
    else:
        lines = [
            "start: (SEP_MID | SEP_END)? head ((SEP_MID | SEP_END) head)* (SEP_MID | SEP_END)?",
            "head: WORD" + fact,
        ]
    lines += [
        f"WORD: /[^\\s0-9@{every}]+/",
        f"SEP_MID: /[{mid}]+/",
        f"SEP_END: /[{every}]*[{chars(_SENTENCE_END)}][{every}]*/",
    ]
    if facts:
        lines.append("FACT: " + " | ".join(_literal(f) for f in facts))
    return "\n".join(lines) + "\n"


def check_schema(schema: Mapping[str, Any]) -> None:
    """Raises :class:`SchemaError` unless ``schema`` is inside the supported subset."""
    _Compiler(source="", representable=None, dry_run=True).expr(schema, "$")


def compile_grammar(
    constraint: OutputConstraint,
    representable: Callable[[str], bool] | None = None,
    *,
    any_source: bool = False,
) -> str:
    """The Lark grammar (llguidance dialect) that accepts exactly the allowed outputs.

    ``representable(ch)`` says whether the tokenizer can produce character ``ch``; grounded
    spans never cross one it cannot. Raises :class:`GroundingError` when a required grounded
    value has no span to come from. ``any_source`` compiles grounded strings as plain
    strings: the start-up check of everything that does not depend on the input.
    """
    if isinstance(constraint, Choice):
        return "start: " + " | ".join(_literal(label) for label in constraint.labels) + "\n"
    if isinstance(constraint, GroundedText):
        return _grounded_text_grammar(constraint, representable)
    compiler = _Compiler(constraint.source, representable, dry_run=any_source)
    top = compiler.expr(constraint.schema, "$")
    if top is None:
        raise GroundingError(
            "the output needs a value copied from the input, and the input has no usable "
            "span for it (" + ", ".join(sorted(compiler.ungrounded)) + ")"
        )
    return "\n".join([f"start: {top}", *compiler.lines]) + "\n"


def grounded_values(
    schema: Mapping[str, Any], value: Any, is_valid: Callable[[Mapping[str, Any], Any], bool]
) -> Iterator[tuple[str | int | float, bool | str]]:
    """The string and number values in ``value`` that ``schema`` marks grounded, each with
    its grounding (``True``: a span of the input; a string: a JSON Pointer into it)."""
    for branch_key in _COMBINATORS:
        if branch_key in schema:
            for branch in schema[branch_key]:
                if is_valid(branch, value):
                    yield from grounded_values(branch, value, is_valid)
                    break
    grounding = schema.get(GROUNDED)
    if (
        isinstance(value, (str, int, float))
        and not isinstance(value, bool)
        and (grounding is True or isinstance(grounding, str))
    ):
        yield value, grounding
    elif isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name in value:
                yield from grounded_values(sub, value[name], is_valid)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for item in value:
            yield from grounded_values(schema["items"], item, is_valid)


def _literal(text: str) -> str:
    """A Lark string literal for ``text``."""
    return json.dumps(text, ensure_ascii=False)


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _regex(pattern: str) -> str:
    """A Lark regex literal: ``/`` is escaped unless a backslash already escapes it."""
    out, escaped = [], False
    for ch in pattern:
        if ch == "/" and not escaped:
            out.append("\\")
        out.append(ch)
        escaped = ch == "\\" and not escaped
    return "/" + "".join(out) + "/"


@dataclass
class _Compiler:
    source: str
    representable: Callable[[str], bool] | None
    dry_run: bool = False
    lines: list[str] = field(default_factory=list)
    ungrounded: set[str] = field(default_factory=set)
    _count: int = 0
    _segments: dict[bool, list[list[str]]] = field(default_factory=dict)

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def _rule(self, body: str) -> str:
        name = self._name("r")
        self.lines.append(f"{name}: {body}")
        return name

    def _terminal(self, body: str) -> str:
        name = self._name("T")
        self.lines.append(f"{name}: {body}")
        return name

    def _union(self, options: Sequence[str | None]) -> str | None:
        alive = list(dict.fromkeys(o for o in options if o is not None))
        if not alive:
            return None
        return alive[0] if len(alive) == 1 else self._rule(" | ".join(alive))

    # -- schemas ------------------------------------------------------------------------

    def expr(self, schema: Any, where: str) -> str | None:
        if schema is True or (isinstance(schema, Mapping) and not schema):
            raise SchemaError(
                f"{where}: an unconstrained value ({{}} or true) is not supported; give it a type"
            )
        if not isinstance(schema, Mapping):
            raise SchemaError(f"{where}: a schema must be an object, got {schema!r}")
        for key in schema:
            if key in _ANNOTATIONS:
                continue
            if key in {"type", "enum", "const"} | _COMBINATORS:
                continue
            if not any(key in allowed for allowed in _KEYWORDS.values()):
                raise SchemaError(
                    f"{where}: keyword {key!r} is not supported by constrained decoding"
                )
        if "const" in schema:
            return _literal(_compact(schema["const"]))
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise SchemaError(f"{where}: enum must be a non-empty list")
            return self._union([_literal(_compact(v)) for v in values])
        branches = [k for k in _COMBINATORS if k in schema]
        if branches:
            if len(branches) > 1 or "type" in schema:
                raise SchemaError(f"{where}: combine anyOf/oneOf with nothing but annotations")
            key = branches[0]
            options = schema[key]
            if not isinstance(options, list) or not options:
                raise SchemaError(f"{where}: {key} must be a non-empty list of schemas")
            return self._union([self.expr(s, f"{where}/{key}/{i}") for i, s in enumerate(options)])
        types = schema.get("type")
        if types is None:
            raise SchemaError(f"{where}: every schema needs a type, const, enum, anyOf or oneOf")
        type_list = [types] if isinstance(types, str) else types
        if not isinstance(type_list, list) or not type_list:
            raise SchemaError(f"{where}: type must be a name or a list of names")
        for name in type_list:
            if name not in _KEYWORDS:
                raise SchemaError(f"{where}: type {name!r} is not supported")
        for key in schema:
            if key in _ANNOTATIONS or key == "type":
                continue
            if not any(key in _KEYWORDS[t] for t in type_list):
                raise SchemaError(f"{where}: keyword {key!r} does not apply to type {types!r}")
        return self._union([self._typed(name, schema, where) for name in type_list])

    def _typed(self, kind: str, schema: Mapping[str, Any], where: str) -> str | None:
        if kind == "null":
            return '"null"'
        if kind == "boolean":
            return self._union(['"true"', '"false"'])
        if kind in ("integer", "number"):
            regex = (_integer_regex if kind == "integer" else _number_regex)(schema, where)
            grounded = _grounding(schema, where)
            if isinstance(grounded, str) and not self.dry_run:
                return self._whole_number(grounded, regex, where)
            if grounded and not self.dry_run:
                return self._grounded_number(regex, where)
            return self._terminal(_regex(regex))
        if kind == "string":
            return self._string(schema, where)
        if kind == "array":
            return self._array(schema, where)
        return self._object(schema, where)

    def _object(self, schema: Mapping[str, Any], where: str) -> str | None:
        properties = schema.get("properties", {})
        if not isinstance(properties, Mapping):
            raise SchemaError(f"{where}: properties must be an object")
        required = schema.get("required", [])
        if not isinstance(required, list) or any(name not in properties for name in required):
            raise SchemaError(f"{where}: required must list declared properties only")
        additional = schema.get("additionalProperties", False)
        if not isinstance(additional, (bool, Mapping)):
            raise SchemaError(f"{where}: additionalProperties must be false, true or a schema")
        parts: list[str] = []
        text = "{"
        for index, (name, sub) in enumerate(properties.items()):
            value = self.expr(sub, f"{where}/properties/{name}")
            if value is None:
                return None
            text += ("," if index else "") + _compact(name) + ":"
            parts.append(_literal(text))
            parts.append(value)
            text = ""
        parts.append(_literal(text + "}"))
        return self._rule(" ".join(parts))

    def _array(self, schema: Mapping[str, Any], where: str) -> str | None:
        items = schema.get("items")
        if not isinstance(items, Mapping):
            raise SchemaError(f"{where}: an array needs one items schema")
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        if (
            not isinstance(low, int)
            or low < 0
            or (high is not None and (not isinstance(high, int) or high < low))
        ):
            raise SchemaError(f"{where}: minItems/maxItems must be integers, min <= max")
        item = self.expr(items, f"{where}/items")
        if item is None or high == 0:
            return '"[]"' if low == 0 else None
        if high is not None:
            more = f' ("," {item}){{{max(low - 1, 0)},{high - 1}}}' if high > 1 else ""
        else:
            more = f' ("," {item})' + (f"{{{low - 1},}}" if low > 1 else "*")
        full = self._rule(f'"[" {item}{more} "]"')
        return full if low > 0 else self._union(['"[]"', full])

    def _string(self, schema: Mapping[str, Any], where: str) -> str | None:
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        if (
            not isinstance(low, int)
            or low < 0
            or (high is not None and (not isinstance(high, int) or high < low))
        ):
            raise SchemaError(f"{where}: minLength/maxLength must be integers, min <= max")
        grounded = _grounding(schema, where)
        pattern = schema.get("pattern")
        pattern_regex = None if pattern is None else _search_pattern(pattern, where)
        if isinstance(grounded, str) and not self.dry_run:
            return self._whole_string(grounded, low, high, pattern, where)
        if grounded and not self.dry_run:
            return self._grounded(max(low, 1), high, pattern, pattern_regex, where)
        length = f"{{{low},{'' if high is None else high}}}"
        if pattern_regex is None:
            return self._terminal(_regex(f'"{_UNIT}{length}"'))
        body = self._terminal(
            " & ".join([_regex(f"{_UNIT}{length}"), _regex(f"{_SAFE}*"), _regex(pattern_regex)])
        )
        return self._terminal(f'"\\"" {body} "\\""')

    def _grounded_number(self, regex: str, where: str) -> str | None:
        """One of the numbers written in the source, as written, that the bounds accept.

        The model copies the customer's digits (``42.50`` stays ``42.50``) instead of
        writing a number of its own; an input without one drops the branch.
        """
        compiled = re.compile(regex)
        found = [text for text in written_numbers(self.source) if compiled.fullmatch(text)]
        if not found:
            self.ungrounded.add(where)
            return None
        return self._union([_literal(text) for text in found])

    def _whole_number(self, pointer: str, regex: str, where: str) -> str | None:
        """One of the numbers at or under ``pointer`` of the JSON input, as written there."""
        compiled = re.compile(regex)
        found = [text for text in value_numbers(self.source, pointer) if compiled.fullmatch(text)]
        if not found:
            self.ungrounded.add(where)
            return None
        return self._union([_literal(text) for text in found])

    def _whole_string(
        self, pointer: str, low: int, high: int | None, pattern: str | None, where: str
    ) -> str | None:
        """One of the strings at or under ``pointer`` of the JSON input, whole."""
        compiled = None if pattern is None else re.compile(pattern)
        found = [
            text
            for text in value_strings(self.source, pointer)
            if low <= len(text)
            and (high is None or len(text) <= high)
            and (compiled is None or compiled.search(text))
            and (self.representable is None or all(map(self.representable, text)))
        ]
        if not found:
            self.ungrounded.add(where)
            return None
        return self._union([_literal(_compact(text)) for text in found])

    def _grounded(
        self, low: int, high: int | None, pattern: str | None, pattern_regex: str | None, where: str
    ) -> str | None:
        """A span of the source: any chunk-aligned one, or the listed ones that fit the limits.

        With length limits or a pattern, the fitting spans of at most ``MAX_LISTED_CHUNKS``
        chunks are listed (up to ``MAX_LISTED_SPANS`` of them) so that an input without one is
        detected here, before decoding could reach a dead end; Python's ``re`` decides,
        exactly as validation will. A patterned span, like any patterned string, never holds
        quotes, backslashes or control characters: the source is split at them.

        Above ``MAX_LISTED_SPANS`` the span automaton is intersected only with the limits
        the source does not already imply. Why: the automaton of all spans is small (about
        two states per source character) because it forgets where a span started, but a
        counted ``{low,high}`` or a second whitespace-tracking regex makes the lexer track
        length and position together, about characters x max length states. On a long input
        (the tool-caller's JSON input with a message, an email and an address) that went past
        llguidance's lexer limit ("too many expressions constructed"): the matcher stopped
        and decoding hit a dead end in the middle of the span.
        """
        patterned = pattern is not None
        if patterned not in self._segments:
            self._segments[patterned] = _segments(
                self.source, self.representable, json_safe=patterned
            )
        segments = self._segments[patterned]
        if low > 1 or high is not None or pattern is not None:
            listed = _fitting_spans(
                segments, low, high, None if pattern is None else re.compile(pattern)
            )
            if listed is not None:
                if not listed:
                    self.ungrounded.add(where)
                    return None
                return self._union([_literal(_compact(span)) for span in listed])
        if not segments:
            self.ungrounded.add(where)
            return None
        options = [
            self._terminal(
                "%regex "
                + json.dumps(
                    {"substring_chunks": [_compact(c)[1:-1] for c in chunks]}, ensure_ascii=False
                )
            )
            for chunks in segments
        ]
        spans = options[0] if len(options) == 1 else self._terminal("(" + " | ".join(options) + ")")
        if high is not None and high >= _longest_span(segments):
            high = None
        bodies = [spans, _regex(f"{_EDGE}(?:{_UNIT}*{_EDGE})?")]
        if low > 1 or high is not None:
            bodies.append(_regex(f"{_UNIT}{{{low},{'' if high is None else high}}}"))
        if (
            pattern is not None
            and pattern_regex is not None
            and not _every_span_matches(pattern, segments)
        ):
            bodies.append(_regex(pattern_regex))
        body = self._terminal(" & ".join(bodies))
        return self._terminal(f'"\\"" {body} "\\""')


def _grounding(schema: Mapping[str, Any], where: str) -> bool | str:
    """A schema's ``x-grounded``: false, true (a span of the input) or a JSON Pointer."""
    grounded = schema.get(GROUNDED, False)
    if isinstance(grounded, str):
        if grounded and not grounded.startswith("/"):
            raise SchemaError(
                f'{where}: {GROUNDED} pointer {grounded!r} must be "" or start with /'
            )
        return grounded
    if not isinstance(grounded, bool):
        raise SchemaError(f"{where}: {GROUNDED} must be true, false or a JSON Pointer")
    return grounded


@functools.lru_cache(maxsize=32)
def pointer_values(source: str, pointer: str) -> tuple[Any, ...]:
    """The scalar values (strings and numbers) at or under ``pointer`` in the JSON ``source``.

    Empty when the source is not JSON or the pointer leads nowhere: nothing to copy. Cached:
    one request's grammar and its validation ask for the same input once per grounded field.
    """
    try:
        node: Any = json.loads(source)
    except ValueError:
        return ()
    for token in pointer.split("/")[1:] if pointer else ():
        key = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return ()
    return tuple(_scalars(node))


def value_strings(source: str, pointer: str) -> list[str]:
    """The distinct strings at or under ``pointer`` (see :func:`pointer_values`)."""
    return list(dict.fromkeys(v for v in pointer_values(source, pointer) if isinstance(v, str)))


_NUMBER_TEXT = re.compile(r"-?\d+(?:\.\d+)?")


def value_numbers(source: str, pointer: str) -> list[str]:
    """The distinct numbers at or under ``pointer``, as written: JSON numbers, and strings
    that are just a number (the extractor's ``"amount": "42.50"``)."""
    found: dict[str, None] = {}
    for value in pointer_values(source, pointer):
        if isinstance(value, str):
            if _NUMBER_TEXT.fullmatch(value):
                found[value] = None
        elif isinstance(value, (int, float)) and math.isfinite(value):
            found[json.dumps(value)] = None
    return list(found)


_WRITTEN_NUMBER = re.compile(r"(?<![\w.\-/])(?<!\d,)-?\d+(?:\.\d+)?(?![\w]|[.\-/,]\d)")


def written_numbers(source: str) -> list[str]:
    """The numbers ``source`` writes, as written, in order, each once.

    A number is a run of digits with an optional fraction (and sign) that stands alone:
    digits inside an identifier or a date are not a quantity, so ``ORD-104233``,
    ``TK12345``, ``10.3.2025``, ``2025-02-15`` and ``05/03/2023`` write no number (a
    refund's amount can never be copied out of an order id), while ``42.50 EUR``,
    ``$19.99``, ``(3 days)`` and ``18 September`` write 42.50, 19.99, 3 and 18.
    """
    return list(dict.fromkeys(_WRITTEN_NUMBER.findall(source)))


MAX_LISTED_SPANS = 64
"""Above this many fitting spans, grounded strings use the span automaton instead of a list.

Why 64 and not more: a list is a literal per span in the grammar, and llguidance builds
its lexer from all of them for every request. At 512 the extractor's grammar (eight
grounded fields of a 280-character message) was ~50 kB: 16 ms to compile, 39 ms to build
the matcher and 32 ms of masks per request, the largest cost of a batched request. At 64,
4 ms, 6 ms and 17 ms; the automaton route never dead-ended in random-token walks over
the extractor's and tool-caller's test inputs."""
MAX_LISTED_CHUNKS = 48
"""A listed span (length limits or pattern) covers at most this many chunks (~20 words)."""


def _fitting_spans(
    segments: list[list[str]], low: int, high: int | None, pattern: re.Pattern[str] | None
) -> list[str] | None:
    """The distinct chunk-aligned spans within the limits (None: too many to list)."""
    found: dict[str, None] = {}
    for chunks in segments:
        for start, first in enumerate(chunks):
            if first.isspace():
                continue
            text = ""
            for chunk in chunks[start : start + MAX_LISTED_CHUNKS]:
                text += chunk
                if high is not None and len(text) > high:
                    break
                if chunk.isspace() or len(text) < low:
                    continue
                if pattern is None or pattern.search(text):
                    found[text] = None
                    if len(found) > MAX_LISTED_SPANS:
                        return None
    return list(found)


def _segments(
    source: str, representable: Callable[[str], bool] | None, *, json_safe: bool = False
) -> list[list[str]]:
    """The source split at characters spans never cross, each piece as chunks.

    Spans never cross a character the tokenizer cannot produce; with ``json_safe`` (a
    patterned string) nor a quote, a backslash or a control character.
    """
    pieces: list[str] = []
    current: list[str] = []
    for ch in source:
        if (representable is not None and not representable(ch)) or (
            json_safe and _UNSAFE.match(ch)
        ):
            pieces.append("".join(current))
            current = []
        else:
            current.append(ch)
    pieces.append("".join(current))
    segments = []
    for piece in pieces:
        chunks = _CHUNK.findall(piece)
        if any(not c.isspace() for c in chunks):
            segments.append(chunks)
    return segments


def _longest_span(segments: list[list[str]]) -> int:
    """The length of the longest span any segment holds (edges are never whitespace)."""
    return max((len("".join(chunks).strip()) for chunks in segments), default=0)


_CONTEXT = re.compile(r"[$^]|\\[bBAZz]|\(\?")


def _every_span_matches(pattern: str, segments: list[list[str]]) -> bool:
    """True when ``pattern`` (search semantics) matches every span of these segments.

    A span contains at least one non-whitespace character of the source. A pattern that
    looks at no context (no anchors, word boundaries or groups with flags) and matches
    each such character alone therefore matches every span: e.g. ``\\S`` or ``.``.
    """
    if _CONTEXT.search(pattern):
        return False
    compiled = re.compile(pattern)
    chars = {ch for chunks in segments for chunk in chunks for ch in chunk if not ch.isspace()}
    return all(compiled.search(ch) for ch in chars)


def _search_pattern(pattern: Any, where: str) -> str:
    """A JSON Schema ``pattern`` (search semantics) as a whole-match regex."""
    if not isinstance(pattern, str):
        raise SchemaError(f"{where}: pattern must be a string")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise SchemaError(f"{where}: pattern {pattern!r} is not a regex: {exc}") from exc
    body = pattern
    anchored_start = body.startswith("^")
    anchored_end = body.endswith("$") and not body.endswith("\\$")
    if anchored_start:
        body = body[1:]
    if anchored_end:
        body = body[:-1]
    if (anchored_start or anchored_end) and _has_top_level_bar(body):
        raise SchemaError(
            f"{where}: pattern {pattern!r}: wrap alternatives in a group when anchoring"
        )
    return (
        ("" if anchored_start else f"{_SAFE}*")
        + f"(?:{body})"
        + ("" if anchored_end else f"{_SAFE}*")
    )


def _has_top_level_bar(pattern: str) -> bool:
    depth, escaped, in_class = 0, False, False
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            return True
    return False


def _number_bound(schema: Mapping[str, Any], key: str, where: str) -> float | None:
    value = schema.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SchemaError(f"{where}: {key} must be a number")
    return value


def _integer_regex(schema: Mapping[str, Any], where: str) -> str:
    multiple = schema.get("multipleOf")
    if multiple is not None and multiple != 1:
        raise SchemaError(f"{where}: multipleOf is only supported as 1 for integers")
    limit = 10**MAX_INT_DIGITS - 1
    low, high = -limit, limit
    for key, pick in (("minimum", math.ceil), ("exclusiveMinimum", lambda v: math.floor(v) + 1)):
        bound = _number_bound(schema, key, where)
        if bound is not None:
            low = max(low, pick(bound))
    for key, pick in (("maximum", math.floor), ("exclusiveMaximum", lambda v: math.ceil(v) - 1)):
        bound = _number_bound(schema, key, where)
        if bound is not None:
            high = min(high, pick(bound))
    if low > high:
        raise SchemaError(f"{where}: no integer satisfies the bounds")
    if (low, high) == (-limit, limit):
        return f"-?(?:0|[1-9][0-9]{{0,{MAX_INT_DIGITS - 1}}})"
    return "(?:" + "|".join(_int_range(low, high)) + ")"


def _int_range(low: int, high: int) -> list[str]:
    """Regex alternatives matching exactly the integers ``low..high`` in canonical form."""
    options: list[str] = []
    if low < 0:
        options += (
            ["-" + alt for alt in _natural_range(max(1, -high), -low)]
            if high < 0
            else ["-" + alt for alt in _natural_range(1, -low)]
        )
    if high >= 0:
        options += _natural_range(max(0, low), high)
    return options


def _natural_range(low: int, high: int) -> list[str]:
    options: list[str] = []
    while low <= high:
        top = min(high, 10 ** len(str(low)) - 1)
        options += _same_width(str(low), str(top))
        low = top + 1
    return options


def _same_width(low: str, high: str) -> list[str]:
    """Alternatives for the digit strings between ``low`` and ``high`` (same width)."""
    if low == high:
        return [low]
    width = len(low)
    if low == "0" * width and high == "9" * width:
        return [f"[0-9]{{{width}}}"]
    if width == 1:
        return [f"[{low}-{high}]"]
    if low[0] == high[0]:
        return [low[0] + rest for rest in _same_width(low[1:], high[1:])]
    options = [low[0] + rest for rest in _same_width(low[1:], "9" * (width - 1))]
    first, last = int(low[0]) + 1, int(high[0]) - 1
    if first <= last:
        options.append(f"[{first}-{last}][0-9]{{{width - 1}}}")
    options += [high[0] + rest for rest in _same_width("0" * (width - 1), high[1:])]
    return options


def _number_regex(schema: Mapping[str, Any], where: str) -> str:
    fraction = MAX_FRACTION_DIGITS
    multiple = schema.get("multipleOf")
    if multiple is not None:
        exponent = Decimal(str(multiple)).normalize().as_tuple()
        if (
            isinstance(multiple, bool)
            or exponent.digits != (1,)
            or not isinstance(exponent.exponent, int)
            or exponent.exponent > 0
        ):
            raise SchemaError(f"{where}: multipleOf is only supported as a power of ten <= 1")
        fraction = -exponent.exponent
    digits = MAX_INT_DIGITS
    for key in ("maximum", "exclusiveMaximum"):
        bound = _number_bound(schema, key, where)
        if bound is not None:
            if bound < 1:
                raise SchemaError(f"{where}: {key} below 1 is not supported for numbers")
            digits = min(digits, max(len(str(int(bound))) - 1, 1))
            if len(str(int(bound))) == 1:
                # bound in [1, 10): only "0.xxx" is certainly below it.
                digits = 0
    minimum = _number_bound(schema, "minimum", where)
    exclusive = _number_bound(schema, "exclusiveMinimum", where)
    if (minimum is not None and minimum != 0) or (exclusive is not None and exclusive != 0):
        raise SchemaError(f"{where}: numbers support only minimum 0 or exclusiveMinimum 0")
    frac = f"(?:\\.[0-9]{{1,{fraction}}})?" if fraction else ""
    whole = "0" if digits == 0 else f"(?:0|[1-9][0-9]{{0,{digits - 1}}})"
    if exclusive is not None:
        positive_frac = f"0\\.[0-9]{{0,{fraction - 1}}}[1-9]" if fraction else None
        options = [f"[1-9][0-9]{{0,{digits - 1}}}{frac}"] if digits else []
        if positive_frac:
            options.append(positive_frac)
        if not options:
            raise SchemaError(f"{where}: no number satisfies the bounds")
        return "(?:" + "|".join(options) + ")"
    sign = "" if minimum is not None else "-?"
    return f"{sign}{whole}{frac}"
