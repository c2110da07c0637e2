"""The SLM runtime: small language models as batched, constrained, streaming mesh agents.

- :class:`TransformersBackend` serves a local causal LM with continuous batching;
  :class:`OpenAIBackend` uses any OpenAI-compatible server; both take a
  :class:`GenerationRequest` and stream a :class:`Generation` with :class:`Usage`.
- Output declarations (:class:`Choice`, :class:`JsonOutput`, :class:`GroundedText`, schema subset in
  :mod:`mesh.slm.grammar`) constrain decoding so the output always parses and validates.
- :func:`create_openai_app` serves a backend on the OpenAI API; :class:`SLMExecutor` serves
  it as an A2A agent.

Importing this package loads no model; the heavy modules (torch, transformers) are imported
on first use of the names that need them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from mesh.slm.errors import (
    GenerationCancelledError,
    GenerationFailedError,
    GroundingError,
    IncompleteOutputError,
    InputError,
    InputTooLongError,
    InvalidOutputError,
    SchemaError,
    SLMError,
)
from mesh.slm.generation import (
    Generation,
    GenerationRequest,
    GenerationStream,
    SLMBackend,
    TokenLogprob,
    Usage,
)
from mesh.slm.grammar import (
    GROUNDED,
    Choice,
    GroundedText,
    JsonOutput,
    OutputConstraint,
    check_schema,
)
from mesh.slm.validation import parse_output

if TYPE_CHECKING:
    from mesh.slm.executor import SLMExecutor
    from mesh.slm.loading import LoadedModel, load_model
    from mesh.slm.openai_api import create_openai_app
    from mesh.slm.openai_backend import OpenAIBackend
    from mesh.slm.transformers_backend import TransformersBackend

_LAZY = {
    "SLMExecutor": "mesh.slm.executor",
    "LoadedModel": "mesh.slm.loading",
    "load_model": "mesh.slm.loading",
    "create_openai_app": "mesh.slm.openai_api",
    "OpenAIBackend": "mesh.slm.openai_backend",
    "TransformersBackend": "mesh.slm.transformers_backend",
}

__all__ = [
    "GROUNDED",
    "Choice",
    "Generation",
    "GenerationCancelledError",
    "GenerationFailedError",
    "GenerationRequest",
    "GenerationStream",
    "GroundedText",
    "GroundingError",
    "IncompleteOutputError",
    "InputError",
    "InputTooLongError",
    "InvalidOutputError",
    "JsonOutput",
    "LoadedModel",
    "OpenAIBackend",
    "OutputConstraint",
    "SLMBackend",
    "SLMError",
    "SLMExecutor",
    "SchemaError",
    "TokenLogprob",
    "TransformersBackend",
    "Usage",
    "check_schema",
    "create_openai_app",
    "load_model",
    "parse_output",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mesh.slm' has no attribute {name!r}")
