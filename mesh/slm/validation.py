"""The local check every constrained output passes before anyone sees it.

Constrained decoding makes local output valid by construction; this check is what keeps a
remote model (OpenAI-compatible backend) honest, and catches any gap in the grammar
compiler. Invalid output is an error, never passed on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from mesh.schema import SchemaValidator
from mesh.slm.errors import InvalidOutputError
from mesh.slm.grammar import (
    Choice,
    GroundedText,
    JsonOutput,
    OutputConstraint,
    grounded_values,
    invented_facts,
    value_numbers,
    value_strings,
    written_numbers,
)

OutputValidator = SchemaValidator
"""The validator outputs are checked with (the mesh's one, :mod:`mesh.schema`)."""


def parse_output(constraint: OutputConstraint | None, text: str) -> Any:
    """The value the output stands for (label, JSON value or the text itself), or an error.

    A label may also arrive JSON-quoted (what an OpenAI-compatible server returns for an
    enum schema).
    """
    if constraint is None:
        return text
    if isinstance(constraint, Choice):
        label = text.strip()
        if label not in constraint.labels and label.startswith('"'):
            try:
                label = json.loads(label)
            except json.JSONDecodeError:
                pass
        if label not in constraint.labels:
            raise InvalidOutputError(
                f"the output {text[:80]!r} is not one of the labels {list(constraint.labels)}"
            )
        return label
    if isinstance(constraint, GroundedText):
        return _check_text(constraint, text)
    return _parse_json(constraint, text)


def _check_text(constraint: GroundedText, text: str) -> str:
    if not text.strip() or "\n" in text:
        raise InvalidOutputError("the output must be one non-empty line of text")
    invented = invented_facts(constraint, text)
    if invented:
        raise InvalidOutputError(
            f"the output states {invented[0][:80]!r}, which is not one of the facts in the input"
        )
    return text


def _parse_json(constraint: JsonOutput, text: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidOutputError(
            f"the output is not JSON ({exc.msg} at {exc.pos}): {text[:120]!r}"
        ) from exc
    validator = OutputValidator(constraint.schema)
    error = next(iter(validator.iter_errors(value)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise InvalidOutputError(f"the output breaks the schema at {where}: {error.message}")

    def is_valid(schema: Mapping[str, Any], instance: Any) -> bool:
        return OutputValidator(schema).is_valid(instance)

    for span, grounding in grounded_values(constraint.schema, value, is_valid):
        if isinstance(grounding, str):
            _check_whole(span, grounding, constraint.source)
        elif isinstance(span, str):
            if span not in constraint.source:
                raise InvalidOutputError(
                    f"the grounded value {span[:80]!r} is not part of the input"
                )
        elif not _number_in(span, constraint.source):
            raise InvalidOutputError(f"the grounded number {span!r} is not written in the input")
    return value


def _check_whole(value: str | int | float, pointer: str, source: str) -> None:
    """``value`` must be one of the input's values under ``pointer``, whole."""
    if isinstance(value, str):
        if value not in value_strings(source, pointer):
            raise InvalidOutputError(
                f"the grounded value {value[:80]!r} is not one of the "
                f"input's values at {pointer or '/'}"
            )
        return
    wanted = Decimal(str(value))
    if not any(Decimal(text) == wanted for text in value_numbers(source, pointer)):
        raise InvalidOutputError(
            f"the grounded number {value!r} is not one of the input's values at {pointer or '/'}"
        )


def _number_in(number: int | float, source: str) -> bool:
    """Whether ``source`` writes ``number`` (``42.5`` is written as ``42.50`` too)."""
    wanted = Decimal(str(number))
    return any(Decimal(text) == wanted for text in written_numbers(source))
