"""The SLM runtime on a GPU: a Qwen2.5-0.5B-shaped model next to plain ``model.generate``.

``python -m bench.slm_gpu [--out FILE] [--tiny] [--prompts FILE]`` builds a Qwen2 model with
Qwen2.5-0.5B's shape (24 layers, hidden 896, 14 query / 2 key-value heads, a 151,936-token
vocabulary, tied embeddings: 494M parameters) from random weights in bfloat16 (no hub is reachable;
throughput does not depend on the weights' values), saves it with a character-level tokenizer whose
vocabulary fills the model's (so every sampled id decodes), and loads it back through
:func:`mesh.slm.loading.load_model`. Then, in one run on one device:

- the runtime (:class:`mesh.slm.TransformersBackend`, continuous batching, up to 64 rows): a
  closed loop of 1, 16 and 64 concurrent clients, each request 128 new tokens, greedy;
- plain ``model.generate`` on the same prompts in static batches of 1, 16 and 64 (left
  padding, greedy, exactly 128 new tokens).

It prints the table and writes it as the ``## SLM runtime on a GPU`` section of ``--out``
(default docs/benchmarks.md). ``--tiny`` runs the same code on a tiny model (a smoke test on
CPU). Greedy outputs of the runtime at 1 concurrent and of ``generate`` at batch 1 are compared
for the first prompts (bfloat16 on a GPU may break ties differently; the count is reported).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## SLM runtime on a GPU"
CONCURRENCY = (1, 16, 64)
NEW_TOKENS = 128
QWEN25_05B = dict(
    vocab_size=151_936,
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32_768,
    rope_theta=1_000_000.0,
    tie_word_embeddings=True,
)
TINY = dict(
    vocab_size=2048,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)


@dataclass
class Row:
    engine: str
    concurrency: int
    requests: int
    tokens: int
    elapsed_s: float
    p50_ms: float

    @property
    def tps(self) -> float:
        return self.tokens / self.elapsed_s


def _tokenizer(vocab_size: int) -> Any:
    """One token per character (plus fillers up to ``vocab_size``, so any id decodes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    chars = [chr(c) for c in range(32, 127)] + ["\n", "é", "€", "£", "ü", "ö", "ç", "ñ"]
    vocab = {t: i for i, t in enumerate(specials + chars)}
    for i in range(len(vocab), vocab_size):
        vocab[f"<{i}>"] = i
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )


def build(folder: Path, shape: dict[str, Any]) -> None:
    """A random-weight Qwen2 of ``shape`` in bfloat16, with its tokenizer, saved to ``folder``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(**shape, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    _tokenizer(shape["vocab_size"]).save_pretrained(folder)


def _prompts(count: int, path: Path | None = None) -> list[str]:
    """The extractor's test-split prompts, or the JSON list in ``path`` (a machine without the
    training data's dependencies: ``--write-prompts`` makes that file where they are)."""
    if path is not None:
        return list(json.loads(path.read_text(encoding="utf-8")))[:count]
    from mesh.train.data.dataset import TEST
    from mesh.train.data.tasks import load_task

    task = load_task("extractor")
    return [e.prompt for e in task.examples(TEST, 1, count)]


async def _runtime_rows(backend: Any, prompts: list[str]) -> tuple[list[Row], list[str]]:
    from mesh.slm import GenerationRequest

    rows: list[Row] = []
    first: list[str] = []
    for concurrency in CONCURRENCY:
        batch = prompts[: max(8, 4 * concurrency)]
        latencies: list[float] = []
        texts: dict[int, str] = {}
        tokens = 0
        work = iter(enumerate(batch))

        async def client(
            work: Any = work, latencies: list[float] = latencies, texts: dict[int, str] = texts
        ) -> None:
            nonlocal tokens
            for index, prompt in work:
                begin = time.perf_counter()
                generation = await backend.generate(
                    GenerationRequest(prompt=prompt, max_new_tokens=NEW_TOKENS)
                )
                latencies.append(time.perf_counter() - begin)
                tokens += generation.usage.output_tokens
                texts[index] = generation.text

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        rows.append(
            Row(
                "runtime",
                concurrency,
                len(batch),
                tokens,
                elapsed,
                statistics.median(latencies) * 1000,
            )
        )
        print(f"  runtime  {concurrency:>2} concurrent  {tokens / elapsed:8.0f} tok/s", flush=True)
        if concurrency == 1:
            first = [texts[i] for i in range(len(batch))]
    return rows, first


