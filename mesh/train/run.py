"""``python -m mesh.train.run AGENT``: train one micro-SLM into ``models/<agent>``.

Each agent's recipe (dimensions, batch size, learning rate, steps) is fixed here, so
``train(agent)`` with its defaults reproduces the shipped weights: the data stream, the
initialisation and the bucketing all follow the seed.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mesh.train.base_model import BASE, train_base
from mesh.train.data.contract import SERVICES_DIR
from mesh.train.data.dataset import TEST, Task
from mesh.train.data.tasks import AGENTS, load_task
from mesh.train.encoder import EncoderPlan, fit_encoder
from mesh.train.evaluate import score_served
from mesh.train.micro import TRAINING_RECORD, MicroConfig, TrainPlan, fit
from mesh.train.precision import Precision


@dataclass(frozen=True)
class Recipe:
    """How one agent's shipped model was trained."""

    config: MicroConfig
    plan: TrainPlan


_READER = MicroConfig(hidden=192, layers=4, heads=4, intermediate=512, tokenizer="words")
_COPIER = MicroConfig(hidden=192, layers=4, heads=4, intermediate=512, tokenizer="subwords")

RECIPES: dict[str, Recipe] = {
    "classifier": Recipe(_READER, TrainPlan(steps=5944, batch_size=8, lr=3e-3)),
    "extractor": Recipe(_COPIER, TrainPlan(steps=3026, batch_size=8, lr=3e-3)),
    "tool-caller": Recipe(_COPIER, TrainPlan(steps=7749, batch_size=8, lr=3e-3)),
    "responder": Recipe(_COPIER, TrainPlan(steps=2258, batch_size=8, lr=3e-3)),
    "planner": Recipe(_COPIER, TrainPlan(steps=1522, batch_size=8, lr=3e-3)),
}
"""Per agent: dimensions and plan. ``steps`` is what the shipped weights were trained for."""

ENCODER_PLANS: dict[str, EncoderPlan] = {
    "classifier": EncoderPlan(examples=3000, epochs=2),
    "extractor": EncoderPlan(examples=4000, epochs=3),
}
"""Agents whose spec says ``backend: encoder``: the fine-tuning plan of the shipped adapter.
The micro-SLM recipes above still train those agents' causal models (``--kind micro``)."""


def train(
    agent: str,
    *,
    out_dir: Path | None = None,
    minutes: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    served: bool = True,
    init_from: Path | None = None,
    lr: float | None = None,
    precision: Precision = "auto",
    kind: str = "auto",
) -> dict[str, Any]:
    """Trains ``agent``'s micro-SLM and returns its ``training.json`` record.

    ``out_dir`` defaults to the model folder named in ``services/<agent>/agent.yaml``.
    Without ``minutes`` or ``steps`` the recipe's step count is used; ``minutes`` alone
    trains for that long (the step count reached is recorded). With ``served`` the test
    split is also scored through the serving runtime (constrained decoding), as
    ``metrics_served``. ``init_from`` continues from a saved model (see :func:`fit`).
    ``precision``: see :mod:`mesh.train.precision`. ``kind``: ``micro`` (the causal micro-SLM),
    ``encoder`` (a fine-tuned encoder, :mod:`mesh.train.encoder`) or ``auto``: what the agent's spec
    serves.
    """
    if agent == BASE:
        return train_base(
            Path(out_dir or SERVICES_DIR.parent / "models" / BASE),
            steps=steps,
            minutes=minutes,
            seed=seed,
            precision=precision,
        )
    task = load_task(agent)
    task.contract = task.contract.as_kind(kind)
    if task.contract.backend == "encoder":
        if minutes is not None or steps is not None or init_from is not None:
            raise ValueError(
                "--minutes, --steps and --init-from apply to micro-SLMs; an "
                "encoder is fine-tuned from its base for its plan's epochs "
                "(use --kind micro for the agent's micro-SLM)"
            )
        return _train_encoder(task, out_dir=out_dir, seed=seed, served=served, lr=lr)
    recipe = RECIPES[task.agent]
    plan = recipe.plan
    if minutes is not None or steps is not None:
        plan = replace(plan, minutes=minutes, steps=steps)
    plan = replace(plan, seed=seed, lr=plan.lr if lr is None else lr, precision=precision)
    target = Path(out_dir or task.contract.model_dir)
    record = fit(task, out_dir=target, plan=plan, config=recipe.config, init_from=init_from)
    if served:
        examples = task.examples(TEST, plan.seed + 1, plan.final_eval_count)
        record["metrics_served"] = {
            TEST.name: score_served(target, task, examples, threads=plan.threads)
        }
        (target / TRAINING_RECORD).write_text(
            json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    return record


def _train_encoder(
    task: Task, *, out_dir: Path | None, seed: int, served: bool, lr: float | None
) -> dict[str, Any]:
    if task.agent not in ENCODER_PLANS:
        raise ValueError(f"{task.agent} has no encoder plan (encoders: {sorted(ENCODER_PLANS)})")
    plan = replace(ENCODER_PLANS[task.agent], seed=seed)
    plan = plan if lr is None else replace(plan, lr=lr)
    target = Path(out_dir or task.contract.model_dir)
    record = fit_encoder(task, out_dir=target, plan=plan)
    if served:
        examples = task.examples(TEST, plan.seed + 1, 300)
        record["metrics_served"] = {
            TEST.name: score_served(target, task, examples, threads=plan.threads)
        }
        (target / TRAINING_RECORD).write_text(
            json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    return record


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m mesh.train.run AGENT [--minutes N] [--steps N] [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m mesh.train.run", description=__doc__)
    parser.add_argument("agent", choices=[*AGENTS, "tool_caller", BASE])
    parser.add_argument("--minutes", type=float, default=None, help="train for this long")
    parser.add_argument("--steps", type=int, default=None, help="train for this many steps")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="model folder (default: the agent's spec's, models/base for base)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="bf16 autocast or float32 (auto: bf16 where the CPU has native bf16)",
    )
    parser.add_argument(
        "--kind",
        choices=["auto", "micro", "encoder"],
        default="auto",
        help="micro: the causal micro-SLM; encoder: a LoRA-tuned encoder (classifier, "
        "extractor); auto: what the agent's spec serves",
    )
    parser.add_argument(
        "--lr", type=float, default=None, help="peak learning rate (default: the recipe's)"
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="continue training this saved model (e.g. models/AGENT) instead of random weights",
    )
    args = parser.parse_args(argv)
    record = train(
        args.agent,
        out_dir=args.out,
        minutes=args.minutes,
        steps=args.steps,
        seed=args.seed,
        init_from=args.init_from,
        lr=args.lr,
        precision=args.precision,
        kind=args.kind,
    )
    print(
        f"{record['agent']}: {record['parameters']:,} parameters, "
        f"{record['size_bytes'] / 1e6:.1f} MB, "
        f"{record['steps']} steps in {record['wall_time_s']:.0f}s"
    )
    for kind in ("metrics", "metrics_served"):
        for stream, metrics in record.get(kind, {}).items():
            print(f"  {kind} {stream}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
