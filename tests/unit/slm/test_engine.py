"""The local SLM runtime on tiny random-weight Llama / Qwen2 models: loading, continuous
batching (batched greedy == unbatched greedy), constraints, streaming, limits, usage."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.slm import (
    Choice,
    Generation,
    GenerationCancelledError,
    GenerationRequest,
    IncompleteOutputError,
    InputTooLongError,
    JsonOutput,
    SchemaError,
    TransformersBackend,
    load_model,
    parse_output,
)
from mesh.slm.guide import Guide
from mesh.slm.loading import resolve_source
from tests.support.tiny_slm import save_tiny_model
from tests.unit.slm.test_grammar import SOURCE, random_schema

PROMPTS = [
    "Hello",
    "Where is my order ORD-104233? It is late.",
    "x",
    "Please refund 19.99 for order ORD-100001, the mug arrived broken.",
    "My email is jane.doe@example.com",
]
SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"enum": ["refund_request", "order_status", "other"]},
        "order_id": {"type": ["string", "null"], "x-grounded": True, "maxLength": 20},
        "urgent": {"type": "boolean"},
        "amount": {"type": ["number", "null"], "minimum": 0, "maximum": 10000},
    },
    "required": ["intent", "order_id", "urgent", "amount"],
    "additionalProperties": False,
}
MODELS = [("llama", "char"), ("qwen2", "bpe")]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("slm-models")
    return {
        f"{arch}-{tok}": save_tiny_model(root / f"{arch}-{tok}", arch, tok)  # type: ignore[arg-type]
        for arch, tok in MODELS
    }


@pytest.fixture(scope="module", params=[f"{a}-{t}" for a, t in MODELS])
def backend(
    request: pytest.FixtureRequest, model_dirs: dict[str, Path]
) -> Iterator[TransformersBackend]:
    served = TransformersBackend(
        str(model_dirs[request.param]), max_batch_size=8, max_wait_ms=20, threads=1
    )
    yield served
    served.engine.close()


def test_load_model_reports_what_usage_needs(model_dirs: dict[str, Path]) -> None:
    for key, folder in model_dirs.items():
        loaded = load_model(folder.name, base_dir=folder.parent)
        assert loaded.name == key
        assert loaded.parameters > 1000
        assert loaded.context_length == 512
        assert loaded.vocab_size >= len(loaded.tokenizer)
        assert loaded.tokenizer.eos_token_id in loaded.eos_ids
    assert resolve_source("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert resolve_source("./models/x", Path("/srv/svc")) == "/srv/svc/models/x"


async def _one_by_one(backend: TransformersBackend, requests: list[GenerationRequest]) -> list[str]:
    return [(await backend.generate(r)).text for r in requests]


async def test_batched_greedy_equals_unbatched(backend: TransformersBackend) -> None:
    requests = [GenerationRequest(prompt=p, max_new_tokens=10) for p in PROMPTS]
    alone = await _one_by_one(backend, requests)
    steps = backend.engine.steps
    together = await asyncio.gather(*(backend.generate(r) for r in requests))
    assert [g.text for g in together] == alone
    assert backend.engine.steps - steps <= 11  # one prefill + 10 decodes, shared by all five


async def test_requests_joining_a_running_batch_match_unbatched(
    backend: TransformersBackend,
) -> None:
    requests = [GenerationRequest(prompt=p, max_new_tokens=12) for p in PROMPTS]
    alone = await _one_by_one(backend, requests)

    async def later(request: GenerationRequest, delay: float) -> str:
        await asyncio.sleep(delay)
        return (await backend.generate(request)).text

    staggered = await asyncio.gather(*(later(r, 0.004 * i) for i, r in enumerate(requests)))
    assert list(staggered) == alone
    assert backend.engine.merge_supported


async def test_rows_joining_and_leaving_a_long_running_batch_match_unbatched(
    backend: TransformersBackend,
) -> None:
    """More requests than rows, each with its own budget and start: rows leave at different
    steps (their slots refilled by the last row and by newcomers), and generations long enough
    that the slot cache's window moves and grows several times."""
    requests = [
        GenerationRequest(prompt=PROMPTS[i % len(PROMPTS)], max_new_tokens=budget)
        for i, budget in enumerate((150, 3, 40, 220, 9, 1, 75, 130, 17, 260, 5, 60))
    ]
    alone = await _one_by_one(backend, requests)

    async def later(request: GenerationRequest, delay: float) -> str:
        await asyncio.sleep(delay)
        return (await backend.generate(request)).text

    mixed = await asyncio.gather(*(later(r, 0.003 * (i % 4)) for i, r in enumerate(requests)))
    assert list(mixed) == alone


