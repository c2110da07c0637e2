"""The mesh's one JSON-schema validator: Draft 2020-12 with decimal ``multipleOf``.

Tool arguments, SLM outputs, training contracts and plan steps' ``expect`` schemas are all
checked by it, so an amount like 19.99 is a multiple of 0.01 everywhere (binary floats say
it is not).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators


def _decimal_multiple_of(
    validator: Any, divisor: float, instance: object, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    """``multipleOf`` in decimal arithmetic."""
    if not validator.is_type(instance, "number"):
        return
    if isinstance(instance, float) and not math.isfinite(instance):
        yield ValidationError(f"{instance!r} is not a finite number")
    elif Decimal(str(instance)) % Decimal(str(divisor)) != 0:
        yield ValidationError(f"{instance!r} is not a multiple of {divisor}")


SchemaValidator = validators.extend(Draft202012Validator, {"multipleOf": _decimal_multiple_of})
"""Draft 2020-12 with decimal ``multipleOf``."""
