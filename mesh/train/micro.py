"""The micro-SLM: a few-million-parameter Llama trained from scratch on one task, on CPU.

Why these choices: the tokenizers never merge across words, so any input span can be
copied (see :mod:`mesh.train.tokenizer`); the loss covers only the target and end-of-sequence,
so the capacity goes to the answer, not to modelling customer prose; bf16 autocast is about
twice as fast as fp32 on a CPU with native bf16 (and seven times slower on one without:
:mod:`mesh.train.precision` picks); batches are bucketed by length (from a seeded chunk of
examples) so little compute goes into padding, and a batch never mixes two examples in
one row, so attention cannot copy from the wrong message. Training is a pure function of
the seed and step count: example ``i`` of the train stream and the bucketing of each
chunk are seeded, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from random import Random
from typing import Any, Literal

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from mesh.train.data.dataset import SEEN, TEST, TRAIN, VALIDATION, Example, Stream, Task
from mesh.train.evaluate import score, score_stream
from mesh.train.precision import Precision, autocast
from mesh.train.precision import resolve as resolve_precision
from mesh.train.tokenizer import build_tokenizer, build_word_tokenizer

IGNORE = -100
"""Label of positions the loss skips (prompt and padding)."""

CHECKPOINT = "checkpoint.pt"
TRAINING_RECORD = "training.json"
_CHUNK_BATCHES = 8
_TOKENIZER_TEXTS = Stream("train", "tokenizer", TRAIN.invented)
_TOKENIZER_COUNT = 4000


@dataclass(frozen=True)
class MicroConfig:
    """Model dimensions and tokenizer; the vocabulary size comes from the tokenizer.

    ``tokenizer`` is ``chars`` (one token per character: any span can be copied),
    ``words`` (BPE inside words with their leading space, learnt from the train split:
    for agents that copy nothing, whose inputs get about 3.5x shorter) or ``subwords``
    (BPE inside words only, spaces, digits and punctuation single: copyable token by
    token, about 2.5x shorter).
    """

    hidden: int = 256
    layers: int = 4
    heads: int = 4
    intermediate: int = 704
    context: int = 1024
    tokenizer: Literal["chars", "words", "subwords"] = "chars"
    word_vocab: int = 2048

    def llama(self, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
        """The transformers config for these dimensions and this tokenizer."""
        # rope_theta is not in LlamaConfig's typed signature; it goes through its **kwargs.
        return LlamaConfig(  # type: ignore[call-arg]  # see above
            vocab_size=len(tokenizer),
            hidden_size=self.hidden,
            intermediate_size=self.intermediate,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.heads,
            max_position_embeddings=self.context,
            rope_theta=10_000.0,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )


@dataclass(frozen=True)
class TrainPlan:
    """How long and how to train: ``steps``, or ``minutes`` of wall time.

    With only ``minutes``, the learning-rate schedule follows the clock (warm-up by steps,
    then cosine decay over the wall time) and training stops when the time is up: on a
    machine shared with other work a step count fixed from an early speed measurement
    overran its time by 2x. The step count reached is recorded; ``steps`` with that count
    replays the same batches with a step-based schedule (close to, not bit-identical with,
    the timed run). With both, the schedule follows ``steps`` and training also stops when
    the time is up.

    ``threads`` defaults to one: on a 2-core machine shared with other work, two
    OpenMP threads keep waiting at barriers for a descheduled peer, and one thread
    trained 4-5x faster than two here (bf16, 3.3M parameters). Use 2 on idle cores.

    ``precision`` ``auto`` trains under bf16 autocast only where the CPU computes bf16
    natively, else in float32 (:mod:`mesh.train.precision`).
    """

    steps: int | None = None
    minutes: float | None = None
    seed: int = 0
    batch_size: int = 16
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    calibration_steps: int = 20
    weight_decay: float = 0.01
    clip: float = 1.0
    eval_every_s: float = 150.0
    eval_count: int = 32
    final_eval_count: int = 150
    checkpoint_every_s: float = 120.0
    threads: int = 1
    precision: Precision = "auto"

    def __post_init__(self) -> None:
        if self.steps is None and self.minutes is None:
            raise ValueError("a training plan needs steps, minutes or both")
        if self.steps is None and self.calibration_steps > self.warmup_steps:
            raise ValueError("calibration must end within the warm-up (its schedule is step-based)")


@dataclass
class _State:
    step: int = 0
    total: int | None = None
    elapsed: float = 0.0
    tokens: int = 0
    loss_ema: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def build_task_tokenizer(task: Task, config: MicroConfig, seed: int) -> PreTrainedTokenizerFast:
    """The tokenizer ``config`` names; a ``words`` one is learnt from its own train draws."""
    if config.tokenizer == "chars":
        return build_tokenizer(config.context)
    texts = (e.prompt + e.target for e in task.examples(_TOKENIZER_TEXTS, seed, _TOKENIZER_COUNT))
    return build_word_tokenizer(
        texts,
        vocab_size=config.word_vocab,
        max_length=config.context,
        copy_safe=config.tokenizer == "subwords",
    )


def build_model(
    config: MicroConfig, tokenizer: PreTrainedTokenizerFast, seed: int
) -> LlamaForCausalLM:
    """A freshly initialised model (seeded)."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config.llama(tokenizer))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def parameter_count(model: torch.nn.Module) -> int:
    """Trainable parameters, tied embeddings counted once."""
    return sum(p.numel() for p in model.parameters())


