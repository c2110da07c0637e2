"""Errors of the SLM runtime, split by who can fix them.

The executor maps them onto A2A task states: problems with the input (the caller's to fix)
reject the task; problems with the model or its server fail it. The OpenAI-compatible API
maps them onto HTTP 400 (caller) or 500/502 (server).
"""

from __future__ import annotations

from typing import Any

from mesh.errors import MeshError


class SLMError(MeshError):
    """Base of every error the SLM runtime raises on purpose."""


class SchemaError(SLMError, ValueError):
    """An output schema uses something constrained decoding cannot enforce.

    Raised when an agent starts (or when an API request brings the schema), never half-way
    through a generation: refusing the schema is the only way to promise valid output.
    """


class InputError(SLMError):
    """The request cannot be served as sent (empty, too long, no span to copy from)."""


class InputTooLongError(InputError):
    """The prompt plus the output budget does not fit the model's context."""


class GroundingError(InputError):
    """A grounded field must be copied from the input, and the input has no usable span."""


class GenerationFailedError(SLMError):
    """The model or its server broke while generating; the same input may succeed later."""


class InvalidOutputError(SLMError):
    """The output does not parse or validate against the declared output (never passed on).

    ``generation`` keeps the raw generation for servers that must still report it (the
    OpenAI-compatible API answers a cut-off output with ``finish_reason: length``).
    """

    def __init__(self, message: str, generation: Any = None) -> None:
        super().__init__(message)
        self.generation = generation


class IncompleteOutputError(InvalidOutputError):
    """Constrained output was cut off (token budget or deadline) before it was complete."""


class GenerationCancelledError(SLMError):
    """The generation was cancelled by its caller before it finished."""