def _generate_rows(loaded: Any, prompts: list[str]) -> tuple[list[Row], list[str]]:
    import torch

    model, tokenizer = loaded.model, loaded.tokenizer
    device = next(model.parameters()).device
    rows: list[Row] = []
    first: list[str] = []
    for size in CONCURRENCY:
        batch = prompts[: max(8, 4 * size)]
        tokens = 0
        latencies: list[float] = []
        started = time.perf_counter()
        for at in range(0, len(batch), size):
            chunk = batch[at : at + size]
            encoded = tokenizer(chunk, return_tensors="pt", padding=True).to(device)
            begin = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(
                    **encoded,
                    max_new_tokens=NEW_TOKENS,
                    min_new_tokens=NEW_TOKENS,
                    do_sample=False,
                    pad_token_id=loaded.pad_id,
                )
            if device.type == "cuda":
                torch.cuda.synchronize()
            latencies += [time.perf_counter() - begin] * len(chunk)
            new = out[:, encoded["input_ids"].shape[1] :]
            tokens += int(new.numel())
            if size == 1:
                first.append(tokenizer.decode(new[0], skip_special_tokens=True))
        elapsed = time.perf_counter() - started
        rows.append(
            Row("generate", size, len(batch), tokens, elapsed, statistics.median(latencies) * 1000)
        )
        print(f"  generate {size:>2} batch       {tokens / elapsed:8.0f} tok/s", flush=True)
    return rows, first


