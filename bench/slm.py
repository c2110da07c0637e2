"""SLM agents under load: dynamic batching on vs off at 1, 8 and 32 concurrent requests.

``slmesh bench slm`` (or ``python -m bench.slm``) loads each measured agent's shipped
micro-SLM the way the agent serves it (``services/<agent>/agent.yaml``: model folder, prompt,
output constraint, token budget) into :class:`mesh.slm.TransformersBackend` twice: batching off
(``max_batch_size=1``: one request decodes at a time, the others queue) and batching on
(continuous batching, up to 32 rows). For each concurrency level ``c`` a closed loop of ``c``
clients sends the agent's held-out test inputs, each client its next request as soon as the
previous one answered; the off and on rows of one level run back to back on the same inputs,
so their ratio is measured under the same machine load. Greedy outputs of the two runs are
compared request by request. It prints the table and rewrites the ``## SLM runtime`` section
of ``docs/benchmarks.md``.

Measured at the runtime, not through A2A: the agent process adds the same A2A cost per request
with batching on or off (see the ``## A2A hop`` section), which only dilutes the ratio.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh.reports import write_section

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## SLM runtime"
CONCURRENCY = (1, 8, 32)
AGENTS = ("extractor", "responder")
"""The agents measured, each by its causal micro-SLM (the extractor agent itself is served by an
encoder now; its micro-SLM keeps the same contract): the extractor decodes under a JSON schema
with grounded fields (a grammar compiled per request, a token mask per step), the responder writes
grounded text (free text whose facts are copied from its input: a smaller grammar, a mask per step);
both write ~70-100 tokens per request, so decoding, not the prompt, is the bulk of the work."""


@dataclass
class Row:
    agent: str
    concurrency: int
    batching: bool
    requests: int
    output_tokens: int
    elapsed_s: float
    p50_ms: float
    p99_ms: float
    failures: int
    cpu_s: float
    """CPU time of the whole process (worker thread and event loop) during the row."""

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed_s

    @property
    def tps(self) -> float:
        return self.output_tokens / self.elapsed_s

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_s * 1000 / self.requests


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def _run_row(
    agent: str, backend: Any, requests: list[Any], concurrency: int, batching: bool
) -> tuple[Row, list[str]]:
    from mesh.slm import SLMError

    latencies = [0.0] * len(requests)
    texts = [""] * len(requests)
    tokens = [0] * len(requests)
    failures = 0
    work = iter(enumerate(requests))

    async def client() -> None:
        nonlocal failures
        for index, request in work:  # one shared iterator: each request is sent once
            begin = time.perf_counter()
            try:
                generation = await backend.generate(request)
            except SLMError as exc:
                failures += 1
                texts[index] = f"<{type(exc).__name__}>"
            else:
                texts[index] = generation.text
                tokens[index] = generation.usage.output_tokens
            latencies[index] = time.perf_counter() - begin

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    row = Row(
        agent=agent,
        concurrency=concurrency,
        batching=batching,
        requests=len(requests),
        output_tokens=sum(tokens),
        elapsed_s=elapsed,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=_percentile(latencies, 0.99) * 1000,
        failures=failures,
        cpu_s=cpu,
    )
    return row, texts


async def _measure(agent: str, requests: int, threads: int) -> tuple[list[Row], dict[str, Any]]:
    from mesh.slm import Choice, GenerationRequest, JsonOutput
    from mesh.slm.local import local_backend
    from mesh.train.data.contract import load_contract
    from mesh.train.data.dataset import TEST
    from mesh.train.data.tasks import load_task

    # The causal runtime is what batching multiplies: an agent served by an encoder (one
    # forward pass per request, compute-bound already at batch 1) is measured by its micro-SLM.
    contract = load_contract(agent).as_kind("micro")
    task = load_task(agent)
    count = max(requests, 4 * max(CONCURRENCY))
    examples = task.examples(TEST, 1, count)

    def request(example: Any) -> GenerationRequest:
        output: Choice | JsonOutput | None = None
        if contract.labels is not None:
            output = Choice(contract.labels)
        elif contract.schema is not None:
            output = JsonOutput(contract.schema, example.input)
        return GenerationRequest(
            prompt=example.prompt,
            max_new_tokens=contract.max_new_tokens,
            stop=contract.stop,
            output=output,
        )

    off = local_backend(
        contract.backend, str(contract.model_dir), threads=threads, max_batch_size=1
    )
    on = local_backend(
        contract.backend, str(contract.model_dir), threads=threads, max_batch_size=32, max_wait_ms=5
    )
    rows: list[Row] = []
    mismatches = 0
    try:
        for backend in (off, on):  # warm-up: vocabulary, grammar compiler, first passes
            await asyncio.gather(*(backend.generate(request(e)) for e in examples[:4]))
        for concurrency in CONCURRENCY:
            n = max(requests, 4 * concurrency)
            batch = [request(e) for e in examples[:n]]
            row_off, texts_off = await _run_row(agent, off, batch, concurrency, batching=False)
            row_on, texts_on = await _run_row(agent, on, batch, concurrency, batching=True)
            mismatches += sum(a != b for a, b in zip(texts_off, texts_on, strict=True))
            for row in (row_off, row_on):
                print(
                    f"  {agent} {concurrency:>2} concurrent, batching "
                    f"{'on ' if row.batching else 'off'}"
                    f"  {row.rps:6.1f} req/s  {row.tps:7.0f} tok/s  p50 {row.p50_ms:6.0f} ms"
                    f"  p99 {row.p99_ms:6.0f} ms  CPU {row.cpu_ms_per_request:5.0f} ms/req",
                    flush=True,
                )
            rows += [row_off, row_on]
        info = {
            "parameters": on.parameters or 0,
            "model_dir": contract.model_dir,
            "mismatches": mismatches,
        }
    finally:
        await off.aclose()
        await on.aclose()
    return rows, info


def main(
    requests: int = 16,
    tokens: int | None = None,
    threads: int = 1,
    output: Path = Path("docs/benchmarks.md"),
    agents: tuple[str, ...] = AGENTS,
) -> list[Row]:
    """Measures each agent at each concurrency level, prints the table, rewrites the section.

    Each row sends ``max(requests, 4 x concurrency)`` requests. ``tokens`` is not used: the
    agent's own ``max_new_tokens`` applies, and constrained outputs end when their JSON or
    label is complete.
    """
    del tokens
    sys.path.insert(0, str(ROOT))
    load_before = os.getloadavg()
    started = time.monotonic()
    rows: list[Row] = []
    infos: dict[str, dict[str, Any]] = {}
    for agent in agents:
        agent_rows, infos[agent] = asyncio.run(_measure(agent, requests, threads))
        rows += agent_rows
    text = render(
        rows,
        threads=threads,
        infos=infos,
        elapsed=time.monotonic() - started,
        load=(load_before, os.getloadavg()),
    )
    print()
    print(text)
    write_section(Path(output), SECTION, text)
    print(f"written to {output}")
    return rows


def render(
    rows: list[Row],
    *,
    threads: int,
    infos: dict[str, dict[str, Any]],
    elapsed: float,
    load: tuple[tuple[float, ...], tuple[float, ...]],
) -> str:
    import torch

    now = dt.datetime.now(dt.UTC)
    before, after = load
    models = []
    for agent, info in infos.items():
        model = Path(str(info["model_dir"]))
        try:
            model = model.resolve().relative_to(ROOT)
        except ValueError:
            model = Path(model.name)
        models.append(f"`{agent}` (`{model}`, {info['parameters']:,} parameters)")
    mismatches = sum(int(info["mismatches"]) for info in infos.values())
    lines = [
        SECTION,
        "",
        f"`slmesh bench slm`, {now:%Y-%m-%d %H:%M} UTC: the shipped micro-SLMs of "
        + " and ".join(models)
        + ", each served as its agent serves it (prompt, output "
        "constraint, stop strings and token budget from `services/<agent>/agent.yaml`: the "
        "extractor decodes under its JSON schema with grounded fields, the responder writes "
        "grounded text: free text whose numbers, emails and names are copied from its facts), "
        "through `mesh.slm.TransformersBackend`.",
        "",
        f"- Machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"Linux {platform.release()}; Python {platform.python_version()}, torch "
        f"{torch.__version__}, {threads} torch thread(s), float32 on CPU. **Shared machine**: "
        f"other engineers' tests, services and training ran at the same time; load average "
        f"(1/5/15 min) {before[0]:.2f} / {before[1]:.2f} / {before[2]:.2f} at the start, "
        f"{after[0]:.2f} / {after[1]:.2f} / {after[2]:.2f} at the end. Absolute numbers move "
        "with that load; the on/off ratios compare rows run back to back.",
        "- Each row: a closed loop of `concurrent` clients sending the agent's held-out test "
        "inputs (each its next request once the previous one answered). Batching off = "
        "`max_batch_size=1` (requests decode one at a time, the rest queue); on = continuous "
        "batching, up to 32 rows, 5 ms admission wait. Latency is per request, queueing "
        f"included. The whole run took {elapsed:.0f} s; greedy outputs with batching on and off "
        f"differed on {mismatches} request(s).",
        "",
        "- `CPU ms/req`: the process's CPU time (model worker and event loop) per request. On a "
        "machine this loaded, wall-clock rows run back to back still see different load, so "
        "the CPU-time ratio is the steadier measure of what batching saves.",
        "",
        "| agent | concurrent | batching | requests | req/s | output tok/s | p50 ms | p99 ms "
        "| failures | CPU ms/req | req/s on vs off | CPU per request, off / on |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    pairs: dict[tuple[str, int], dict[bool, Row]] = {}
    for r in rows:
        pairs.setdefault((r.agent, r.concurrency), {})[r.batching] = r
    for r in rows:
        ratio = cpu_ratio = ""
        if r.batching and False in pairs[(r.agent, r.concurrency)]:
            off = pairs[(r.agent, r.concurrency)][False]
            ratio = f"{r.rps / off.rps:.2f}x"
            cpu_ratio = f"{off.cpu_ms_per_request / r.cpu_ms_per_request:.2f}x"
        lines.append(
            f"| {r.agent} | {r.concurrency} | {'on' if r.batching else 'off'} | {r.requests} "
            f"| {r.rps:.2f} | {r.tps:,.0f} | {r.p50_ms:,.0f} | {r.p99_ms:,.0f} | {r.failures} "
            f"| {r.cpu_ms_per_request:,.0f} | {ratio} | {cpu_ratio} |"
        )
    top = max(CONCURRENCY)
    verdicts = []
    for agent in infos:
        pair = pairs.get((agent, top), {})
        if {True, False} <= set(pair):
            ratio = pair[True].rps / pair[False].rps
            cpu_ratio = pair[False].cpu_ms_per_request / pair[True].cpu_ms_per_request
            verdicts.append(
                f"{agent} {ratio:.2f}x ({'met' if ratio >= 5 else 'NOT met'}; "
                f"{cpu_ratio:.2f}x by CPU time per request)"
            )
    if verdicts:
        lines += [
            "",
            f"Target: batching on >= 5x the req/s of batching off at {top} concurrent: "
            + "; ".join(verdicts)
            + ".",
            "",
            WHY,
        ]
    return "\n".join(lines) + "\n"


WHY = """\
The ratio depends on the CPU as much as on the runtime. The same engine and weights measured
3.37x (extractor) and 2.95x (responder) at 32 concurrent on 2026-11-26 01:38, on a 2-core
machine with AVX-512, and 5.60x / 5.35x and 5.40x / 5.26x in two runs at 06:56 the same day on
this AVX2-only 2-core machine (by CPU time per request 4.86x / 5.40x and 4.56x / 5.29x).
What differs is the batch-1 path: with batching off a request cost 101 ms of CPU there and
192 ms here (extractor; a batch-1 decode step ~1.4 ms there, ~2.7 ms here), while with batching
on it cost 33 ms there and 39 ms here. A 32-row step is bound by memory traffic and matmuls,
which this CPU runs about as fast; a 1-row step is bound by per-module Python and small
kernels, which it runs about half as fast, so batching saves more here. On the faster machine
the runtime stays under 5x.

