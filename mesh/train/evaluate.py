"""Greedy decoding and scoring on held-out streams, for training-time checks.

Plain greedy decoding, no constraints: the serving runtime adds label, schema and
grounded-span constraints, so these numbers are a floor for what it produces.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import cast

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from mesh.train.data.dataset import Example, Stream, Task, mean_scores

_MARGIN = 8

logger = logging.getLogger(__name__)


@torch.inference_mode()
def generate(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    prompts: list[str],
    *,
    max_new_tokens: int,
    stop: tuple[str, ...] = (),
    batch_size: int = 32,
) -> list[str]:
    """Greedy continuations of ``prompts``, cut at end-of-sequence or a stop string.

    A plain loop over the KV cache rather than ``model.generate``, whose per-token
    overhead is several times the forward pass of a model this small. Prompts are
    batched by length and left-padded; RoPE only sees relative positions, so the
    padding shifts nothing. Runs in float32: bf16 autocast made decoding slower here.
    """
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    eos = tokenizer.eos_token_id
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = tokenizer([prompts[i] for i in chunk], return_tensors="pt", padding=True)
        mask = batch["attention_mask"]
        tokens: list[torch.Tensor] = []
        finished = torch.zeros(len(chunk), dtype=torch.bool)
        out = model(input_ids=batch["input_ids"], attention_mask=mask, use_cache=True)
        for _ in range(max_new_tokens):
            step = out.logits[:, -1].argmax(-1)
            step = torch.where(finished, torch.full_like(step, eos), step)
            tokens.append(step)
            finished |= step == eos
            if bool(finished.all()):
                break
            mask = torch.cat([mask, mask.new_ones(len(chunk), 1)], dim=1)
            out = model(
                input_ids=step[:, None],
                attention_mask=mask,
                past_key_values=out.past_key_values,
                use_cache=True,
            )
        new_tokens = torch.stack(tokens, dim=1) if tokens else torch.empty(len(chunk), 0)
        for i, ids in zip(chunk, new_tokens.tolist(), strict=True):
            if eos in ids:
                ids = ids[: ids.index(eos)]
            text = cast(str, tokenizer.decode(ids, skip_special_tokens=True))
            for marker in stop:
                text = text.split(marker, 1)[0]
            outputs[i] = text
    return outputs


def score(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    task: Task,
    examples: list[Example],
) -> dict[str, float]:
    """Mean of the task's per-example scores (``exact``, ``valid``, ...) over ``examples``.

    Generation stops a few tokens past the longest expected output: anything longer is
    wrong anyway, and untrained models otherwise run to ``max_new_tokens``.
    """
    longest = max(len(example.target) for example in examples)
    outputs = generate(
        model,
        tokenizer,
        [example.prompt for example in examples],
        max_new_tokens=min(task.contract.max_new_tokens, longest + _MARGIN),
        stop=task.contract.stop,
    )
    return mean_scores(task.judge(ex, out) for ex, out in zip(examples, outputs, strict=True))


def score_stream(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    task: Task,
    stream: Stream,
    *,
    seed: int,
    count: int,
) -> dict[str, float]:
    """:func:`score` on the first ``count`` examples of ``stream``."""
    return score(model, tokenizer, task, task.examples(stream, seed, count))


def score_served(
    model_dir: Path, task: Task, examples: list[Example], *, threads: int = 1
) -> dict[str, float]:
    """Scores through the serving runtime (:mod:`mesh.slm`): constrained decoding.

    Labels come out of the choice set, JSON out of the schema, and grounded strings are
    spans of the input: the numbers the agents actually deliver. An output the runtime
    refuses (cut off, no span to copy) scores as an empty output, and so does a
    generation the runtime itself fails on (counted in ``runtime_failures``, logged); a
    schema it cannot enforce raises at once.
    """
    from mesh.slm import (
        Choice,
        GenerationFailedError,
        GenerationRequest,
        InputError,
        InvalidOutputError,
        JsonOutput,
        OutputConstraint,
    )
    from mesh.slm.local import local_backend

    contract = task.contract
    failures: list[str] = []
    backend = local_backend(contract.backend, str(model_dir), threads=threads, max_batch_size=32)
    if contract.labels is not None:
        backend.check_output(Choice(contract.labels))
    elif contract.schema is not None:
        backend.check_output(JsonOutput(contract.schema))
    elif contract.text is not None:
        backend.check_output(contract.text)

    async def one(example: Example) -> str:
        output: OutputConstraint | None = None
        if contract.labels is not None:
            output = Choice(contract.labels)
        elif contract.text is not None:
            output = contract.text.with_source(example.input)
        elif (schema := task.output_schema(example)) is not None:
            output = JsonOutput(schema, example.input)
        request = GenerationRequest(
            prompt=example.prompt,
            max_new_tokens=contract.max_new_tokens,
            stop=contract.stop,
            output=output,
        )
        try:
            return (await backend.generate(request)).text
        except (InputError, InvalidOutputError):
            return ""
        except GenerationFailedError as exc:
            failures.append(f"{example.input[:200]}: {exc}")
            return ""

    async def run() -> list[str]:
        try:
            return list(await asyncio.gather(*(one(example) for example in examples)))
        finally:
            await backend.aclose()

    outputs = asyncio.run(run())
    scores = mean_scores(task.judge(ex, out) for ex, out in zip(examples, outputs, strict=True))
    scores["runtime_failures"] = len(failures) / len(examples)
    for failure in failures:
        logger.warning("runtime failed on %s", failure)
    return scores