def _check_float32(folder: Path, device: str, prompts: list[str]) -> tuple[int, int]:
    """The same weights in float32: the runtime, all prompts batched together, against
    ``generate`` one prompt at a time; greedy outputs should match token for token."""
    import torch

    from mesh.slm import GenerationRequest
    from mesh.slm.loading import load_model
    from mesh.slm.transformers_backend import TransformersBackend

    loaded = load_model(str(folder), dtype=torch.float32, device=device, name="fp32-check")
    backend = TransformersBackend(loaded, max_batch_size=len(prompts), max_wait_ms=50)

    async def batched() -> list[str]:
        try:
            return [
                g.text
                for g in await asyncio.gather(
                    *(
                        backend.generate(GenerationRequest(prompt=p, max_new_tokens=32))
                        for p in prompts
                    )
                )
            ]
        finally:
            await backend.aclose()

    served = asyncio.run(batched())
    alone = []
    for prompt in prompts:
        encoded = loaded.tokenizer(prompt, return_tensors="pt").to(device)
        with torch.inference_mode():
            out = loaded.model.generate(
                **encoded, max_new_tokens=32, do_sample=False, pad_token_id=loaded.pad_id
            )
        alone.append(
            loaded.tokenizer.decode(
                out[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True
            )
        )
    return sum(a == b for a, b in zip(served, alone, strict=True)), len(prompts)


def run(
    shape: dict[str, Any], prompts_file: Path | None = None
) -> tuple[list[Row], dict[str, Any]]:
    import torch
    import transformers

    from mesh.slm.loading import load_model
    from mesh.slm.transformers_backend import TransformersBackend

    device = "cuda" if torch.cuda.is_available() else "cpu"
    prompts = _prompts(4 * max(CONCURRENCY), prompts_file)
    with tempfile.TemporaryDirectory(prefix="slmesh-qwen-shape-") as tmp:
        folder = Path(tmp)
        begin = time.perf_counter()
        build(folder, shape)
        loaded = load_model(
            str(folder), dtype=torch.bfloat16, device=device, name="qwen2.5-0.5b-shape"
        )
        load_s = time.perf_counter() - begin
        backend = TransformersBackend(loaded, max_batch_size=max(CONCURRENCY), max_wait_ms=5)

        async def serve() -> tuple[list[Row], list[str]]:
            from mesh.slm import GenerationRequest

            try:  # warm-up: kernels, allocator, the vocabulary view
                await asyncio.gather(
                    *(
                        backend.generate(GenerationRequest(prompt=p, max_new_tokens=8))
                        for p in prompts[:4]
                    )
                )
                return await _runtime_rows(backend, prompts)
            finally:
                await backend.aclose()

        try:
            runtime, runtime_first = asyncio.run(serve())
        except Exception:  # noqa: BLE001 - still measure generate, and show what broke
            import traceback

            traceback.print_exc()
            runtime, runtime_first = [], []
        loaded.tokenizer.padding_side = "left"  # generate pads on the left, as the runtime does
        with torch.inference_mode():  # warm-up for generate
            warm = loaded.tokenizer(prompts[:2], return_tensors="pt", padding=True).to(device)
            loaded.model.generate(
                **warm, max_new_tokens=8, do_sample=False, pad_token_id=loaded.pad_id
            )
        generate, generate_first = _generate_rows(loaded, prompts)
        same32, compared32 = _check_float32(folder, device, prompts[:8])
    same = sum(a == b for a, b in zip(runtime_first, generate_first, strict=False))
    info = {
        "device": torch.cuda.get_device_name(0)
        if device == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "parameters": loaded.parameters,
        "load_s": load_s,
        "same_greedy": same,
        "compared": min(len(runtime_first), len(generate_first)),
        "same_fp32": same32,
        "compared_fp32": compared32,
    }
    return runtime + generate, info


def render(rows: list[Row], info: dict[str, Any], shape_name: str) -> str:
    now = dt.datetime.now(dt.UTC)
    by = {(r.engine, r.concurrency): r for r in rows}
    lines = [
        SECTION,
        "",
        f"`python -m bench.slm_gpu`, {now:%Y-%m-%d %H:%M} UTC, on {info['device']} (the `device` "
        f"tool's machine; torch {info['torch']}, transformers {info['transformers']}, Python "
        f"{info['python']}): a {shape_name} model ({info['parameters']:,} parameters, random "
        "weights, bfloat16, built and loaded through `load_model` in "
        f"{info['load_s']:.0f} s) served by `TransformersBackend` (continuous batching, up to "
        f"{max(CONCURRENCY)} rows), next to plain `model.generate` on the same prompts (the "
        f"extractor's test-split prompts, ~100-250 characters, one token per character) in the "
        f"same run. Every request: {NEW_TOKENS} new tokens, greedy. Runtime rows: a closed loop "
        "of `concurrent` clients; generate rows: static batches of that size, one after another.",
        "",
        "| engine | concurrent / batch | requests | tokens/s | p50 ms per request | runtime vs "
        "generate |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for engine in ("runtime", "generate"):
        for c in CONCURRENCY:
            r = by.get((engine, c))
            if r is None:
                lines.append(f"| {engine} | {c} | failed (see the run's output) | | | |")
                continue
            ratio = f"{r.tps / by[('generate', c)].tps:.2f}x" if engine == "runtime" else ""
            lines.append(
                f"| {engine} | {c} | {r.requests} | {r.tps:,.0f} | {r.p50_ms:,.0f} | {ratio} |"
            )
    lines += [
        "",
        f"Greedy outputs, runtime at 1 concurrent vs generate at batch 1: {info['same_greedy']} of "
        f"{info['compared']} identical (bfloat16 kernels may break near-ties differently; random "
        "weights give near-uniform logits, so near-ties are everywhere). The same weights in "
        f"float32, {info['compared_fp32']} prompts decoded together by the runtime against "
        f"`generate` one at a time, 32 tokens each: {info['same_fp32']} of "
        f"{info['compared_fp32']} identical.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.slm_gpu", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--tiny", action="store_true", help="a tiny model (smoke test)")
    parser.add_argument("--prompts", type=Path, default=None, help="a JSON list of prompts")
    parser.add_argument(
        "--write-prompts",
        type=Path,
        default=None,
        help="write the prompts to this JSON file and stop",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.write_prompts is not None:
        args.write_prompts.write_text(json.dumps(_prompts(4 * max(CONCURRENCY))), encoding="utf-8")
        return
    shape = TINY if args.tiny else QWEN25_05B
    rows, info = run(shape, args.prompts)
    text = render(rows, info, "tiny Qwen2" if args.tiny else "Qwen2.5-0.5B-shaped")
    print(text)
    from mesh.reports import write_section

    write_section(args.out, SECTION, text)


if __name__ == "__main__":
    main()
