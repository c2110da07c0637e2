"""Fine-tunes an encoder SLM (:mod:`mesh.slm.encoder`) for a label or extraction agent.

The pretrained base (all-MiniLM-L6-v2) stays frozen; a LoRA adapter on every linear layer and
the head are trained on the task's synthetic training stream, reading exactly the prompt the
agent serves. Only the adapter and the head are saved (a few MB): the base comes from its
package. Seeded: the same plan reproduces the same weights on the same machine.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from random import Random
from typing import Any

import torch
from torch import nn

from mesh.slm.encoder import MINILM, EncoderSpec, load_base, new_head, save_head
from mesh.train.data.dataset import TRAIN, Example, Task
from mesh.train.micro import TRAINING_RECORD

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderPlan:
    """How an encoder agent is fine-tuned: examples drawn, epochs over them, LoRA size."""

    base: str = MINILM
    examples: int = 4000
    epochs: int = 3
    batch_size: int = 16
    lr: float = 1e-3
    head_lr: float = 1e-3
    lora_rank: int = 16
    lora_dropout: float = 0.0
    seed: int = 0
    threads: int = 2


def span_targets(example: Example, fields: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """Character spans, in the prompt, of each non-null expected field (inside the input)."""
    at = example.prompt.find(example.input)
    if at < 0:
        raise ValueError("the prompt does not contain the input")
    spans = {}
    for name in fields:
        value = example.expected.get(name)
        if value is None:
            continue
        inner = example.input.find(str(value))
        if inner < 0:
            raise ValueError(f"field {name}: {value!r} is not a span of the input")
        spans[name] = (at + inner, at + inner + len(str(value)))
    return spans


def _batch_targets(batch: Any, examples: list[Example], spec: EncoderSpec) -> Any:
    if spec.task == "labels":
        return torch.tensor([spec.labels.index(e.expected) for e in examples])
    starts = torch.zeros(len(examples), len(spec.fields), dtype=torch.long)
    ends = torch.zeros_like(starts)
    for row, example in enumerate(examples):
        offsets = batch["offset_mapping"][row].tolist()
        words = batch.word_ids(row)
        spans = span_targets(example, spec.fields)
        for index, name in enumerate(spec.fields):
            span = spans.get(name)
            if span is None:
                continue
            a, z = span
            tokens = [
                t
                for t, (lo, hi) in enumerate(offsets)
                if words[t] is not None and lo < z and hi > a
            ]
            starts[row, index], ends[row, index] = tokens[0], tokens[-1]
    return starts, ends


def _loss(output: Any, targets: Any) -> torch.Tensor:
    if isinstance(output, tuple):
        (starts, ends), (start_t, end_t) = output, targets
        return nn.functional.cross_entropy(
            starts.flatten(0, 1), start_t.flatten()
        ) + nn.functional.cross_entropy(ends.flatten(0, 1), end_t.flatten())
    return nn.functional.cross_entropy(output, targets)


def fit_encoder(
    task: Task, *, out_dir: Path, plan: EncoderPlan, progress: bool = True
) -> dict[str, Any]:
    """Trains and saves ``task``'s encoder into ``out_dir``; returns its training record."""
    from peft import LoraConfig, get_peft_model
    from rich.progress import Progress

    from mesh.slm.encoder import EncoderModel

    torch.manual_seed(plan.seed)
    torch.set_num_threads(plan.threads)
    contract = task.contract
    if contract.labels is not None:
        spec = EncoderSpec("labels", plan.base, labels=tuple(contract.labels))
    else:
        fields = tuple((contract.schema or {}).get("properties", {}))
        spec = EncoderSpec("spans", plan.base, fields=fields)
    encoder, tokenizer = load_base(plan.base)
    head = new_head(encoder, spec)
    model = get_peft_model(
        encoder,
        LoraConfig(
            r=plan.lora_rank,
            lora_alpha=2 * plan.lora_rank,
            lora_dropout=plan.lora_dropout,
            target_modules=["query", "key", "value", "dense"],
        ),
    )
    wrapped = EncoderModel(spec, model, head, tokenizer, task.agent, 0, 512)
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in model.parameters() if p.requires_grad], "lr": plan.lr},
            {"params": head.parameters(), "lr": plan.head_lr},
        ],
        weight_decay=0.01,
    )
    examples = task.examples(TRAIN, plan.seed, plan.examples)
    steps_per_epoch = -(-len(examples) // plan.batch_size)
    total = steps_per_epoch * plan.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 50) * max(0.0, 1 - step / total)
    )
    started = time.monotonic()
    step = 0
    losses: list[float] = []
    model.train()
    head.train()
    with Progress(disable=not progress) as bar:
        job = bar.add_task(f"fine-tuning {task.agent}", total=total)
        for epoch in range(plan.epochs):
            order = list(range(len(examples)))
            Random(f"{plan.seed}/{epoch}").shuffle(order)
            for at in range(0, len(order), plan.batch_size):
                chunk = [examples[i] for i in order[at : at + plan.batch_size]]
                batch = wrapped.tokenize([e.prompt for e in chunk])
                loss = _loss(wrapped.forward(batch), _batch_targets(batch, chunk, spec))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                losses.append(loss.item())
                recent = losses[-20:]
                bar.update(
                    job,
                    advance=1,
                    description=f"fine-tuning {task.agent} loss {sum(recent) / len(recent):.3f}",
                )
    wall = time.monotonic() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    # peft records where the base was read from (a path of this machine); record its name.
    config_file = out_dir / "adapter_config.json"
    adapter_config = json.loads(config_file.read_text(encoding="utf-8"))
    adapter_config["base_model_name_or_path"] = plan.base
    config_file.write_text(json.dumps(adapter_config, indent=2) + "\n", encoding="utf-8")
    save_head(head, out_dir)
    spec.save(out_dir)
    (out_dir / "README.md").unlink(missing_ok=True)  # peft's model-card template
    size = sum(
        f.stat().st_size
        for f in out_dir.iterdir()
        if f.is_file() and f.suffix in {".safetensors", ".json"}
    )
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad) + sum(
        p.numel() for p in head.parameters()
    )
    merged = model.merge_and_unload()
    record: dict[str, Any] = {
        "agent": task.agent,
        "kind": "encoder",
        "base": plan.base,
        "parameters": sum(p.numel() for p in merged.parameters())
        + sum(p.numel() for p in head.parameters()),
        "trained_parameters": trained,
        "size_bytes": size,
        "steps": step,
        "wall_time_s": round(wall, 1),
        "final_loss": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 4),
        "plan": asdict(plan),
    }
    (out_dir / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("trained %s in %.0f s (%d steps)", task.agent, wall, step)
    return record
