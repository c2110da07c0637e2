"""LoRA students (mesh.convert.lora), adapter loading in the runtime, and deploying them."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel
from safetensors.torch import load_file

from mesh.config import ServiceSpec, Settings
from mesh.convert.deploy import deploy_student
from mesh.convert.lora import (
    CHECKPOINT,
    ConversionError,
    StudentPlan,
    load_cluster_calls,
    load_teacher_spec,
    train_student,
)
from mesh.slm import GenerationRequest
from mesh.slm.executor import SLMExecutor
from mesh.slm.loading import load_model
from mesh.slm.transformers_backend import TransformersBackend
from tests.support.tiny_cluster import (
    LABELS,
    PROMPT,
    SKILL,
    messages,
    record_cluster,
    write_teacher_spec,
)
from tests.support.tiny_slm import save_tiny_model

PLAN = StudentPlan(
    steps=40,
    batch_size=8,
    lr=1e-2,
    warmup_steps=4,
    holdout=0.25,
    checkpoint_every_s=0,
    compare_base=False,
)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """``(base, student, record)``: one student trained on the tiny cluster."""
    root = tmp_path_factory.mktemp("student")
    base = save_tiny_model(root / "base", "llama", "char", hidden_size=32)
    store = record_cluster(root / "calls.db")
    teacher = load_teacher_spec(write_teacher_spec(root / "services").parent, "teacher")
    record = train_student(
        store, "intents", str(base), root / "models" / "intents", plan=PLAN, teacher_spec=teacher
    )
    store.close()
    return base, root / "models" / "intents", record


def test_split_keeps_only_usable_calls_and_is_seeded(tmp_path: Path) -> None:
    store = record_cluster(tmp_path / "calls.db", count=40)
    first = load_cluster_calls(store, "intents", holdout=0.25, seed=3)
    again = load_cluster_calls(store, 1, holdout=0.25, seed=3)
    other = load_cluster_calls(store, "intents", holdout=0.25, seed=4)
    assert (len(first.train), len(first.heldout)) == (30, 10)
    assert first.dropped == {"unusable": 2, "other_prompt": 0}
    assert first.recorded == 42
    assert [c.id for c in first.heldout] == [c.id for c in again.heldout]
    assert [c.id for c in first.heldout] != [c.id for c in other.heldout]
    assert not {c.id for c in first.train} & {c.id for c in first.heldout}
    assert first.teacher_model == "teacher-model"
    assert first.teacher_parameters == 999_999
    with pytest.raises(ConversionError, match="convert analyze"):
        load_cluster_calls(store, "nope", holdout=0.2, seed=0)


def test_training_lowers_the_loss_saves_the_adapter_and_scores_it_served(
    trained: tuple[Path, Path, dict],
) -> None:
    base, student, record = trained
    assert (student / "adapter_model.safetensors").is_file()
    adapter_config = json.loads((student / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "../../base"  # portable, not a machine path
    assert not (student / CHECKPOINT).exists()
    assert record["final_loss"] < 0.5 * record["first_loss"]
    assert record["steps"] == 40
    assert record["calls"]["train"] == 30
    heldout = record["metrics"]["heldout"]
    assert heldout["count"] == 10
    assert heldout["valid"] == 1.0
    assert 0.0 <= heldout["agreement"] <= 1.0
    on_disk = json.loads((student / "training.json").read_text())
    assert on_disk["metrics"] == record["metrics"]
    assert on_disk["lora"]["rank"] == 16
    assert on_disk["teacher"] == {
        "agent": "teacher",
        "model": "teacher-model",
        "parameters": 999_999,
    }
    serving = on_disk["serving"]
    assert serving["prompt"] == PROMPT
    assert serving["output"] == {"labels": LABELS}
    assert serving["stop"] == ["\n"]
    assert serving["max_new_tokens"] >= 24
    assert [s["id"] for s in serving["skills"]] == [SKILL]
    assert on_disk["parameters"] == load_model(str(base)).parameters


def test_an_interrupted_run_resumes_at_its_step_and_ends_like_an_uninterrupted_one(
    tmp_path: Path,
) -> None:
    base = save_tiny_model(tmp_path / "base", "llama", "char", hidden_size=32)
    store = record_cluster(tmp_path / "calls.db", count=24)
    plan = replace(PLAN, steps=10, holdout=0.0)
    whole = train_student(store, "intents", str(base), tmp_path / "whole", plan=plan)

    class Stop(Exception):
        pass

    def stop_at_4(step: int, loss: float) -> None:
        if step == 4:
            raise Stop

    with pytest.raises(Stop):
        train_student(store, "intents", str(base), tmp_path / "cut", plan=plan, on_step=stop_at_4)
    saved = torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=False)
    assert saved["step"] == 4
    seen: list[int] = []
    resumed = train_student(
        store,
        "intents",
        str(base),
        tmp_path / "cut",
        plan=plan,
        on_step=lambda step, loss: seen.append(step),
    )
    assert seen == list(range(5, 11))
    assert resumed["steps"] == 10
    a = load_file(tmp_path / "whole" / "adapter_model.safetensors")
    b = load_file(tmp_path / "cut" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["final_loss"] == whole["final_loss"]
    store.close()


def _greedy(model: torch.nn.Module, tokenizer, prompt: str, tokens: int = 12) -> str:
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.generate(
            ids, max_new_tokens=tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_the_runtime_serves_base_plus_adapter_as_the_trained_peft_model(
    trained: tuple[Path, Path, dict],
) -> None:
    base, student, _ = trained
    prompts = [PROMPT.format(input=text) for text, _ in messages(4, offset=50)]
    reference = load_model(str(base))
    peft = PeftModel.from_pretrained(reference.model, str(student)).eval()
    expected = [_greedy(peft, reference.tokenizer, p) for p in prompts]
    plain = load_model(str(base))
    untuned = [_greedy(plain.model, plain.tokenizer, p) for p in prompts]
    assert expected != untuned

    backend = TransformersBackend(str(base), adapter=str(student), threads=1)

    async def serve() -> list:
        try:
            return list(
                await asyncio.gather(
                    *(
                        backend.generate(GenerationRequest(prompt=p, max_new_tokens=12))
                        for p in prompts
                    )
                )
            )
        finally:
            await backend.aclose()

    served = asyncio.run(serve())
    assert [g.text for g in served] == expected
    usage = served[0].usage
    assert usage.model == "intents"
    assert usage.parameters == plain.parameters
    assert not isinstance(backend.loaded.model, PeftModel)  # merged: the engine sees a plain model


def test_a_missing_adapter_is_a_clear_load_error(tmp_path: Path) -> None:
    from mesh.slm.loading import ModelLoadError

    base = save_tiny_model(tmp_path / "base", "llama", "char")
    with pytest.raises(ModelLoadError, match=r"adapter_config\.json"):
        load_model(str(base), adapter=str(tmp_path / "none"))


def test_deploy_writes_a_spec_the_runtime_serves_under_the_teachers_skill(
    trained: tuple[Path, Path, dict], tmp_path: Path
) -> None:
    _, student, record = trained
    services = tmp_path / "services"
    spec = deploy_student(student, "intents-student", services)
    again = ServiceSpec.load(services / "intents-student")
    assert again.model_dump() == spec.model_dump()
    assert [s.id for s in spec.skills] == [SKILL]
    assert spec.skills[0].name == "Classify intent"
    options = spec.options
    assert (again.path / options["adapter"]).resolve() == student.resolve()
    assert (again.path / options["model"]).resolve() == (student / record["base"]).resolve()
    assert options["output"] == {"labels": LABELS}
    assert options["stop"] == ["\n"]
    assert "teacher" in spec.description
    assert "agreement" in spec.description
    executor = SLMExecutor(spec, Settings())

    async def ask() -> str:
        try:
            return (await executor.backend.generate(executor.request_for("refund ORD-9"))).text
        finally:
            await executor.aclose()

    assert asyncio.run(ask()) in LABELS
    assert executor.backend.model_name == "intents"


def test_deploy_refuses_to_overwrite_a_service_without_force(
    trained: tuple[Path, Path, dict], tmp_path: Path
) -> None:
    _, student, _ = trained
    services = tmp_path / "services"
    (services / "busy").mkdir(parents=True)
    (services / "busy" / "agent.yaml").write_text("name: busy\n")
    with pytest.raises(ConversionError, match="--force"):
        deploy_student(student, "busy", services)
    assert (services / "busy" / "agent.yaml").read_text() == "name: busy\n"
    deploy_student(student, "busy", services, force=True)
    assert yaml.safe_load((services / "busy" / "agent.yaml").read_text())["options"]["adapter"]


def test_calibration_keeps_the_confident_calls_that_meet_the_target() -> None:
    from mesh.convert.lora import calibrate

    # Confident calls agree, unsure ones mostly do not; one refused call (None).
    confidence = [
        [-0.01, True],
        [-0.02, True],
        [-0.05, True],
        [-0.1, True],
        [-0.3, False],
        [-0.4, True],
        [-0.9, False],
        [-1.2, False],
        [None, False],
    ]
    result = calibrate(confidence, 0.95)
    assert result["escalate_below"] == -0.2  # between -0.1 (kept) and -0.3 (escalated)
    assert result["student_share"] == round(4 / 9, 4)
    assert result["kept_agreement"] == 1.0
    # A looser target keeps more: 5 of the first 6 agree (0.83).
    assert calibrate(confidence, 0.8)["escalate_below"] == -0.65
    # Nothing meets an impossible target: everything escalates.
    assert calibrate([[-0.5, False]], 0.9)["escalate_below"] == 0.0
    # Everything agrees: the threshold sits under the least confident call.
    assert calibrate([[-0.5, True], [-0.2, True]], 0.9)["escalate_below"] == -1.5
