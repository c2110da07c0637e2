"""S6 of the conversion loop: a trained student becomes a service spec, ``services/<name>/``.

Everything comes from the student's ``training.json`` (the teacher's skills, prompt,
output, stop, max_new_tokens; the base and the measured agreement), so a student folder
deploys on its own. The student registers the SAME skill ids as its teacher: the planner
sends a skill to the smallest model offering it and escalates to a larger one, so the
student takes the teacher's traffic without any routing change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from mesh.config import SPEC_FILE, ServiceSpec, SkillSpec
from mesh.convert.lora import TRAINING_RECORD, ConversionError, calibrate, relative_path

EXECUTOR = "mesh.slm.executor:SLMExecutor"


def student_spec(
    student_dir: Path, name: str, services_dir: Path, target_agreement: float | None = 0.95
) -> dict[str, Any]:
    """The ``agent.yaml`` content serving ``student_dir`` from ``services_dir/name``.

    With ``target_agreement``, the spec's ``escalate_below`` is calibrated on the held-out
    calls (:func:`mesh.convert.lora.calibrate`): the planner keeps the student's answers
    above it and escalates the rest to the teacher.
    """
    record_file = student_dir / TRAINING_RECORD
    if not record_file.is_file():
        raise ConversionError(
            f"{student_dir} has no {TRAINING_RECORD}: train it with `slmesh convert train` first"
        )
    record = json.loads(record_file.read_text(encoding="utf-8"))
    serving = record["serving"]
    spec_dir = (services_dir / name).resolve()
    base = record["base"]
    base_path = (student_dir / base).resolve()
    model = relative_path(base_path, spec_dir) if base_path.exists() else base
    heldout = record.get("metrics", {}).get("heldout", {})
    teacher = record["teacher"]
    measured = (
        f"agreement {heldout['agreement']:.1%} with the teacher and {heldout['valid']:.1%} "
        f"valid on {heldout['count']} held-out calls"
        if heldout
        else "not evaluated"
    )
    options: dict[str, Any] = {
        "model": model,
        "adapter": relative_path(student_dir.resolve(), spec_dir),
        "backend": "transformers",
        "prompt": serving["prompt"],
        "max_new_tokens": serving["max_new_tokens"],
    }
    if serving["output"] is not None:
        options["output"] = serving["output"]
    if serving["stop"]:
        options["stop"] = serving["stop"]
    if not serving["use_chat_template"]:
        options["use_chat_template"] = False
    calibration = None
    if target_agreement is not None and heldout.get("confidence"):
        calibration = calibrate(heldout["confidence"], target_agreement)
        options["escalate_below"] = calibration["escalate_below"]
        measured += (
            f"; escalates under mean logprob {calibration['escalate_below']} (held-out: keeps "
            f"{calibration['student_share']:.1%} of calls at "
            f"{calibration['kept_agreement'] or 0:.1%} agreement)"
        )
    teacher_size = f", {teacher['parameters']:,} parameters" if teacher.get("parameters") else ""
    return {
        "name": name,
        "kind": "agent",
        "description": (
            f"LoRA student of the agent {teacher['agent']} (model "
            f"{teacher.get('model')}{teacher_size}), trained on its recorded calls of cluster "
            f"{record['cluster']['name']!r} over the base {Path(base).name} (LoRA rank "
            f"{record['lora']['rank']}, {record['parameters']:,} parameters served); {measured}."
        ),
        "executor": EXECUTOR,
        "skills": [
            SkillSpec.model_validate(skill).model_dump(exclude_defaults=True)
            for skill in serving["skills"]
        ],
        "input_modes": serving["input_modes"],
        "output_modes": serving["output_modes"],
        "options": options,
    }


def deploy_student(
    student_dir: Path,
    name: str,
    services_dir: Path = Path("services"),
    *,
    force: bool = False,
    target_agreement: float | None = 0.95,
) -> ServiceSpec:
    """Writes ``services_dir/name/agent.yaml`` for the student, validated; returns the spec.

    Refuses an existing service folder unless ``force``: it may be a hand-written agent.
    """
    target = services_dir / name
    if target.exists() and not force:
        raise ConversionError(
            f"{target} already exists; pick another --name or pass --force to overwrite its "
            "agent.yaml"
        )
    content = student_spec(student_dir, name, services_dir, target_agreement)
    ServiceSpec.model_validate(content)  # fail before writing anything
    target.mkdir(parents=True, exist_ok=True)
    (target / SPEC_FILE).write_text(
        yaml.safe_dump(content, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8"
    )
    return ServiceSpec.load(target)