def encode(example: Example, tokenizer: PreTrainedTokenizerFast) -> tuple[list[int], list[int]]:
    """Token ids of prompt + target + ``</s>`` and labels that skip the prompt.

    Char-level tokens make the prompt/target boundary exact: the prompt's ids here are
    the ids the runtime feeds the model.
    """
    prompt = tokenizer(example.prompt)["input_ids"]
    target = tokenizer(example.target, add_special_tokens=False)["input_ids"]
    target.append(tokenizer.eos_token_id)
    return prompt + target, [IGNORE] * len(prompt) + target


class Batches:
    """Step ``n``'s batch, bucketed by length within a seeded chunk of examples."""

    def __init__(
        self, task: Task, tokenizer: PreTrainedTokenizerFast, plan: TrainPlan, context: int
    ) -> None:
        self.task, self.tokenizer, self.plan, self.context = task, tokenizer, plan, context
        self._chunk_id: int | None = None
        self._chunk: list[list[tuple[list[int], list[int]]]] = []

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, labels)`` right-padded to the longest row of the batch."""
        chunk_id, position = divmod(step, _CHUNK_BATCHES)
        if chunk_id != self._chunk_id:
            self._chunk = self._make_chunk(chunk_id)
            self._chunk_id = chunk_id
        rows = self._chunk[position]
        width = max(len(ids) for ids, _ in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
        labels = torch.tensor([lab + [IGNORE] * (width - len(lab)) for _, lab in rows])
        return input_ids, labels

    def _make_chunk(self, chunk_id: int) -> list[list[tuple[list[int], list[int]]]]:
        size = self.plan.batch_size * _CHUNK_BATCHES
        encoded: list[tuple[list[int], list[int]]] = []
        index = chunk_id * size
        while len(encoded) < size:
            ids, labels = encode(self.task.example(TRAIN, self.plan.seed, index), self.tokenizer)
            index += 1
            if len(ids) <= self.context:
                encoded.append((ids, labels))
        encoded.sort(key=lambda pair: len(pair[0]))
        batches = [
            encoded[i : i + self.plan.batch_size] for i in range(0, size, self.plan.batch_size)
        ]
        Random(f"batches/{self.plan.seed}/{chunk_id}").shuffle(batches)
        return batches


def fit(
    task: Task,
    *,
    out_dir: Path,
    plan: TrainPlan,
    config: MicroConfig = MicroConfig(),
    console: Console | None = None,
    final_streams: tuple[Stream, ...] = (SEEN, VALIDATION, TEST),
    on_step: Callable[[int, float], None] | None = None,
    init_from: Path | None = None,
) -> dict[str, Any]:
    """Trains ``task``'s model into ``out_dir`` and returns what goes into ``training.json``.

    Resumes from ``out_dir/checkpoint.pt`` when it was written by the same task, plan
    and config; the checkpoint is removed once the model is saved.

    ``init_from`` continues training a saved model of the same task, config and tokenizer
    (e.g. the shipped one) instead of starting from random weights: the plan runs again
    (warm-up, then decay: a warm restart) on the train stream's examples after the ones
    that model already saw. Its record's steps and time are added into ``total_steps``
    and ``total_wall_time_s``, so the cost of the weights stays visible.
    """
    console = console or Console(stderr=True)
    torch.set_num_threads(plan.threads)
    precision = resolve_precision(plan.precision)
    out_dir.mkdir(parents=True, exist_ok=True)
    if init_from is None:
        tokenizer = build_task_tokenizer(task, config, plan.seed)
    else:  # the saved model's own tokenizer: BPE training breaks ties differently per run
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(init_from))
    model = build_model(config, tokenizer, plan.seed)
    earlier = _initialise(model, config, init_from) if init_from is not None else None
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=plan.lr, betas=(0.9, 0.95), weight_decay=plan.weight_decay
    )
    identity = {
        "agent": task.agent,
        "plan": asdict(plan),
        "config": asdict(config),
        "init": earlier,
    }
    offset = earlier["total_steps"] if earlier else 0
    state = _resume(out_dir / CHECKPOINT, identity, model, optimizer, console)
    batches = Batches(task, tokenizer, plan, config.context)
    probe = task.examples(VALIDATION, plan.seed, plan.eval_count)
    state.total = state.total or plan.steps
    limit_s = plan.minutes * 60 if plan.minutes is not None else None
    params = parameter_count(model)
    console.log(f"{task.agent}: {params:,} parameters, plan {asdict(plan)}")

    progress = training_progress(console)
    bar_total = float(state.total or 0) or None
    started = time.monotonic() - state.elapsed
    last_eval = last_checkpoint = time.monotonic()
    with progress:
        bar = progress.add_task(f"train {task.agent}", total=bar_total, info="")
        while True:
            elapsed = time.monotonic() - started
            if plan.steps is None and limit_s:
                # Time-based: the schedule follows the clock, so a machine that slows down
                # (shared cores) still ends on time with a fully decayed learning rate.
                if elapsed >= limit_s:
                    break
                fraction = elapsed / limit_s
                if state.step >= plan.calibration_steps and state.step % 50 == 0:
                    state.total = max(state.step + 1, int(limit_s * state.step / elapsed))
                    progress.update(bar, total=state.total)
            else:
                if state.total is not None and state.step >= state.total:
                    break
                if limit_s is not None and elapsed >= limit_s:
                    break
                fraction = state.step / state.total if state.total else 0.0
            lr = _learning_rate(plan, state.step, fraction)
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            input_ids, labels = batches.batch(offset + state.step)
            with autocast(precision):
                loss = model(input_ids=input_ids, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), plan.clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"{task.agent}: loss became {value} at step {state.step}")
            state.step += 1
            state.tokens += int(input_ids.numel())
            state.loss_ema = (
                value if state.loss_ema is None else 0.95 * state.loss_ema + 0.05 * value
            )
            state.elapsed = time.monotonic() - started
            if on_step is not None:
                on_step(state.step, value)
            progress.update(
                bar,
                completed=state.step,
                info=f"step {state.step} loss {state.loss_ema:.4f} lr {lr:.2e}",
            )
            now = time.monotonic()
            if plan.eval_every_s and now - last_eval >= plan.eval_every_s:
                metrics = score(model, tokenizer, task, probe)
                state.history.append(
                    {
                        "step": state.step,
                        "elapsed_s": round(state.elapsed, 1),
                        "loss": round(state.loss_ema, 4),
                        "validation": metrics,
                    }
                )
                console.log(
                    f"step {state.step} ({state.elapsed:.0f}s) loss {state.loss_ema:.4f} "
                    f"validation {_fmt(metrics)}"
                )
                last_eval = time.monotonic()
                started += last_eval - now
            if (
                plan.checkpoint_every_s
                and time.monotonic() - last_checkpoint >= plan.checkpoint_every_s
            ):
                _save_checkpoint(out_dir / CHECKPOINT, identity, model, optimizer, state)
                last_checkpoint = time.monotonic()

    wall_s = state.elapsed
    save(model, tokenizer, out_dir)
    model = LlamaForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    final_metrics: dict[str, dict[str, float]] = {}
    for stream in final_streams:
        final_metrics[stream.name] = score_stream(
            model, tokenizer, task, stream, seed=plan.seed + 1, count=plan.final_eval_count
        )
        console.log(f"final {stream.name}: {_fmt(final_metrics[stream.name])}")
    record = {
        "agent": task.agent,
        "parameters": params,
        "size_bytes": (out_dir / "model.safetensors").stat().st_size,
        "config": asdict(config),
        "plan": asdict(plan),
        "seed": plan.seed,
        "steps": state.step,
        "tokens": state.tokens,
        "wall_time_s": round(wall_s, 1),
        "final_loss": round(state.loss_ema or 0.0, 5),
        "threads": plan.threads,
        "precision": precision,
        "torch": torch.__version__,
        "metrics": final_metrics,
        "metrics_note": "plain greedy decoding, no constraints; seen = train-pool values and "
        "phrasings in fresh combinations, validation/test = values and phrasings never in training",
        "history": state.history,
    }
    if earlier is not None:
        record["init_from"] = earlier
        record["total_steps"] = earlier["total_steps"] + state.step
        record["total_wall_time_s"] = round(earlier["total_wall_time_s"] + wall_s, 1)
    (out_dir / TRAINING_RECORD).write_text(
        json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out_dir / CHECKPOINT).unlink(missing_ok=True)
    return record


def _initialise(model: LlamaForCausalLM, config: MicroConfig, source: Path) -> dict[str, Any]:
    """Loads ``source``'s weights into ``model``; returns what its record says it cost."""
    record = json.loads((source / TRAINING_RECORD).read_text(encoding="utf-8"))
    if record.get("config") != asdict(config):
        raise ValueError(
            f"{source.name}: trained with config {record.get('config')}, this "
            f"recipe has {asdict(config)}; train from scratch instead"
        )
    weights = LlamaForCausalLM.from_pretrained(str(source), dtype=torch.float32)
    model.load_state_dict(weights.state_dict())
    return {
        "model": source.name,
        "steps": int(record["steps"]),
        "wall_time_s": float(record["wall_time_s"]),
        "plan": record.get("plan"),
        "total_steps": int(record.get("total_steps", record["steps"])),
        "total_wall_time_s": float(record.get("total_wall_time_s", record["wall_time_s"])),
    }


