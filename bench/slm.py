"""The SLM runtime: one request at a time vs continuous batching, free text vs constrained.

``python -m bench.slm`` (or a ``slmesh bench slm`` command calling :func:`main`) builds two
random-weight Llama models offline (a 25k-parameter one and a 2.4M-parameter one, both with
the character tokenizer of the project's micro-SLMs), then for each model and output kind
sends the same ``requests`` prompts first one by one, then all at once, through
:class:`mesh.slm.TransformersBackend` (one worker thread, ``threads`` torch threads), and
checks that both runs produced identical greedy text. It prints the table and rewrites the
``## SLM runtime`` section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.report import write_section

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## SLM runtime"
SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"enum": ["refund_request", "order_status", "cancel_order", "other"]},
        "order_id": {"type": ["string", "null"], "x-grounded": True, "maxLength": 12},
        "urgent": {"type": "boolean"},
        "note": {"type": "string", "maxLength": 24},
    },
    "required": ["intent", "order_id", "urgent", "note"],
    "additionalProperties": False,
}
SCHEMA_BUDGET = 128
"""Token budget of the schema rows: the longest valid output is ~110 characters."""
MODELS = {"25k": (32, 2), "2.4M": (256, 4)}
"""Label -> (hidden size, layers) of the random-weight Llama models measured."""


@dataclass
class Row:
    model: str
    parameters: int
    output: str  # "free" or "schema"
    requests: int
    tokens: int
    sequential_s: float
    batched_s: float
    sequential_ttft_ms: float
    batched_ttft_ms: float
    batched_p50_ms: float

    @property
    def speedup(self) -> float:
        return self.sequential_s / self.batched_s


def _prompts(n: int) -> list[str]:
    return [f"Customer {i}: where is my order ORD-{104200 + i}? " * (1 + i % 3) for i in range(n)]


async def _measure(folder: Path, label: str, output: str, requests: int, tokens: int,
                   threads: int) -> Row:
    from mesh.slm import Generation, GenerationRequest, JsonOutput, TransformersBackend

    backend = TransformersBackend(str(folder), threads=threads, max_wait_ms=5,
                                  max_batch_size=max(requests, 1))
    try:
        budget = tokens if output == "free" else SCHEMA_BUDGET
        batch = [GenerationRequest(prompt=p, max_new_tokens=budget,
                                   output=JsonOutput(SCHEMA, p) if output == "schema" else None)
                 for p in _prompts(requests)]
        await backend.generate(batch[0])  # warm-up (vocabulary, first forward pass)
        started = time.perf_counter()
        alone = [await backend.generate(r) for r in batch]
        sequential = time.perf_counter() - started

        async def timed(request: GenerationRequest) -> tuple[float, Generation]:
            begin = time.perf_counter()
            generation = await backend.generate(request)
            return time.perf_counter() - begin, generation

        started = time.perf_counter()
        together = await asyncio.gather(*(timed(r) for r in batch))
        batched = time.perf_counter() - started
        if [g.text for g in alone] != [g.text for _, g in together]:
            raise AssertionError("batched greedy output differs from unbatched output")
        return Row(
            model=label, parameters=backend.parameters or 0, output=output,
            requests=requests, tokens=sum(g.usage.output_tokens for g in alone),
            sequential_s=sequential, batched_s=batched,
            sequential_ttft_ms=statistics.median(g.usage.ttft_ms or 0 for g in alone),
            batched_ttft_ms=statistics.median(g.usage.ttft_ms or 0 for _, g in together),
            batched_p50_ms=statistics.median(t for t, _ in together) * 1000,
        )
    finally:
        await backend.aclose()


def main(requests: int = 16, tokens: int = 48, threads: int = 1,
         output: Path = Path("docs/benchmarks.md")) -> list[Row]:
    """Measures every model and output kind, prints the table, rewrites the section.

    ``tokens`` is the free-text budget; schema rows run until their JSON is complete.
    """
    sys.path.insert(0, str(ROOT))
    from tests.support.tiny_slm import save_tiny_model

    rows: list[Row] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="slmesh-bench-slm-") as tmp:
        for label, (hidden, layers) in MODELS.items():
            folder = save_tiny_model(Path(tmp) / label, "llama", "char", hidden_size=hidden,
                                     layers=layers)
            for kind in ("free", "schema"):
                row = asyncio.run(_measure(folder, label, kind, requests, tokens, threads))
                print(f"  {label:<4} {kind:<6} one by one {row.tokens / row.sequential_s:7.0f} "
                      f"tok/s   batched {row.tokens / row.batched_s:7.0f} tok/s   "
                      f"x{row.speedup:.1f}", flush=True)
                rows.append(row)
    text = render(rows, threads=threads, elapsed=time.monotonic() - started)
    print()
    print(text)
    write_section(Path(output), SECTION, text)
    print(f"written to {output}")
    return rows


def render(rows: list[Row], *, threads: int, elapsed: float) -> str:
    import torch

    lines = [
        SECTION,
        "",
        f"{dt.date.today().isoformat()}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {threads} torch thread(s), float32 on CPU; "
        f"{elapsed:.0f} s in all. Random-weight Llama models with a character tokenizer; "
        "each row sends the same prompts (3 lengths) one by one, then all at once "
        "(continuous batching); greedy output is checked identical. `schema` decodes under a "
        "JSON schema with an enum, a grounded (copied) order id, a boolean and a bounded "
        "string.",
        "",
        "| model | output | requests | tokens | one by one tok/s | batched tok/s | speed-up "
        "| TTFT p50 alone | TTFT p50 batched | latency p50 batched |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} ({r.parameters:,} params) | {r.output} | {r.requests} | {r.tokens} "
            f"| {r.tokens / r.sequential_s:,.0f} | {r.tokens / r.batched_s:,.0f} "
            f"| x{r.speedup:.1f} | {r.sequential_ttft_ms:.1f} ms | {r.batched_ttft_ms:.1f} ms "
            f"| {r.batched_p50_ms:.0f} ms |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
