"""Loading a causal LM and its tokenizer, from a local folder or a model id.

Model ids go through transformers' own resolution (a local cache or the hub where it is
reachable); folders are what the project trains and what tests build. Weights load in
float32 on CPU unless told otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from mesh.slm.errors import SLMError

DEFAULT_CONTEXT = 2048
"""Context assumed when neither the config nor the tokenizer states one."""


class ModelLoadError(SLMError):
    """The model or tokenizer could not be loaded from the given source."""


@dataclass
class LoadedModel:
    """A model ready for the batch engine, with the facts usage accounting reports."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    parameters: int
    context_length: int
    vocab_size: int
    eos_ids: frozenset[int]
    pad_id: int


def resolve_source(source: str, base_dir: Path | None = None) -> str:
    """A relative path that exists under ``base_dir`` (or starts with ``.``) is a folder there;
    anything else that is not an existing path is a model id."""
    path = Path(source).expanduser()
    if path.is_absolute():
        return str(path)
    if base_dir is not None:
        candidate = (base_dir / path).resolve()
        if candidate.exists() or source.startswith("."):
            return str(candidate)
    if path.exists() or source.startswith("."):
        return str(path.resolve())
    return source


def load_model(
    source: str,
    *,
    base_dir: Path | None = None,
    name: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
) -> LoadedModel:
    """Loads ``source`` (folder or model id) for inference; raises :class:`ModelLoadError`."""
    resolved = resolve_source(source, base_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        model = AutoModelForCausalLM.from_pretrained(resolved, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the model {source!r} (resolved to {resolved!r}): "
                             f"{exc}") from exc
    model.to(device)
    model.eval()
    config = model.config
    context = getattr(config, "max_position_embeddings", None)
    if not context:
        limit = getattr(tokenizer, "model_max_length", None)
        context = limit if isinstance(limit, int) and limit < 1_000_000 else DEFAULT_CONTEXT
    embeddings = model.get_output_embeddings()
    vocab_size = int(embeddings.weight.shape[0]) if embeddings is not None else config.vocab_size
    eos: set[int] = set()
    generation_eos = getattr(model.generation_config, "eos_token_id", None)
    for candidate in (tokenizer.eos_token_id, generation_eos):
        if isinstance(candidate, int):
            eos.add(candidate)
        elif isinstance(candidate, (list, tuple)):
            eos.update(int(c) for c in candidate)
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    label = name or (Path(resolved).name if Path(resolved).exists() else source)
    return LoadedModel(
        model=model, tokenizer=tokenizer, name=label,
        parameters=sum(p.numel() for p in model.parameters()),
        context_length=int(context), vocab_size=vocab_size, eos_ids=frozenset(eos), pad_id=pad,
    )