def save(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, out_dir: Path) -> None:
    """Weights in bf16 safetensors (half the size of fp32), config and tokenizer files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    half = LlamaForCausalLM(model.config)
    half.load_state_dict(model.state_dict())
    # transformers types to() for devices only; a dtype is as valid (torch.nn.Module.to).
    half.to(torch.bfloat16).save_pretrained(out_dir)  # type: ignore[arg-type]  # see above
    tokenizer.save_pretrained(out_dir)


def training_progress(console: Console) -> Progress:
    """The bar every trainer shows: steps, times, and an ``info`` field (loss, lr)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
    )


def _learning_rate(plan: TrainPlan, step: int, fraction: float) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` of the peak."""
    if step < plan.warmup_steps:
        return plan.lr * (step + 1) / plan.warmup_steps
    cosine = 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0)))
    return plan.lr * (plan.min_lr_ratio + (1 - plan.min_lr_ratio) * cosine)


def _save_checkpoint(
    path: Path,
    identity: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: _State,
) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "identity": identity,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "state": asdict(state),
        },
        tmp,
    )
    tmp.replace(path)


def _resume(
    path: Path,
    identity: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    console: Console,
) -> _State:
    if not path.is_file():
        return _State()
    saved = torch.load(path, weights_only=False)
    if saved.get("identity") != identity:
        console.log(f"ignoring {path}: written by a different task, plan or config")
        return _State()
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    state = _State(**saved["state"])
    console.log(f"resumed from {path} at step {state.step} ({state.elapsed:.0f}s)")
    return state


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{key} {value:.3f}" for key, value in metrics.items())