async def test_decoding_with_a_2d_mask_matches_the_4d_mask(model_dirs: dict[str, Path]) -> None:
    """Model types not known to take a ready 4D mask get the 2D one, which transformers turns
    into the same mask over the slot cache's window."""
    requests = [
        GenerationRequest(prompt=p, max_new_tokens=budget)
        for p, budget in zip(PROMPTS, (30, 5, 12, 40, 20), strict=True)
    ]
    texts = []
    for mask_4d in (True, False):
        served = TransformersBackend(
            str(model_dirs["llama-char"]), max_batch_size=8, max_wait_ms=20, threads=1
        )
        # Forces the 2D-mask path other model types take: the engine has no public switch.
        served.engine._mask_4d = mask_4d  # noqa: SLF001 - see above
        try:
            texts.append(
                [g.text for g in await asyncio.gather(*(served.generate(r) for r in requests))]
            )
        finally:
            served.engine.close()
    assert texts[0] == texts[1]


async def test_a_sliding_window_model_batches_whole_batches_matching_unbatched(
    tmp_path: Path,
) -> None:
    folder = save_tiny_model(tmp_path / "mistral", "mistral", "char")
    served = TransformersBackend(str(folder), max_batch_size=8, max_wait_ms=20, threads=1)
    try:
        requests = [
            GenerationRequest(prompt=p, max_new_tokens=budget)
            for p, budget in zip(PROMPTS, (30, 5, 12, 40, 20), strict=True)
        ]
        requests += [
            GenerationRequest(prompt=p, max_new_tokens=120, output=JsonOutput(SCHEMA, p))
            for p in PROMPTS[:2]
        ]
        alone = await _one_by_one(served, requests)
        together = await asyncio.gather(*(served.generate(r) for r in requests))
        assert [g.text for g in together] == alone  # rows left at different steps
        assert served.engine.merge_supported is False
    finally:
        served.engine.close()


async def test_constrained_batched_equals_unbatched_and_valid(backend: TransformersBackend) -> None:
    requests = [
        GenerationRequest(prompt=p, max_new_tokens=120, output=JsonOutput(SCHEMA, p))
        for p in PROMPTS
    ]
    requests += [
        GenerationRequest(
            prompt=p, max_new_tokens=20, output=Choice(("refund_request", "order_status", "other"))
        )
        for p in PROMPTS[:3]
    ]
    alone = [(await backend.generate(r)).value for r in requests]
    together = [g.value for g in await asyncio.gather(*(backend.generate(r) for r in requests))]
    assert together == alone
    for request, value in zip(requests, together, strict=True):
        text = value if isinstance(value, str) else json.dumps(value)
        assert parse_output(request.output, text) == value
        if isinstance(value, dict) and value["order_id"] is not None:
            assert value["order_id"] in request.prompt  # type: ignore[operator]


async def test_random_schemas_greedy_model_output_is_valid(backend: TransformersBackend) -> None:
    rng = random.Random(42)
    requests = []
    for prompt in [SOURCE, PROMPTS[1] + " " + SOURCE] * 4:
        schema = {"type": "object", "properties": {"v": random_schema(rng)}, "required": ["v"]}
        requests.append(
            GenerationRequest(prompt=prompt, max_new_tokens=360, output=JsonOutput(schema, prompt))
        )
    generations = await asyncio.gather(*(backend.generate(r) for r in requests))
    for request, generation in zip(requests, generations, strict=True):
        assert generation.finish_reason == "stop"
        assert parse_output(request.output, generation.text) == generation.value


