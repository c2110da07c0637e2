"""Loading a causal LM and its tokenizer, from a local folder or a model id.

Model ids go through transformers' own resolution (a local cache or the hub where it is
reachable); folders are what the project trains and what tests build. Weights load in
float32 on CPU unless told otherwise.

A LoRA adapter (the conversion loop's students, :mod:`mesh.convert.lora`) loads on top of
its base and is merged into the base weights: the served model is then a plain model of
the base's size and speed (no extra low-rank matmuls per layer on every token), and the
batch engine sees the same forward signature it sees for any model. The price is one
adapter per loaded model; see :func:`load_model`.
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
    adapter: str | None = None,
) -> LoadedModel:
    """Loads ``source`` (folder or model id) for inference; raises :class:`ModelLoadError`.

    ``adapter`` is a peft (LoRA) adapter folder, relative to ``base_dir`` like ``source``:
    it is merged into the base, and the model is named after the adapter's folder, so usage
    and traces name the student while ``parameters`` stays the base's count (merging adds
    none). One process serves one adapter: the engine batches every request into one forward
    pass, and mixing adapters in a batch would need peft's unmerged per-row routing, slower
    on every token, while another base copy of a small model costs little memory.
    """
    resolved = resolve_source(source, base_dir)
    if Path(resolved).is_absolute() and not Path(resolved).exists():
        # A folder that is not there (a model id never resolves to an absolute path): say so,
        # rather than let transformers take the path for a malformed hub id.
        raise ModelLoadError(f"cannot load the model {source!r}: no folder at {resolved}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(resolved, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load the model {source!r} (resolved to {resolved!r}): {exc}"
        ) from exc
    if adapter is not None:
        adapter_dir = Path(resolve_source(adapter, base_dir))
        model = merge_adapter(model, adapter_dir)
        name = name or adapter_dir.name
    # transformers' to() is typed through a decorator that loses its parameters.
    model.to(device)  # type: ignore[arg-type]  # see above
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
        model=model,
        tokenizer=tokenizer,
        name=label,
        parameters=sum(p.numel() for p in model.parameters()),
        context_length=int(context),
        vocab_size=vocab_size,
        eos_ids=frozenset(eos),
        pad_id=pad,
    )


def merge_adapter(model: PreTrainedModel, adapter_dir: Path) -> PreTrainedModel:
    """The base with the peft adapter in ``adapter_dir`` merged into its weights."""
    from peft import PeftModel

    if not (adapter_dir / "adapter_config.json").is_file():
        raise ModelLoadError(
            f"no adapter at {adapter_dir} (expected adapter_config.json, as "
            "`slmesh convert train` writes)"
        )
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load the adapter {adapter_dir} on this base: {exc}") from exc
    return peft_model.merge_and_unload()
