"""The encoder backend: an :class:`~mesh.slm.encoder.EncoderModel` behind a batching worker.

Concurrent requests share forward passes: the worker takes every request waiting (up to
``max_batch_size``; when idle, the first waits ``max_wait_ms`` for company) and reads them in
one padded batch. An encoder answers in one forward pass, so there is no decode loop to join:
the answer is streamed as one chunk. All tokenizing, model compute and span search run on the
worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mesh.slm.encoder import EncoderModel, load_encoder
from mesh.slm.errors import (
    GenerationFailedError,
    InputError,
    InputTooLongError,
    SchemaError,
    SLMError,
)
from mesh.slm.generation import Generation, GenerationRequest, GenerationStream, Usage, finalize
from mesh.slm.grammar import Choice, JsonOutput, OutputConstraint, check_schema
from mesh.slm.transformers_backend import render_prompt

_CLOSE = object()


@dataclass
class _Job:
    request: GenerationRequest
    text: str
    stream: GenerationStream
    submitted: float
    deadline: float | None
    cancelled: bool = False


class EncoderBackend:
    """Serves one encoder folder from this process (see the module docstring)."""

    def __init__(
        self,
        model: str | EncoderModel,
        *,
        base_dir: Path | None = None,
        name: str | None = None,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        threads: int | None = None,
    ) -> None:
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size must be >= 1 and max_wait_ms >= 0")
        self.loaded = (
            model
            if isinstance(model, EncoderModel)
            else load_encoder(model, base_dir=base_dir, name=name)
        )
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.threads = threads
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"encoder-{self.loaded.name}", daemon=True
        )
        self._thread.start()

    @property
    def model_name(self) -> str:
        return self.loaded.name

    @property
    def parameters(self) -> int | None:
        return self.loaded.parameters

    @property
    def context_length(self) -> int:
        return self.loaded.context_length

    @property
    def has_chat_template(self) -> bool:
        return False

    def check_output(self, output: OutputConstraint) -> None:
        """The head must answer ``output``: a subset of its labels, or exactly its fields
        as nullable, grounded strings."""
        spec = self.loaded.spec
        if isinstance(output, Choice):
            unknown = [label for label in output.labels if label not in spec.labels]
            if spec.task != "labels" or unknown:
                raise SchemaError(
                    f"the encoder {self.model_name} answers the labels "
                    f"{list(spec.labels)}, not {unknown or list(output.labels)}"
                )
            return
        if not isinstance(output, JsonOutput) or spec.task != "spans":
            raise SchemaError(
                f"the encoder {self.model_name} ({spec.task}) cannot produce "
                f"{type(output).__name__} output"
            )
        check_schema(output.schema)
        properties = output.schema.get("properties", {})
        if output.schema.get("type") != "object" or list(properties) != list(spec.fields):
            raise SchemaError(
                f"the encoder {self.model_name} fills the fields "
                f"{list(spec.fields)}; the schema has {list(properties)}"
            )
        for name, prop in properties.items():
            types = prop.get("type")
            types = types if isinstance(types, list) else [types]
            if sorted(types) != ["null", "string"] or prop.get("x-grounded") is not True:
                raise SchemaError(
                    f"field {name!r}: an encoder fills only grounded "
                    "string-or-null fields (x-grounded: true)"
                )

    def stream(self, request: GenerationRequest) -> GenerationStream:
        """Queues a request; the stream yields the answer as one chunk. Needs a running loop."""
        stream = GenerationStream(lambda generation: finalize(request.output, generation))
        text, _ = render_prompt(self.loaded.tokenizer, request, use_chat_template=False)
        submitted = time.monotonic()
        job = _Job(
            request,
            text,
            stream,
            submitted,
            None if request.timeout_s is None else submitted + request.timeout_s,
        )

        def cancel() -> None:
            job.cancelled = True

        stream.on_cancel(cancel)
        if self._stopped.is_set():
            stream.send(GenerationFailedError("the model engine has stopped"))
        else:
            self._inbox.put(job)
        return stream

    async def generate(self, request: GenerationRequest) -> Generation:
        return await self.stream(request).result()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def close(self, timeout: float | None = 10.0) -> None:
        self._inbox.put(_CLOSE)
        self._thread.join(timeout)

    # -- worker thread ------------------------------------------------------------------

    def _run(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                while (jobs := self._collect()) is not None:
                    if jobs:
                        self._read(jobs)
        finally:
            self._stopped.set()
            while True:  # whoever is still waiting learns the engine stopped
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Job):
                    item.stream.send(GenerationFailedError("the model engine has stopped"))

    def _collect(self) -> list[_Job] | None:
        """The next batch of live jobs; None when closing."""
        first = self._inbox.get()
        if first is _CLOSE:
            return None
        items = [first]
        until = time.monotonic() + self.max_wait_s
        while len(items) < self.max_batch_size:
            try:
                item = self._inbox.get(timeout=max(0.0, until - time.monotonic()))
            except queue.Empty:
                break
            if item is _CLOSE:
                self._inbox.put(_CLOSE)
                break
            items.append(item)
        jobs = []
        now = time.monotonic()
        for job in items:
            if job.cancelled:
                continue
            if job.deadline is not None and now >= job.deadline:
                job.stream.send(
                    GenerationFailedError(
                        f"the deadline of {job.request.timeout_s} s passed before the model ran"
                    )
                )
                continue
            try:
                self._check_input(job)
            except SLMError as exc:
                job.stream.send(exc)
                continue
            jobs.append(job)
        return jobs

    def _check_input(self, job: _Job) -> None:
        if not job.text.strip():
            raise InputError("the prompt is empty")
        count = self.loaded.token_count(job.text)
        if count > self.loaded.context_length:
            raise InputTooLongError(
                f"the prompt is {count} tokens; it exceeds the model's "
                f"context of {self.loaded.context_length} tokens"
            )

    def _read(self, jobs: list[_Job]) -> None:
        started = time.monotonic()
        try:
            batch = self.loaded.tokenize([job.text for job in jobs])
            logits = self.loaded.forward(batch)
            answers = self._answers(jobs, batch, logits)
        except Exception as exc:  # noqa: BLE001 - every waiting caller must hear of it
            for job in jobs:
                job.stream.send(GenerationFailedError(f"the encoder failed: {exc}"))
            return
        done = time.monotonic()
        for job, row, (text, logprob) in zip(jobs, range(len(jobs)), answers, strict=True):
            usage = Usage(
                input_tokens=int(batch["attention_mask"][row].sum()),
                output_tokens=0,
                ttft_ms=(done - job.submitted) * 1000,
                tokens_per_s=None,
                model=self.loaded.name,
                parameters=self.loaded.parameters,
                mean_logprob=logprob,
                queue_ms=(started - job.submitted) * 1000,
                batch_size=len(jobs),
                compute_ms=(done - started) * 1000 / len(jobs),
            )
            job.stream.send(text)
            job.stream.send(Generation(text, "stop", usage))

    def _answers(self, jobs: list[_Job], batch: Any, logits: Any) -> list[tuple[str, float]]:
        outputs = [job.request.output for job in jobs]
        if self.loaded.spec.task == "labels":
            allowed = [
                o.labels if isinstance(o, Choice) else self.loaded.spec.labels for o in outputs
            ]
            return self.loaded.choose_labels(logits, allowed)
        regions, schemas = [], []
        for job, output in zip(jobs, outputs, strict=True):
            source = output.source if isinstance(output, JsonOutput) and output.source else ""
            at = job.text.find(source) if source else -1
            regions.append((at, at + len(source)) if at >= 0 else (0, len(job.text)))
            schemas.append(output.schema if isinstance(output, JsonOutput) else {})
        chosen = self.loaded.choose_spans(
            logits, batch, [job.text for job in jobs], regions, schemas
        )
        return [
            (json.dumps(value, ensure_ascii=False, separators=(",", ":")), logprob)
            for value, logprob in chosen
        ]
