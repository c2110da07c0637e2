"""The micro-SLM trainer and its char-level tokenizer, on models small enough for CI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from mesh.train.data.dataset import TRAIN
from mesh.train.data.tasks import load_task
from mesh.train.micro import (
    CHECKPOINT,
    TRAINING_RECORD,
    MicroConfig,
    TrainPlan,
    build_model,
    encode,
    fit,
    save,
)
from mesh.train.tokenizer import build_tokenizer, build_word_tokenizer

TINY = MicroConfig(hidden=48, layers=2, heads=2, intermediate=96, context=1024)


def _plan(steps: int, **overrides: object) -> TrainPlan:
    defaults: dict[str, object] = {
        "steps": steps,
        "batch_size": 4,
        "lr": 3e-3,
        "warmup_steps": 3,
        "eval_every_s": 0,
        "checkpoint_every_s": 0,
    }
    return TrainPlan(**{**defaults, **overrides})  # type: ignore[arg-type]


def test_tokenizer_round_trips_accented_text_one_token_per_character() -> None:
    tokenizer = build_tokenizer()
    text = 'Hélène Nguyễn, Łódź — Ærø Øyvind Ó Súilleabháin {"amount":19.99}\n€42'
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert len(ids) == len(text) + 1
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_tokenizer_maps_unknown_characters_to_unk() -> None:
    tokenizer = build_tokenizer()
    ids = tokenizer("a😀中b", add_special_tokens=False)["input_ids"]
    assert ids[1:3] == [tokenizer.unk_token_id] * 2
    assert len(ids) == 4
    assert tokenizer.decode(ids, skip_special_tokens=True) == "ab"


def test_tokenizer_normalises_decomposed_accents() -> None:
    tokenizer = build_tokenizer()
    assert tokenizer("e\u0301")["input_ids"] == tokenizer("é")["input_ids"]


def test_tokenizer_saves_and_loads(tmp_path: Path) -> None:
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "Zoë Müller ORD-123456 😀"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id) == (0, 1, 2)


def _word_texts() -> list[str]:
    task = load_task("extractor")
    return [e.prompt + e.target for e in task.examples(TRAIN, 0, 300)]


@pytest.mark.parametrize("copy_safe", [False, True])
def test_word_tokenizer_is_deterministic_and_never_loses_text(copy_safe: bool) -> None:
    texts = _word_texts()
    tokenizer = build_word_tokenizer(texts, vocab_size=600, copy_safe=copy_safe)
    again = build_word_tokenizer(texts, vocab_size=600, copy_safe=copy_safe)
    assert tokenizer.get_vocab() == again.get_vocab()
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    text = "Zsófia Ødegård wants ORD-123456 refunded: 42.50 €"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert len(ids) < len(text)
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer("a😀b", add_special_tokens=False)["input_ids"][1] == tokenizer.unk_token_id


def test_copy_safe_words_are_the_same_tokens_wherever_they_stand() -> None:
    tokenizer = build_word_tokenizer(_word_texts(), vocab_size=600, copy_safe=True)
    message = tokenizer("Hi, this is Hélène Kowalski, ORD-123456.", add_special_tokens=False)
    output = tokenizer(
        '{"name":"Hélène Kowalski","order_id":"ORD-123456"}', add_special_tokens=False
    )
    for value in ("Hélène Kowalski", "ORD-123456"):
        alone = tokenizer(value, add_special_tokens=False)["input_ids"]
        for ids in (message["input_ids"], output["input_ids"]):
            assert any(ids[i : i + len(alone)] == alone for i in range(len(ids))), value


def test_loss_covers_only_target_and_end_of_sequence() -> None:
    tokenizer = build_tokenizer()
    example = load_task("classifier").example(TRAIN, 0, 0)
    ids, labels = encode(example, tokenizer)
    prompt_length = len(example.prompt) + 1
    assert labels[:prompt_length] == [-100] * prompt_length
    assert labels[prompt_length:] == ids[prompt_length:]
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[prompt_length:-1]) == example.target


@pytest.mark.parametrize("tokenizer", ["chars", "words"])
def test_tiny_model_learns_and_saves(tmp_path: Path, tokenizer: str) -> None:
    losses: list[float] = []
    config = replace(TINY, tokenizer=tokenizer, word_vocab=600)
    record = fit(
        load_task("classifier"),
        out_dir=tmp_path,
        plan=_plan(20),
        config=config,
        final_streams=(),
        on_step=lambda step, loss: losses.append(loss),
    )
    assert len(losses) == 20
    assert record["steps"] == 20
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4
    saved = json.loads((tmp_path / TRAINING_RECORD).read_text())
    assert saved["parameters"] == record["parameters"] > 0
    assert saved["seed"] == 0
    files = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert not (tmp_path / CHECKPOINT).exists()
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    model = LlamaForCausalLM.from_pretrained(tmp_path)
    assert model.config.vocab_size == len(loaded)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    tokenizer = build_tokenizer()
    model = build_model(TINY, tokenizer, seed=3)
    save(model, tokenizer, tmp_path)
    loaded = LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor.to(torch.bfloat16).float()), name
    assert (tmp_path / "model.safetensors").stat().st_size < 2 * sum(
        p.numel() for p in model.parameters()
    ) + 100_000
    ids = AutoTokenizer.from_pretrained(tmp_path)("Intent: ", return_tensors="pt")["input_ids"]
    assert loaded(input_ids=ids).logits.shape[-1] == len(tokenizer)


class _Stop(Exception):
    pass


def test_interrupted_training_resumes_to_the_same_weights(tmp_path: Path) -> None:
    task = load_task("classifier")
    straight = tmp_path / "straight"
    fit(task, out_dir=straight, plan=_plan(8), config=TINY, final_streams=())

    resumed = tmp_path / "resumed"
    plan = _plan(8, checkpoint_every_s=1e-9)

    def stop_at_five(step: int, _: float) -> None:
        if step == 5:
            raise _Stop

    with pytest.raises(_Stop):
        fit(task, out_dir=resumed, plan=plan, config=TINY, final_streams=(), on_step=stop_at_five)
    assert (resumed / CHECKPOINT).exists()
    record = fit(task, out_dir=resumed, plan=plan, config=TINY, final_streams=())
    assert record["steps"] == 8
    a = LlamaForCausalLM.from_pretrained(straight).state_dict()
    b = LlamaForCausalLM.from_pretrained(resumed).state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_training_continues_from_a_saved_model_and_counts_its_cost(tmp_path: Path) -> None:
    task = load_task("classifier")
    first = tmp_path / "first"
    fit(task, out_dir=first, plan=_plan(4), config=TINY, final_streams=())
    start = LlamaForCausalLM.from_pretrained(first).state_dict()
    second = tmp_path / "second"
    record = fit(
        task, out_dir=second, plan=_plan(3, lr=0.0), config=TINY, final_streams=(), init_from=first
    )
    assert record["steps"] == 3
    assert record["total_steps"] == 7
    assert record["init_from"]["model"] == "first"
    assert record["init_from"]["steps"] == 4
    assert record["total_wall_time_s"] >= record["wall_time_s"]
    after = LlamaForCausalLM.from_pretrained(second).state_dict()  # lr 0: unchanged weights
    assert all(torch.equal(start[name], after[name]) for name in start)
    with pytest.raises(ValueError, match="train from scratch"):
        fit(
            task,
            out_dir=tmp_path / "third",
            plan=_plan(1),
            final_streams=(),
            config=replace(TINY, tokenizer="words"),
            init_from=first,
        )


def test_precision_picks_bf16_only_where_the_cpu_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from mesh.train import precision

    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    assert precision.resolve("auto") == "fp32"
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    assert precision.resolve("auto") == "bf16"
    assert precision.resolve("fp32") == "fp32"
    assert precision.resolve("bf16") == "bf16"
    with pytest.raises(ValueError, match="precision"):
        precision.resolve("fp16")  # type: ignore[arg-type]
    layer = torch.nn.Linear(4, 4)
    with precision.autocast("bf16"):
        assert layer(torch.ones(1, 4)).dtype == torch.bfloat16
    with precision.autocast("fp32"):
        assert layer(torch.ones(1, 4)).dtype == torch.float32


def test_training_record_names_the_precision_used(tmp_path: Path) -> None:
    record = fit(
        load_task("classifier"),
        out_dir=tmp_path,
        plan=_plan(2, precision="fp32"),
        config=TINY,
        final_streams=(),
    )
    assert record["precision"] == "fp32"