Where the worker's time goes with batching on (cProfile on the model worker thread, 32
concurrent, the AVX-512 machine, 2026-11-26, load average ~6 from other engineers' jobs):

- The KV cache no longer moves. `mesh/slm/slots.py` preallocates each layer's keys and values
  per batch row: a decode step writes one column in place, a request joining copies its
  prefill once, one leaving is replaced by the last row. Before, `DynamicCache` concatenation
  on every step plus re-padding and trimming when rows joined or left took ~25% of the
  worker's time (responder); now ~1-2%. Token choice is one masked operation for the batch;
  llguidance builds newcomers' parsers and computes the next step's masks on a helper thread
  while the forward pass runs (it drops the GIL), which took the mask time (~19% of the
  extractor's worker time when computed in line) off the model thread; text chunks reach the
  event loop with one wake-up per step instead of one per row.
- What is left is mostly the forward pass: decode steps are ~60-70% of the worker's time, split
  about evenly between matmuls and attention, plus transformers' per-module Python. Attention
  over 32 rows is bound by memory bandwidth: ~200 cached positions x 32 rows x 4 layers of
  float32 keys and values is ~40 MB read per step, more than the 32 MB L3 (~1-1.4 ms per layer,
  ~0.3 ms when the same data is cache-resident); rows are left-padded to the oldest row's start
  (~23% of the attended positions are padding).
- Per-request costs do not batch and are the same with batching off: the prefill of an
  80-130-token prompt (~17% of the extractor's worker time at 32 concurrent) and, for it,
  compiling its grounded JSON grammar in Python (~7%). A request with batching off costs
  ~70-85 ms of CPU (responder), ~8 ms of it prefill; 5x leaves ~15 ms per request for the
  prefill and ~60 decoded tokens, ~0.1 ms per token-row, against ~0.25 ms per row of a 32-row
  decode step (~8 ms, measured on a lightly loaded core).
- Before and after, same session (load average 3-7), the previous engine and this one run
  alternately, each off/on pair twice over 128 requests at 32 concurrent: extractor 2.62x and
  2.49x before, 3.18x and 2.90x now; responder 2.22x and 2.46x before, 3.06x and 4.42x now.
  Batching off got faster too (the decode mask is passed ready-made, grammar masks overlap the
  forward pass), which holds the ratio down. The 3.89x / 3.23x recorded on 2026-11-25 ran at
  load ~12-14, which slowed batching off (CPU per request x2.2) more than on (x1.7).
- What would raise the ratio further: fewer bytes of KV per step (a bfloat16 cache halves them
  but changes outputs), attention that skips the left padding (a ragged/paged kernel), a
  leaner forward than transformers' modules (which would speed up batching off as much), or
  hardware where a batch-1 step is bound by reading the weights (a GPU, a larger model)."""


if __name__ == "__main__":
    main()
