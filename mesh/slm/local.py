"""The one place a local backend is chosen: a causal LM or an encoder, by the spec's kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mesh.slm.generation import SLMBackend


def local_backend(
    kind: str,
    model: str,
    *,
    base_dir: Path | None = None,
    max_batch_size: int = 32,
    max_wait_ms: float = 5.0,
    threads: int | None = None,
    **causal: Any,
) -> SLMBackend:
    """``kind`` ``encoder``: :class:`~mesh.slm.encoder_backend.EncoderBackend`; anything else a
    :class:`~mesh.slm.transformers_backend.TransformersBackend` (``causal`` holds its own
    options: ``use_chat_template``, ``adapter``). Raises ModelLoadError."""
    if kind == "encoder":
        from mesh.slm.encoder_backend import EncoderBackend

        return EncoderBackend(
            model,
            base_dir=base_dir,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            threads=threads,
        )
    from mesh.slm.transformers_backend import TransformersBackend

    return TransformersBackend(
        model,
        base_dir=base_dir,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        threads=threads,
        **causal,
    )
