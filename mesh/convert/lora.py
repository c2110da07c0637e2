"""S4/S5 of the conversion loop: fine-tune a LoRA student on one cluster's recorded calls.

The student must be a drop-in replacement for the agent it learns from, so every example
is rendered exactly as the serving runtime renders the teacher's prompt
(:func:`mesh.slm.transformers_backend.render_prompt`) and the target is the recorded output
(label, compact JSON in schema order, or text) then end-of-sequence; the loss covers only
the target, as in :mod:`mesh.train.micro`. The held-out calls are scored through the
serving runtime itself (the base with the saved adapter merged, under the teacher's label
or JSON constraint): the agreement reported is what the deployed student will deliver.

Training is a pure function of the seed, the calls and the plan: the split, the batch of
each step and the adapter's initialisation are seeded, and a checkpoint (adapter, optimizer,
step, RNG) is written every ``checkpoint_every_s`` and when training is interrupted, so a
rerun with the same arguments continues where it stopped and ends with the same adapter.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import platform
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from random import Random
from typing import Any

import torch
from rich.console import Console

from mesh.config import ServiceSpec, SpecError
from mesh.recording.store import CallRecord, CallStore, Cluster
from mesh.slm.errors import GenerationFailedError, InputError, InvalidOutputError
from mesh.slm.executor import OutputOptions
from mesh.slm.generation import GenerationRequest
from mesh.slm.grammar import Choice, OutputConstraint
from mesh.slm.loading import LoadedModel, load_model, resolve_source
from mesh.train.micro import CHECKPOINT, IGNORE, TRAINING_RECORD, training_progress
from mesh.train.precision import Precision, autocast
from mesh.train.precision import resolve as resolve_precision

_MARGIN_TOKENS = 8


class ConversionError(ValueError):
    """The cluster, its calls or the base cannot make a student; the message says why."""


@dataclass(frozen=True)
class StudentPlan:
    """How to fine-tune: LoRA shape, schedule and split.

    Defaults: see docs/conversion.md (Training a student).

    ``steps`` wins over ``epochs`` (passes over the train split). ``train_embeddings`` also
    trains the (tied) embedding matrix in full (peft ``modules_to_save``): a base that never
    saw the task's words (labels, prompt) may need it, at the cost of an adapter as big as
    the embeddings. ``threads`` is one by default: on a shared 2-core machine one torch
    thread trained 4-5x faster than two. ``precision`` ``auto`` trains under bf16 autocast
    only on a CPU with native bf16 (:mod:`mesh.train.precision`).
    """

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    steps: int | None = None
    epochs: float = 6.0
    lr: float = 3e-3
    batch_size: int = 16
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    clip: float = 1.0
    seed: int = 0
    holdout: float = 0.2
    train_embeddings: bool = False
    threads: int = 1
    checkpoint_every_s: float = 60.0
    compare_base: bool = True
    precision: Precision = "auto"

    def __post_init__(self) -> None:
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError("holdout must be in [0, 1)")
        if self.rank < 1 or self.batch_size < 1 or (self.steps is not None and self.steps < 1):
            raise ValueError("rank, batch_size and steps must be >= 1")


@dataclass
class ServingSpec:
    """How the teacher was served, i.e. how the student must be served: from its calls and spec."""

    agent: str
    prompt: str
    output: dict[str, Any] | None
    skills: list[dict[str, Any]]
    max_new_tokens: int
    stop: list[str]
    use_chat_template: bool = True
    input_modes: list[str] = field(default_factory=lambda: ["text/plain"])
    output_modes: list[str] = field(default_factory=lambda: ["text/plain"])

    def constraint(self, source: str) -> OutputConstraint | None:
        """The output constraint of one call, as the executor builds it."""
        if self.output is None:
            return None
        declared = OutputOptions.model_validate(self.output)
        choices = declared.choices()
        if choices is not None:
            return Choice(tuple(choices(source)))
        constraint = declared.constraint()
        return constraint.with_source(source) if constraint is not None else None


@dataclass
class ClusterCalls:
    """A cluster's usable calls, split; the teacher's model and how many calls were left out."""

    cluster: Cluster
    train: list[CallRecord]
    heldout: list[CallRecord]
    recorded: int
    dropped: dict[str, int]
    teacher_model: str | None
    teacher_parameters: int | None


def usable(call: CallRecord) -> bool:
    """A call worth imitating: valid, completed, not rejected downstream, with an output."""
    return (
        call.valid
        and call.state == "completed"
        and call.accepted is not False
        and call.output is not None
    )


def load_cluster_calls(
    store: CallStore, key: int | str, *, holdout: float, seed: int
) -> ClusterCalls:
    """The cluster's usable calls of its main (prompt, output) pair, shuffled and split.

    A student learns one prompt and one output contract; calls a cluster holds under another
    prompt (e.g. the teacher's spec changed mid-recording) are left out and counted.
    """
    cluster = store.cluster(key)
    if cluster is None:
        known = ", ".join(f"{c.id} ({c.name})" for c in store.clusters()) or "none"
        raise ConversionError(
            f"no cluster {key!r} in {store.path} (clusters: {known}); run "
            "`slmesh convert analyze` first"
        )
    calls = store.cluster_calls(cluster.id)
    good = [c for c in calls if usable(c)]
    dropped = {"unusable": len(calls) - len(good)}
    contracts = Counter((c.prompt, json.dumps(c.output_spec, sort_keys=True)) for c in good)
    if not contracts:
        raise ConversionError(
            f"cluster {cluster.name!r} has no valid completed calls to learn "
            f"from ({len(calls)} recorded)"
        )
    (prompt, spec), _ = contracts.most_common(1)[0]
    kept = [
        c for c in good if (c.prompt, json.dumps(c.output_spec, sort_keys=True)) == (prompt, spec)
    ]
    dropped["other_prompt"] = len(good) - len(kept)
    kept.sort(key=lambda c: c.id)  # a seeded shuffle of a fixed order: the split is reproducible
    Random(f"convert/{seed}").shuffle(kept)
    count = round(len(kept) * holdout)
    if holdout > 0 and len(kept) >= 2:
        count = max(count, 1)
    if len(kept) - count < 1:
        raise ConversionError(
            f"cluster {cluster.name!r}: {len(kept)} usable calls leave none to train on"
        )
    models = Counter(c.model for c in kept if c.model)
    teacher_model = models.most_common(1)[0][0] if models else None
    parameters = next(
        (c.parameters for c in kept if c.model == teacher_model and c.parameters), None
    )
    return ClusterCalls(
        cluster, kept[count:], kept[:count], len(calls), dropped, teacher_model, parameters
    )


def serving_spec(calls: list[CallRecord], teacher_spec: ServiceSpec | None) -> ServingSpec:
    """The student's serving options: prompt and output from the calls, the rest from the
    teacher's spec when it is at hand (skills, max_new_tokens, stop, modes)."""
    first = calls[0]
    skill_ids = sorted({c.skill for c in calls if c.skill})
    if not skill_ids:
        raise ConversionError(
            f"the calls of {first.agent!r} record no skill id: a student must "
            "register its teacher's skill for the planner to route to it"
        )
    skills: list[dict[str, Any]] = []
    options: dict[str, Any] = {}
    serving = ServingSpec(
        agent=first.agent,
        prompt=first.prompt,
        output=first.output_spec,
        skills=skills,
        max_new_tokens=0,
        stop=[],
    )
    if teacher_spec is not None:
        options = teacher_spec.options
        known = {s.id: s for s in teacher_spec.skills}
        skills += [known[i].model_dump() for i in skill_ids if i in known]
        serving.input_modes = list(teacher_spec.input_modes)
        serving.output_modes = list(teacher_spec.output_modes)
    for skill_id in skill_ids:
        if not any(s["id"] == skill_id for s in skills):
            skills.append(
                {
                    "id": skill_id,
                    "name": skill_id.replace("_", " ").capitalize(),
                    "description": f"{skill_id}, as the agent {first.agent} serves it.",
                }
            )
    serving.max_new_tokens = int(options.get("max_new_tokens", 0))
    serving.stop = list(options.get("stop", []))
    serving.use_chat_template = bool(options.get("use_chat_template", True))
    return serving


# -- examples -------------------------------------------------------------------------------


def encode_call(
    loaded: LoadedModel, serving: ServingSpec, call: CallRecord
) -> tuple[list[int], list[int]]:
    """Token ids of the served prompt + recorded output + end, and labels on the output only."""
    from mesh.slm.transformers_backend import render_prompt

    request = GenerationRequest(prompt=serving.prompt.format(input=call.input))
    text, special = render_prompt(loaded.tokenizer, request, serving.use_chat_template)
    prompt = loaded.tokenizer(text, add_special_tokens=special)["input_ids"]
    assert call.output is not None
    target = loaded.tokenizer(call.output, add_special_tokens=False)["input_ids"]
    eos = loaded.tokenizer.eos_token_id
    target = [*target, eos if eos is not None else min(loaded.eos_ids)]
    return prompt + target, [IGNORE] * len(prompt) + target


def _batch(rows: list[tuple[list[int], list[int]]], pad: int) -> tuple[torch.Tensor, ...]:
    """Right-padded ids, labels and attention mask (padding after the end changes nothing)."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r, _ in rows])
    labels = torch.tensor([lab + [IGNORE] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r, _ in rows])
    return ids, labels, mask


def batch_rows(step: int, count: int, plan: StudentPlan) -> list[int]:
    """Indices of the train examples in step ``step``'s batch: seeded epochs, any step alone."""
    per_epoch = max(1, math.ceil(count / plan.batch_size))
    epoch, position = divmod(step, per_epoch)
    order = list(range(count))
    Random(f"convert/batches/{plan.seed}/{epoch}").shuffle(order)
    return order[position * plan.batch_size : (position + 1) * plan.batch_size]


def total_steps(plan: StudentPlan, count: int) -> int:
    if plan.steps is not None:
        return plan.steps
    return max(1, math.ceil(plan.epochs * count / plan.batch_size))


def _learning_rate(plan: StudentPlan, step: int, total: int) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` of the peak."""
    if step < plan.warmup_steps:
        return plan.lr * (step + 1) / plan.warmup_steps
    fraction = (step - plan.warmup_steps) / max(1, total - plan.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0)))
    return plan.lr * (plan.min_lr_ratio + (1 - plan.min_lr_ratio) * cosine)


# -- training -------------------------------------------------------------------------------


def base_reference(base: str, out_dir: Path) -> tuple[str, str]:
    """``(resolved, recorded)``: where the base loads from now, and how training.json names it
    (a folder relative to the student's folder, so the pair moves together; else the id)."""
    resolved = resolve_source(base)
    path = Path(resolved)
    if path.exists():
        return resolved, relative_path(path, out_dir)
    return resolved, base


def relative_path(target: Path, start: Path) -> str:
    """``target`` relative to the folder ``start``, with forward slashes (specs, records)."""
    return Path(os.path.relpath(target.resolve(), start.resolve())).as_posix()


def _lora_model(loaded: LoadedModel, plan: StudentPlan) -> Any:
    from peft import LoraConfig, get_peft_model

    saved: list[str] | None = None
    if plan.train_embeddings:
        saved = [
            name
            for name, module in loaded.model.named_modules()
            if module is loaded.model.get_input_embeddings()
            or module is loaded.model.get_output_embeddings()
        ]
        saved = sorted({name.rsplit(".", 1)[-1] for name in saved})
    # "all-linear": every Linear but the output layer. A LoRA on a head tied to the
    # embeddings cannot be merged (the merged delta would change the input embeddings too).
    config = LoraConfig(
        r=plan.rank,
        lora_alpha=plan.alpha,
        lora_dropout=plan.dropout,
        target_modules="all-linear",
        modules_to_save=saved,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(plan.seed)
    return get_peft_model(loaded.model, config)


def train_student(
    store: CallStore,
    cluster_key: int | str,
    base: str,
    out_dir: Path,
    *,
    plan: StudentPlan = StudentPlan(),
    teacher_spec: ServiceSpec | None = None,
    console: Console | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Trains a LoRA student of ``cluster_key`` on ``base`` into ``out_dir``; returns its
    ``training.json`` record (also written there) after scoring the held-out calls served.

    ``teacher_spec`` (the teacher's ``agent.yaml``) supplies the skill names, the stop strings
    and max_new_tokens the calls do not record. ``on_step(step, loss)`` runs after each step.
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    console = console or Console(stderr=True)
    torch.set_num_threads(plan.threads)
    precision = resolve_precision(plan.precision)
    data = load_cluster_calls(store, cluster_key, holdout=plan.holdout, seed=plan.seed)
    serving = serving_spec(data.train + data.heldout, teacher_spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    resolved, base_ref = base_reference(base, out_dir)
    loaded = load_model(resolved)
    base_parameters = loaded.parameters
    encoded = [encode_call(loaded, serving, call) for call in data.train]
    longest = max(len(ids) for ids, _ in encoded)
    if longest > loaded.context_length:
        raise ConversionError(
            f"an example is {longest} tokens, over the base's context of {loaded.context_length}"
        )
    targets = max(sum(1 for x in labels if x != IGNORE) for _, labels in encoded)
    serving.max_new_tokens = max(serving.max_new_tokens, targets + _MARGIN_TOKENS)
    model = _lora_model(loaded, plan)
    trainable = [p for p in model.parameters() if p.requires_grad]
    adapter_parameters = sum(p.numel() for p in trainable)
    optimizer = torch.optim.AdamW(
        trainable, lr=plan.lr, betas=(0.9, 0.95), weight_decay=plan.weight_decay
    )
    total = total_steps(plan, len(encoded))
    identity = {
        "plan": {
            k: v
            for k, v in asdict(plan).items()
            if k not in ("threads", "checkpoint_every_s", "compare_base", "precision")
        },
        "base": base_ref,
        "cluster": data.cluster.name,
        "calls": hashlib.sha256("\n".join(c.id for c in data.train).encode()).hexdigest(),
    }
    checkpoint = out_dir / CHECKPOINT
    step, elapsed, losses = 0, 0.0, []
    if checkpoint.is_file():
        saved = torch.load(checkpoint, weights_only=False)
        if saved.get("identity") == identity:
            set_peft_model_state_dict(model, saved["adapter"])
            optimizer.load_state_dict(saved["optimizer"])
            torch.set_rng_state(saved["rng"])
            step, elapsed, losses = saved["step"], saved["elapsed"], saved["losses"]
            console.log(f"resumed from {checkpoint} at step {step}")
        else:
            console.log(f"ignoring {checkpoint}: written for other calls, base or plan")

    def save_checkpoint() -> None:
        tmp = checkpoint.with_suffix(".tmp")
        torch.save(
            {
                "identity": identity,
                # Deleted (to free training memory) only after the last checkpoint is written.
                "adapter": get_peft_model_state_dict(model),  # noqa: F821 - deleted after last use
                "optimizer": optimizer.state_dict(),  # noqa: F821 - deleted after last use
                "rng": torch.get_rng_state(),
                "step": step,
                "elapsed": elapsed,
                "losses": losses,
            },
            tmp,
        )
        tmp.replace(checkpoint)

    console.log(
        f"student of {serving.agent} on cluster {data.cluster.name!r}: "
        f"{len(data.train)} train / {len(data.heldout)} held-out calls, base {base_ref} "
        f"({base_parameters:,} parameters), LoRA r={plan.rank}: "
        f"{adapter_parameters:,} trainable, {total} steps"
    )
    progress = training_progress(console)
    pad = loaded.pad_id
    started = time.monotonic() - elapsed
    last_checkpoint = time.monotonic()
    ema: float | None = None
    model.train()
    try:
        with progress:
            bar = progress.add_task(
                f"LoRA {data.cluster.name}", total=total, completed=step, info=""
            )
            while step < total:
                lr = _learning_rate(plan, step, total)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                ids, labels, mask = _batch(
                    [encoded[i] for i in batch_rows(step, len(encoded), plan)], pad
                )
                with autocast(precision):
                    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, plan.clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(f"loss became {value} at step {step}: lower --lr")
                step += 1
                losses.append(round(value, 5))
                ema = value if ema is None else 0.9 * ema + 0.1 * value
                elapsed = time.monotonic() - started
                progress.update(bar, completed=step, info=f"loss {ema:.4f} lr {lr:.1e}")
                if on_step is not None:
                    on_step(step, value)
                if (
                    plan.checkpoint_every_s
                    and time.monotonic() - last_checkpoint >= plan.checkpoint_every_s
                ):
                    save_checkpoint()
                    last_checkpoint = time.monotonic()
    except BaseException:
        # Ctrl-C or a failure: keep the progress, a rerun with the same arguments resumes.
        save_checkpoint()
        console.log(f"stopped at step {step}; checkpoint {checkpoint} (rerun to resume)")
        raise
    wall_s = elapsed
    model.save_pretrained(out_dir)
    adapter_config = (
        out_dir / "adapter_config.json"
    )  # name the base portably, not by this machine's path
    config = json.loads(adapter_config.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_ref
    adapter_config.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    record: dict[str, Any] = {
        "student": out_dir.name,
        "cluster": {"id": data.cluster.id, "name": data.cluster.name, "size": data.cluster.size},
        "teacher": {
            "agent": serving.agent,
            "model": data.teacher_model,
            "parameters": data.teacher_parameters,
        },
        "base": base_ref,
        "base_parameters": base_parameters,
        "parameters": base_parameters,
        "adapter_parameters": adapter_parameters,
        "adapter_bytes": (out_dir / "adapter_model.safetensors").stat().st_size,
        "lora": {
            "rank": plan.rank,
            "alpha": plan.alpha,
            "dropout": plan.dropout,
            "target_modules": "all-linear",
            "train_embeddings": plan.train_embeddings,
        },
        "plan": asdict(plan),
        "calls": {
            "recorded": data.recorded,
            "train": len(data.train),
            "heldout": len(data.heldout),
            **{f"dropped_{k}": v for k, v in data.dropped.items()},
        },
        "steps": step,
        "wall_time_s": round(wall_s, 1),
        "first_loss": round(sum(losses[:10]) / len(losses[:10]), 5),
        "final_loss": round(sum(losses[-10:]) / len(losses[-10:]), 5),
        "threads": plan.threads,
        "precision": precision,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {_cpu_count()} CPU cores",
        "serving": asdict(serving),
    }
    del model, optimizer
    if data.heldout:
        eval_started = time.monotonic()
        metrics = score_served(
            resolved, serving, data.heldout, adapter=out_dir, threads=plan.threads
        )
        metrics["eval_s"] = round(time.monotonic() - eval_started, 1)
        # What the runtime serves: trained embeddings untie a tied head, so count after merging.
        record["parameters"] = int(metrics.pop("parameters"))
        if plan.compare_base:
            plain = score_served(
                resolved, serving, data.heldout, adapter=None, threads=plan.threads
            )
            metrics["base_agreement"] = plain["agreement"]  # what LoRA added
            metrics["base_valid"] = plain["valid"]
        record["metrics"] = {"heldout": metrics}
        console.log(
            f"held-out ({len(data.heldout)} calls, served): agreement "
            f"{metrics['agreement']:.3f}, valid {metrics['valid']:.3f}"
        )
    record["metrics_note"] = (
        "held-out calls scored through the serving runtime (base + merged adapter, the "
        "teacher's label/JSON constraint): agreement = same output as the recorded teacher "
        "output (JSON compared as values), valid = the runtime accepted the output; base_* = "
        "the base alone under the same constraint"
    )
    (out_dir / TRAINING_RECORD).write_text(
        json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    checkpoint.unlink(missing_ok=True)
    return record


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# -- served evaluation ---------------------------------------------------------------------


def agrees(serving: ServingSpec, output: str, reference: str) -> bool:
    """Same answer as the teacher: labels and text exactly, JSON as values (key order aside)."""
    if serving.output is not None and "schema" in serving.output:
        try:
            return bool(json.loads(output) == json.loads(reference))
        except json.JSONDecodeError:
            return False
    return output.strip() == reference.strip()


def score_served(
    base: str,
    serving: ServingSpec,
    calls: list[CallRecord],
    *,
    adapter: Path | None,
    threads: int = 1,
) -> dict[str, Any]:
    """Serves ``calls`` through :class:`TransformersBackend` as the student agent would be
    served; returns ``agreement`` with the recorded outputs, ``valid`` and ``count``."""
    from mesh.slm.transformers_backend import TransformersBackend

    backend = TransformersBackend(
        base,
        threads=threads,
        max_batch_size=32,
        use_chat_template=serving.use_chat_template,
        adapter=None if adapter is None else str(adapter),
    )

    confidence: list[float | None] = [None] * len(calls)

    async def one(index: int, call: CallRecord) -> str | None:
        request = GenerationRequest(
            prompt=serving.prompt.format(input=call.input),
            max_new_tokens=serving.max_new_tokens,
            stop=tuple(serving.stop),
            output=serving.constraint(call.input),
        )
        try:
            generation = await backend.generate(request)
        except (InputError, InvalidOutputError, GenerationFailedError):
            # Refused (too long, cut off, no span to copy) or failed: neither valid nor agreeing.
            return None
        confidence[index] = generation.usage.mean_logprob
        if generation.value is not None and serving.output and "schema" in serving.output:
            return json.dumps(generation.value, ensure_ascii=False, separators=(",", ":"))
        return generation.text

    async def run() -> list[str | None]:
        try:
            return list(await asyncio.gather(*(one(i, call) for i, call in enumerate(calls))))
        finally:
            await backend.aclose()

    outputs = asyncio.run(run())
    parameters = backend.parameters or 0
    agreed = [
        out is not None and call.output is not None and agrees(serving, out, call.output)
        for out, call in zip(outputs, calls, strict=True)
    ]
    valid = sum(1 for out in outputs if out is not None)
    return {
        "agreement": round(sum(agreed) / len(calls), 4),
        "valid": round(valid / len(calls), 4),
        "count": len(calls),
        "parameters": parameters,
        # (mean token logprob, agreed) per held-out call: what `convert deploy` calibrates
        # the student's escalation threshold on. None: the call was refused or failed.
        "confidence": [
            [None if c is None else round(c, 5), a] for c, a in zip(confidence, agreed, strict=True)
        ],
    }


def calibrate(confidence: list[list[Any]], target: float) -> dict[str, Any]:
    """The escalation threshold that keeps the most calls on the student while the calls it
    keeps agree with the teacher at least ``target`` of the time (on held-out calls).

    Calls are ranked by confidence; the threshold sits between the last call kept and the
    first escalated. Refused or failed calls always escalate (the router escalates failures).
    """
    scored = sorted(((c, bool(a)) for c, a in confidence if c is not None), key=lambda x: -x[0])
    best, agreed = 0, 0
    for k, (_, agree) in enumerate(scored, start=1):
        agreed += agree
        if agreed / k >= target:
            best = k
    kept = scored[:best]
    if best == 0:
        threshold = 0.0  # nothing meets the target: every call goes to the teacher
    elif best == len(scored):
        threshold = round(scored[-1][0] - 1.0, 5)  # everything the student answers is kept
    else:
        threshold = round((scored[best - 1][0] + scored[best][0]) / 2, 5)
    return {
        "escalate_below": min(threshold, 0.0),
        "target_agreement": target,
        "student_share": round(len(kept) / len(confidence), 4) if confidence else 0.0,
        "kept_agreement": round(sum(a for _, a in kept) / len(kept), 4) if kept else None,
    }


def load_teacher_spec(services_dir: Path, agent: str) -> ServiceSpec | None:
    """The teacher's spec under ``services_dir`` if it is there (the calls name the agent)."""
    try:
        return ServiceSpec.load(services_dir / agent)
    except SpecError:
        return None
