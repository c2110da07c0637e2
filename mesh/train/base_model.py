"""The student base: a tiny Llama pretrained as a plain language model on customer messages.

The conversion loop (:mod:`mesh.convert.lora`) fine-tunes a LoRA student from a base that
knows the domain's text but not the task, the way a real conversion starts from a general
SLM. This base reads unlabelled messages of the TRAIN split only (no intents, no prompt,
no task formatting), so anything it knows about a task came from the recorded calls.
It is about ten times smaller than the micro-SLM agents it replaces, so the teacher/student
cost ratio measures something. Training reuses :func:`mesh.train.micro.fit`: an example
is an empty prompt (just ``<s>``) and the message as the target, so the loss covers the
whole message and its end.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from random import Random
from typing import Any

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from mesh.train.data.contract import Contract
from mesh.train.data.dataset import TRAIN, VALIDATION, Example, Stream, Task
from mesh.train.data.messages import compose
from mesh.train.micro import IGNORE, TRAINING_RECORD, MicroConfig, TrainPlan, encode, fit
from mesh.train.precision import Precision

BASE = "base"
"""Name of the recipe, of its folder under ``models/`` and of its ``training.json`` agent."""

BASE_CONFIG = MicroConfig(
    hidden=64,
    layers=2,
    heads=4,
    intermediate=176,
    context=512,
    tokenizer="words",
    word_vocab=2048,
)
"""About 0.23M parameters, 60% of them the (tied) embeddings of the 2048-word vocabulary."""

BASE_PLAN = TrainPlan(
    steps=3000,
    batch_size=16,
    lr=3e-3,
    warmup_steps=100,
    eval_every_s=0,
    checkpoint_every_s=60.0,
    final_eval_count=0,
)
"""Plain next-token training; held-out loss is measured once at the end."""

_HELDOUT = 400


class MessagesTask(Task):
    """Unlabelled customer messages as plain text: the language-model pretraining data."""

    agent = BASE

    def __init__(self) -> None:
        # No service, no prompt, no output contract: the model just continues text.
        self.contract = Contract(
            agent=BASE,
            prompt="{input}",
            labels=None,
            schema=None,
            max_new_tokens=96,
            stop=(),
            model_dir=Path(BASE),
        )

    def make(self, rng: Random, stream: Stream) -> Example:
        message = compose(rng, stream.split, invented=stream.invented)
        return Example(
            input=message.text,
            prompt="",
            target=message.text,
            expected=None,
            templates=message.templates,
            entities=message.entities,
        )

    def judge(self, example: Example, output: str) -> dict[str, float]:
        return {"exact": float(output == example.target)}


@torch.inference_mode()
def heldout_loss(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, examples: list[Example]
) -> float:
    """Mean per-token cross-entropy on ``examples`` (messages never trained on)."""
    model.eval()
    total, tokens = 0.0, 0
    for example in examples:
        ids, labels = encode(example, tokenizer)
        out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
        count = sum(1 for label in labels[1:] if label != IGNORE)
        total += float(out.loss) * count
        tokens += count
    return total / tokens


def train_base(
    out_dir: Path,
    *,
    steps: int | None = None,
    minutes: float | None = None,
    seed: int = 0,
    precision: Precision = "auto",
) -> dict[str, Any]:
    """Pretrains the base into ``out_dir`` (resumable) and returns its ``training.json``."""
    task = MessagesTask()
    plan = replace(BASE_PLAN, seed=seed, precision=precision)
    if steps is not None or minutes is not None:
        plan = replace(plan, steps=steps, minutes=minutes)
    record = fit(task, out_dir=out_dir, plan=plan, config=BASE_CONFIG, final_streams=())
    model = LlamaForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(out_dir))
    loss = heldout_loss(model, tokenizer, task.examples(VALIDATION, seed + 1, _HELDOUT))
    record["metrics"] = {
        VALIDATION.name: {"loss": round(loss, 4), "perplexity": round(math.exp(loss), 2)}
    }
    record["metrics_note"] = (
        "per-token loss on validation-split messages (unseen values and phrasings); the base "
        "never saw an intent, a prompt or an output: it is a domain language model, not an agent"
    )
    record["data"] = f"unlabelled customer messages of the {TRAIN.split} split, plain text"
    (out_dir / TRAINING_RECORD).write_text(
        json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return record
