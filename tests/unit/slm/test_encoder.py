"""Encoder SLMs: fine-tuning writes a loadable folder; serving answers inside the contract.

A tiny random BERT (the packaged MiniLM's real tokenizer, 2 layers of width 32) keeps this
fast; the shipped adapters are exercised by the service tests.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest
from transformers import AutoTokenizer, BertConfig, BertModel

from mesh.slm import Choice, GenerationRequest, InputError, JsonOutput, SchemaError
from mesh.slm.encoder import EncoderSpec, load_encoder, resolve_base
from mesh.slm.encoder_backend import EncoderBackend
from mesh.slm.errors import GenerationFailedError
from mesh.slm.loading import ModelLoadError
from mesh.slm.validation import parse_output
from mesh.train.data.dataset import TEST
from mesh.train.data.tasks import load_task
from mesh.train.encoder import EncoderPlan, fit_encoder, span_targets
from mesh.train.micro import TRAINING_RECORD


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_base("all-MiniLM-L6-v2"))
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def _plan(base: Path) -> EncoderPlan:
    return EncoderPlan(base=str(base), examples=32, epochs=1, batch_size=8, lr=1e-3)


@pytest.fixture(scope="module")
def extractor_dir(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("extractor-encoder")
    fit_encoder(load_task("extractor"), out_dir=out, plan=_plan(tiny_base), progress=False)
    return out


@pytest.fixture(scope="module")
def classifier_dir(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("classifier-encoder")
    fit_encoder(load_task("classifier"), out_dir=out, plan=_plan(tiny_base), progress=False)
    return out


def test_training_writes_adapter_head_and_record(extractor_dir: Path) -> None:
    names = {p.name for p in extractor_dir.iterdir()}
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "head.safetensors",
        "encoder.json",
        TRAINING_RECORD,
    } <= names
    record = json.loads((extractor_dir / TRAINING_RECORD).read_text())
    assert record["kind"] == "encoder"
    assert record["steps"] == 4
    assert 0 < record["trained_parameters"] < record["parameters"]
    spec = EncoderSpec.load(extractor_dir)
    assert spec.task == "spans"
    assert spec.fields[0] == "order_id"
    # The adapter names its base as the plan does, never as a path of the training machine.
    adapter = json.loads((extractor_dir / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == spec.base


def test_span_targets_point_into_the_input_part_of_the_prompt() -> None:
    task = load_task("extractor")
    for example in task.examples(TEST, 1, 20):
        for name, (a, z) in span_targets(example, tuple(example.expected)).items():
            assert example.prompt[a:z] == example.expected[name]
            assert a >= example.prompt.find(example.input)


def _run(backend: EncoderBackend, requests: list[GenerationRequest]) -> list[object]:
    async def go() -> list[object]:
        try:
            return list(
                await asyncio.gather(
                    *(backend.generate(r) for r in requests), return_exceptions=True
                )
            )
        finally:
            await backend.aclose()

    return asyncio.run(go())


def test_extraction_is_schema_valid_grounded_and_the_same_batched_or_alone(
    extractor_dir: Path,
) -> None:
    task = load_task("extractor")
    schema = task.contract.schema
    assert schema is not None
    examples = task.examples(TEST, 1, 12)
    requests = [
        GenerationRequest(prompt=e.prompt, output=JsonOutput(schema, e.input)) for e in examples
    ]
    batched = _run(EncoderBackend(str(extractor_dir), max_batch_size=16, max_wait_ms=50), requests)
    alone = _run(EncoderBackend(str(extractor_dir), max_batch_size=1), requests)
    for example, one, other in zip(examples, batched, alone, strict=True):
        assert not isinstance(one, BaseException), one
        assert not isinstance(other, BaseException), other
        value = parse_output(JsonOutput(schema, example.input), one.text)  # type: ignore[attr-defined]
        assert list(value) == list(schema["properties"])
        assert all(v is None or v in example.input for v in value.values())
        assert one.value == other.value  # type: ignore[attr-defined]
        assert one.usage.batch_size >= 1
        assert one.usage.input_tokens > 0
    assert max(g.usage.batch_size for g in batched) > 1  # type: ignore[union-attr]


def test_labels_come_from_the_requested_set(classifier_dir: Path) -> None:
    backend = EncoderBackend(str(classifier_dir))
    full = Choice(load_task("classifier").contract.labels or ())
    narrow = Choice(("cancel_order", "general_question"))
    backend.check_output(narrow)
    out = _run(
        backend,
        [
            GenerationRequest(prompt="Where is ORD-123456?", output=full),
            GenerationRequest(prompt="Where is ORD-123456?", output=narrow),
        ],
    )
    assert out[0].value in full.labels  # type: ignore[union-attr]
    assert out[1].value in narrow.labels  # type: ignore[union-attr]
    assert -20 < out[1].usage.mean_logprob <= 0  # type: ignore[union-attr]


def test_a_head_refuses_outputs_it_cannot_answer(classifier_dir: Path, extractor_dir: Path) -> None:
    labels = EncoderBackend(str(classifier_dir))
    spans = EncoderBackend(str(extractor_dir))
    schema = load_task("extractor").contract.schema
    assert schema is not None
    try:
        with pytest.raises(SchemaError, match="labels"):
            labels.check_output(Choice(("order_status", "weather")))
        with pytest.raises(SchemaError, match="cannot produce"):
            labels.check_output(JsonOutput(schema))
        fewer = {
            **schema,
            "properties": dict(list(schema["properties"].items())[:3]),
            "required": list(schema["properties"])[:3],
        }
        with pytest.raises(SchemaError, match="fills the fields"):
            spans.check_output(JsonOutput(fewer))
        ungrounded = json.loads(json.dumps(schema))
        ungrounded["properties"]["name"].pop("x-grounded")
        with pytest.raises(SchemaError, match="grounded"):
            spans.check_output(JsonOutput(ungrounded))
        spans.check_output(JsonOutput(schema))
    finally:
        asyncio.run(labels.aclose())
        asyncio.run(spans.aclose())


def test_bad_input_is_refused_and_the_backend_keeps_serving(classifier_dir: Path) -> None:
    backend = EncoderBackend(str(classifier_dir))
    labels = Choice(load_task("classifier").contract.labels or ())
    out = _run(
        backend,
        [
            GenerationRequest(prompt="   ", output=labels),
            GenerationRequest(prompt="word " * 400, output=labels),
            GenerationRequest(prompt="Cancel ORD-100001 please", output=labels, timeout_s=1e-9),
            GenerationRequest(prompt="Cancel ORD-100001 please", output=labels),
        ],
    )
    assert isinstance(out[0], InputError)
    assert isinstance(out[1], InputError)
    assert "context" in str(out[1])
    assert isinstance(out[2], GenerationFailedError)
    assert "deadline" in str(out[2])
    assert out[3].value in labels.labels  # type: ignore[union-attr]


def test_missing_or_broken_folders_are_clear_errors(tmp_path: Path, classifier_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"encoder\.json"):
        load_encoder(str(tmp_path))
    broken = tmp_path / "broken"
    broken.mkdir()
    EncoderSpec.load(classifier_dir).save(broken)
    with pytest.raises(ModelLoadError, match="head"):
        load_encoder(str(broken))
    spec = replace(EncoderSpec.load(classifier_dir), base=str(tmp_path / "no-such-base"))
    spec.save(broken)
    with pytest.raises(ModelLoadError, match="base"):
        load_encoder(str(broken))


def test_each_agent_keeps_both_kinds_of_model_apart() -> None:
    """The classifier is served by its encoder; its micro-SLM trains into its own folder."""
    contract = load_task("classifier").contract
    assert contract.backend == "encoder"
    assert contract.model_dir.name == "classifier-encoder"
    micro = contract.as_kind("micro")
    assert micro.backend == "transformers"
    assert micro.model_dir.name == "classifier"
    assert micro.as_kind("encoder").model_dir == contract.model_dir
    assert contract.as_kind("auto") is contract


def test_training_options_that_only_fit_micro_slms_are_refused_for_an_encoder() -> None:
    from mesh.train.run import train

    with pytest.raises(ValueError, match="--kind micro"):
        train("extractor", minutes=1.0)
    with pytest.raises(ValueError, match="no encoder plan"):
        train("responder", kind="encoder", served=False)


def test_a_span_stays_inside_one_sentence_but_an_abbreviation_before_a_number_ends_none() -> None:
    from mesh.slm.encoder import one_sentence

    assert one_sentence("leopoldstr. 21, 80802 münchen")
    assert one_sentence("No. 5 Main Street")
    assert not one_sentence("next week. Ship it to 5 Main Street")
    assert not one_sentence("5 Main Street\nBerlin")