async def test_a_grammar_the_parser_refuses_fails_only_its_request(
    backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsers are built on the mask thread after admission: a refused one fails its row with
    the parser's error, while the rows beside it decode on."""
    vocabulary = backend.engine.vocabulary
    build = vocabulary.guide

    def guide(grammar: str) -> Guide:
        if "refund_request" in grammar:
            raise SchemaError("the output grammar was refused: test")
        return build(grammar)

    monkeypatch.setattr(vocabulary, "guide", guide)
    refused = GenerationRequest(
        prompt=PROMPTS[1], max_new_tokens=20, output=Choice(("refund_request", "other"))
    )
    fine = [GenerationRequest(prompt=p, max_new_tokens=8) for p in PROMPTS[:3]]
    fine.append(
        GenerationRequest(prompt=PROMPTS[0], max_new_tokens=20, output=Choice(("yes", "no")))
    )
    results = await asyncio.gather(
        *(backend.generate(r) for r in [refused, *fine]), return_exceptions=True
    )
    assert isinstance(results[0], SchemaError)
    assert "test" in str(results[0])
    assert all(isinstance(g, Generation) for g in results[1:])
    assert results[-1].value in {"yes", "no"}  # type: ignore[union-attr]


async def test_stream_chunks_join_to_the_final_text(backend: TransformersBackend) -> None:
    for request in (
        GenerationRequest(prompt=PROMPTS[1], max_new_tokens=24),
        GenerationRequest(
            prompt=PROMPTS[3], max_new_tokens=120, output=JsonOutput(SCHEMA, PROMPTS[3])
        ),
    ):
        stream = backend.stream(request)
        chunks = [chunk async for chunk in stream]
        generation = await stream.result()
        assert len(chunks) > 1
        assert "".join(chunks) == generation.text


async def test_stop_strings_cut_the_text_and_never_stream_past_it(
    backend: TransformersBackend,
) -> None:
    full = (await backend.generate(GenerationRequest(prompt=PROMPTS[0], max_new_tokens=20))).text
    stop = full[6:8]
    stream = backend.stream(
        GenerationRequest(prompt=PROMPTS[0], max_new_tokens=20, stop=["never-there", stop])
    )
    chunks = [chunk async for chunk in stream]
    generation = await stream.result()
    assert generation.finish_reason == "stop"
    assert generation.text == full[: full.index(stop)] == "".join(chunks)


async def test_max_new_tokens_and_deadline(backend: TransformersBackend) -> None:
    limited = await backend.generate(GenerationRequest(prompt=PROMPTS[2], max_new_tokens=7))
    assert limited.finish_reason == "length"
    assert limited.usage.output_tokens == 7
    late = await backend.generate(
        GenerationRequest(prompt=PROMPTS[2], max_new_tokens=480, timeout_s=0.05)
    )
    assert late.finish_reason == "deadline"
    assert late.usage.output_tokens < 480
    with pytest.raises(IncompleteOutputError, match="cut off"):
        await backend.generate(
            GenerationRequest(
                prompt=PROMPTS[2], max_new_tokens=3, output=JsonOutput(SCHEMA, PROMPTS[2])
            )
        )


async def test_usage_accounting(backend: TransformersBackend) -> None:
    generation = await backend.generate(GenerationRequest(prompt=PROMPTS[1], max_new_tokens=8))
    usage = generation.usage
    assert usage.input_tokens == len(backend.loaded.tokenizer.encode(PROMPTS[1]))
    assert usage.output_tokens == 8
    assert len(generation.logprobs) == 8
    assert usage.ttft_ms is not None
    assert usage.ttft_ms > 0
    assert usage.tokens_per_s is not None
    assert usage.tokens_per_s > 0
    assert usage.model == backend.model_name
    assert usage.parameters == backend.parameters
    assert usage.mean_logprob is not None
    assert usage.mean_logprob <= 0


async def test_too_long_input_and_odd_characters(backend: TransformersBackend) -> None:
    with pytest.raises(InputTooLongError, match="context of 512"):
        await backend.generate(GenerationRequest(prompt="word " * 200, max_new_tokens=300))
    odd = await backend.generate(GenerationRequest(prompt="☃ \x00 \U0001f600 ü", max_new_tokens=4))
    assert odd.finish_reason in {"stop", "length"}
    assert odd.usage.input_tokens >= 7


async def test_cancel_frees_the_slot(backend: TransformersBackend) -> None:
    stream = backend.stream(GenerationRequest(prompt=PROMPTS[0], max_new_tokens=480))
    await anext(stream)
    stream.cancel()
    with pytest.raises(GenerationCancelledError):
        await stream.result()
    after = await backend.generate(GenerationRequest(prompt=PROMPTS[0], max_new_tokens=3))
    assert after.usage.output_tokens == 3


async def test_sampling_is_seeded(backend: TransformersBackend) -> None:
    request = GenerationRequest(
        prompt=PROMPTS[1], max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7
    )
    first, second = await asyncio.gather(backend.generate(request), backend.generate(request))
    assert first.text == second.text


async def test_chat_template_switch(tmp_path: Path) -> None:
    template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    folder = save_tiny_model(tmp_path / "chat", "llama", "char", chat_template=template)
    loaded = load_model(str(folder))
    templated = TransformersBackend(loaded, max_wait_ms=0, threads=1)
    plain = TransformersBackend(loaded, max_wait_ms=0, threads=1, use_chat_template=False)
    try:
        request = GenerationRequest(prompt="hi")
        assert templated.render(request) == ("<user>hi\n<assistant>", False)
        assert plain.render(request) == ("hi", True)
        generation = await templated.generate(GenerationRequest(prompt="hi", max_new_tokens=3))
        assert generation.usage.input_tokens == len("<user>hi\n<assistant>")
    finally:
        templated.engine.close()
        plain.engine.close()


def test_a_missing_model_folder_is_named_in_the_error(tmp_path: Path) -> None:
    from mesh.slm.loading import ModelLoadError

    with pytest.raises(ModelLoadError, match=r"no folder at .*models/absent"):
        load_model("../models/absent", base_dir=tmp_path / "spec")
