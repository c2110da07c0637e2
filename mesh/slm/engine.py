"""Continuous batching: one worker thread owns the model and steps every live request.

Why this shape: an agent gets many small concurrent requests, and on CPU (or a GPU) one
forward pass over a batch of 16 costs little more than over one. So every request joins a
running batch at the next decoding step (continuous batching at step granularity):

- newcomers are prefilled together (left-padded, with their own transformers cache), then
  their keys and values are copied once into free rows of the running batch's preallocated
  :class:`~mesh.slm.slots.SlotCache`; an attention mask and explicit position ids make every
  row compute what it would alone (up to floating-point summation order), so batched greedy
  output is the unbatched greedy output;
- every decode step writes one column of that cache in place (no per-step cache copies);
- finished rows (end of sequence, stop string, token budget, deadline, cancel) leave at
  once: the last live row moves into the freed slot;
- when the engine is idle, the first request waits up to ``max_wait_ms`` for company, so a
  burst starts as one batch rather than one request and then the rest.

Token choice is one masked logits operation for the whole batch (grammar masks from
llguidance for the constrained rows, computed together); on an accelerator, a batch of greedy
rows without grammar chooses on the device and brings back two numbers per row instead of
every row's logits; text chunks reach their streams
with one event-loop wake-up per step, not one per row.

Models whose cache is not plain per-layer key/value tensors (sliding windows, state-space
layers) cannot be merged this way; they fall back to batch-at-a-time on transformers' own
cache: requests arriving while a batch runs start together when it ends.

All model compute (tokenizing, grammar compilation, forward passes, masks) happens on the
worker thread; the event loop only receives chunks and results.
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from mesh.slm.errors import (
    GenerationFailedError,
    InputError,
    InputTooLongError,
    SLMError,
)
from mesh.slm.generation import (
    FinishReason,
    Generation,
    GenerationStream,
    StreamItem,
    TokenLogprob,
    Usage,
    send_all,
)
from mesh.slm.grammar import OutputConstraint, compile_grammar
from mesh.slm.guide import Guide, TokenVocabulary
from mesh.slm.loading import LoadedModel
from mesh.slm.slots import SlotCache, kv_layers

logger = logging.getLogger(__name__)

_CLOSE = object()
_MASK_4D_MODELS = frozenset(
    {"llama", "qwen2", "qwen3", "mistral", "phi3", "gemma", "smollm3", "olmo2", "granite"}
)
"""Model types whose forward hands the attention mask only to transformers' mask builders,
which take a ready 4D mask as is (others, e.g. ALiBi models, derive biases from the 2D mask)."""


@dataclass(eq=False)
class Submission:
    """One request inside the engine (worker-thread state, except ``cancelled``)."""

    prompt: str
    add_special_tokens: bool
    max_new_tokens: int
    stream: GenerationStream
    output: OutputConstraint | None = None
    stop: tuple[str, ...] = ()
    deadline: float | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    submitted: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    # worker-thread state
    prompt_ids: list[int] = field(default_factory=list)
    grammar: str | None = None
    guide: Guide | None = None
    guide_error: SLMError | None = None
    generator: torch.Generator | None = None
    generated: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    first_token_at: float | None = None
    admitted_at: float | None = None
    batch_size: int = 0
    compute_s: float = 0.0
    """This row's share of the forward passes it took part in (each pass split evenly)."""


@dataclass
class _Batch:
    """Rows decoding together: their shared KV cache and the token each row feeds next.

    A merged batch keeps its keys and values in ``slots`` (rows join and leave in place); the
    batch-at-a-time fallback keeps transformers' ``cache`` and a growing attention ``mask``.
    """

    rows: list[Submission]
    next_tokens: torch.Tensor  # [B] on the CPU: the sampled token each row feeds next
    slots: SlotCache | None = None
    cache: DynamicCache | None = None
    mask: torch.Tensor | None = None  # [B, L] on the model's device (fallback only)


class BatchEngine:
    """Owns one loaded model on a worker thread; :meth:`submit` is safe from any thread."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        threads: int | None = None,
    ) -> None:
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size must be >= 1 and max_wait_ms >= 0")
        self.loaded = loaded
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.threads = threads
        self.merge_supported: bool | None = None
        self.device = next(loaded.model.parameters()).device
        forward = inspect.signature(loaded.model.forward).parameters
        # transformers 5 renamed past_key_values to cache; both spellings are accepted.
        self._cache_argument = "cache" if "cache" in forward else "past_key_values"
        self._logits_to_keep = "logits_to_keep" in forward
        # With SDPA attention a decode step's boolean [B, 1, 1, L] mask is exactly what
        # transformers would build from the 2D mask; passing it skips that work every step.
        config = loaded.model.config
        self._mask_4d = (
            getattr(config, "_attn_implementation", None) == "sdpa"
            and getattr(config, "model_type", None) in _MASK_4D_MODELS
        )
        self.steps = 0
        self._vocabulary: TokenVocabulary | None = None
        self._vocabulary_lock = threading.Lock()
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending: deque[Submission] = deque()
        self._batch: _Batch | None = None
        self._slots: SlotCache | None = None
        self._outbox: list[tuple[GenerationStream, StreamItem]] = []
        self._token_texts: dict[int, str] = {}
        self._detokenize = _decoder(loaded.tokenizer)
        self._mask_thread: ThreadPoolExecutor | None = None
        self._mask_jobs: list[tuple[set[int], Future[dict[int, np.ndarray]]]] = []
        self._closing = False
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"slm-{loaded.name}", daemon=True)
        self._thread.start()

    @property
    def vocabulary(self) -> TokenVocabulary:
        """The llguidance view of the vocabulary, built on first use (about 1 s for 150k)."""
        with self._vocabulary_lock:
            if self._vocabulary is None:
                self._vocabulary = TokenVocabulary(self.loaded.tokenizer, self.loaded.vocab_size)
            return self._vocabulary

    def submit(self, submission: Submission) -> None:
        if self._stopped.is_set():
            submission.stream.send(GenerationFailedError("the model engine has stopped"))
            return
        self._inbox.put(submission)

    def close(self, timeout: float | None = 10.0) -> None:
        """Stops the worker after the current step; unfinished requests fail."""
        self._inbox.put(_CLOSE)
        self._thread.join(timeout)

    # -- worker thread ------------------------------------------------------------------

    def _run(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                while self._collect():
                    self._step()
                    self._flush()
        finally:
            self._stopped.set()
            self._drain_masks()
            if self._mask_thread is not None:
                self._mask_thread.shutdown()
            stranded = list(self._pending) + (self._batch.rows if self._batch else [])
            for submission in stranded:
                self._send(submission, GenerationFailedError("the model engine stopped"))
            self._flush()
            while True:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, Submission):
                    item.stream.send(GenerationFailedError("the model engine stopped"))

    def _send(self, submission: Submission, item: StreamItem) -> None:
        """Queues a chunk, result or error; :meth:`_flush` delivers them after the step."""
        self._outbox.append((submission.stream, item))

    def _flush(self) -> None:
        if self._outbox:
            outbox, self._outbox = self._outbox, []
            send_all(outbox)

    def _collect(self) -> bool:
        """Moves submissions into ``_pending``; blocks (then lingers) only when idle."""
        if self._closing:
            return False
        if self._batch is None and not self._pending:
            item = self._inbox.get()
            if item is _CLOSE:
                return False
            self._pending.append(item)
            linger_until = time.monotonic() + self.max_wait_s
            while len(self._pending) < self.max_batch_size:
                remaining = linger_until - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._inbox.get(timeout=remaining)
                except queue.Empty:
                    break
                if item is _CLOSE:
                    self._closing = True
                    break
                self._pending.append(item)
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is _CLOSE:
                self._closing = True
            else:
                self._pending.append(item)
        return True

    def _admit(self) -> list[Submission]:
        """Takes pending requests the batch has room for, prepared (tokens, grammar)."""
        running = len(self._batch.rows) if self._batch else 0
        if running and self.merge_supported is False:
            return []
        admitted: list[Submission] = []
        while self._pending and running + len(admitted) < self.max_batch_size:
            submission = self._pending.popleft()
            if submission.cancelled:
                continue
            if submission.deadline is not None and time.monotonic() >= submission.deadline:
                self._finish(submission, "deadline")
                continue
            try:
                self._prepare(submission)
            except SLMError as exc:
                self._send(submission, exc)
                continue
            admitted.append(submission)
        now = time.monotonic()
        for submission in admitted:
            submission.admitted_at = now
            submission.batch_size = running + len(admitted)
        return admitted

    def _prepare(self, submission: Submission) -> None:
        loaded = self.loaded
        ids = loaded.tokenizer.encode(
            submission.prompt, add_special_tokens=submission.add_special_tokens
        )
        if not ids:
            raise InputError("the prompt is empty after tokenization")
        if len(ids) + submission.max_new_tokens > loaded.context_length:
            raise InputTooLongError(
                f"the prompt is {len(ids)} tokens; with up to {submission.max_new_tokens} new "
                f"tokens it exceeds the model's context of {loaded.context_length} tokens"
            )
        submission.prompt_ids = ids
        if submission.output is not None:
            # The parser itself is built on the mask thread (see _prefetch_masks).
            submission.grammar = compile_grammar(submission.output, self.vocabulary.representable)
        if submission.temperature > 0:
            submission.generator = torch.Generator()
            if submission.seed is not None:
                submission.generator.manual_seed(submission.seed)
            else:
                submission.generator.seed()

    def _step(self) -> None:
        if self._batch is not None:
            self._batch = self._keep(
                self._batch, [i for i, s in enumerate(self._batch.rows) if not s.cancelled]
            )
        admitted = self._admit()
        if self._batch is None and not admitted:
            self._drain_masks()  # the rows they were for were cancelled
            return
        self._prefetch_masks(admitted)
        try:
            if self._batch is not None:
                started = time.perf_counter()
                logits = self._decode(self._batch)
                _share_compute(self._batch.rows, time.perf_counter() - started)
                self._batch = self._keep(self._batch, self._advance(self._batch, logits))
            if admitted:
                started = time.perf_counter()
                self._batch = self._start(admitted)
                _share_compute(admitted, time.perf_counter() - started)
        except (RuntimeError, ValueError, IndexError) as exc:
            # A broken forward pass fails the rows it carried, not the engine.
            logger.exception("model step failed")
            rows = (self._batch.rows if self._batch else []) + admitted
            self._batch = None
            if self._slots is not None:
                self._slots.clear()
            for submission in rows:
                self._send(submission, GenerationFailedError(f"the model failed: {exc}"))
            return
        finally:
            self._drain_masks()
        self.steps += 1
        if self._batch is not None:
            self._prefetch_masks(self._batch.rows)

    # -- grammar masks ------------------------------------------------------------------

    def _prefetch_masks(self, rows: list[Submission]) -> None:
        """Starts the next token masks of ``rows`` (and newcomers' parsers) on a helper thread.

        llguidance builds parsers and computes masks in Rust without the GIL, so they are
        ready when the forward passes of the step (which need none of them) return; the rows'
        parsers are not touched until :meth:`_masks` has collected the job.
        """
        constrained = [s for s in rows if s.grammar is not None and not s.cancelled]
        if not constrained:
            return
        if self._mask_thread is None:
            self._mask_thread = ThreadPoolExecutor(
                1, thread_name_prefix=f"slm-masks-{self.loaded.name}"
            )
        job = self._mask_thread.submit(self._build_masks, constrained)
        self._mask_jobs.append(({id(s) for s in constrained}, job))

    def _build_masks(self, rows: list[Submission]) -> dict[int, np.ndarray]:
        """Helper thread: builds missing parsers, then the masks of all rows (by row id)."""
        guided = [s for s in rows if s.guide is not None or self._build_guide(s)]
        if not guided:
            return {}
        masks = self.vocabulary.allowed([s.guide for s in guided])  # type: ignore[misc]  # guided rows have guides
        return {id(s): masks[i] for i, s in enumerate(guided)}

    def _build_guide(self, submission: Submission) -> bool:
        """Builds the row's parser; a grammar llguidance refuses fails the row later."""
        assert submission.grammar is not None
        try:
            submission.guide = self.vocabulary.guide(submission.grammar)
        except SLMError as exc:
            submission.guide_error = exc
            return False
        return True

    def _masks(self, rows: list[Submission]) -> tuple[list[int], np.ndarray | None]:
        """The constrained rows' indices and their masks (prefetched, or computed now)."""
        wanted = {id(s) for s in rows}
        found: dict[int, np.ndarray] = {}
        pending = []
        for job in self._mask_jobs:
            ids, future = job
            if wanted.isdisjoint(ids):
                pending.append(job)
            else:
                found.update(future.result())
        self._mask_jobs = pending
        guided = [
            i
            for i, s in enumerate(rows)
            if s.grammar is not None
            and s.guide_error is None
            and (s.guide is not None or self._build_guide(s))
        ]
        if not guided:
            return [], None
        if all(id(rows[i]) in found for i in guided):
            return guided, np.stack([found[id(rows[i])] for i in guided])
        guides = [rows[i].guide for i in guided]
        return guided, self.vocabulary.allowed(guides)  # type: ignore[arg-type]  # guided: guide is set

    def _drain_masks(self) -> None:
        """Waits for masks nobody collected (a failed step), so no parser is still busy."""
        for _, future in self._mask_jobs:
            try:
                future.result()
            except Exception:
                logger.debug("discarded grammar masks failed", exc_info=True)
        self._mask_jobs = []

    # -- forward passes -----------------------------------------------------------------

    def _forward(
        self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        extra: dict[str, Any] = {self._cache_argument: cache}
        if self._logits_to_keep:
            extra["logits_to_keep"] = 1
        output = self.loaded.model(
            input_ids=input_ids.to(self.device),
            attention_mask=mask,
            position_ids=positions.to(self.device),
            use_cache=True,
            **extra,
        )
        return output.logits[:, -1, :]  # on the model's device; _advance moves what it needs

    def _start(self, admitted: list[Submission]) -> _Batch | None:
        """Prefills ``admitted``, picks their first tokens and adds them to the batch."""
        rows = len(admitted)
        width = max(len(s.prompt_ids) for s in admitted)
        ids = torch.full((rows, width), self.loaded.pad_id, dtype=torch.long)
        mask = torch.zeros((rows, width), dtype=torch.long)
        for i, submission in enumerate(admitted):
            n = len(submission.prompt_ids)
            ids[i, width - n :] = torch.tensor(submission.prompt_ids, dtype=torch.long)
            mask[i, width - n :] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        mask = mask.to(self.device)
        cache = DynamicCache(config=self.loaded.model.config)
        logits = self._forward(ids, mask, positions, cache)
        if self.merge_supported is None:
            self.merge_supported = all(type(layer) is DynamicLayer for layer in cache.layers)
            if not self.merge_supported:
                logger.info(
                    "model %s: cache layers cannot be merged; batching whole batches",
                    self.loaded.name,
                )
        fresh = _Batch(admitted, torch.zeros(rows, dtype=torch.long), cache=cache, mask=mask)
        keep = self._advance(fresh, logits)
        if not self.merge_supported:
            return self._keep(fresh, keep)
        running = self._batch
        if not keep:
            return running
        if len(keep) < rows:
            index = torch.tensor(keep, dtype=torch.long).to(self.device)
            for layer in kv_layers(cache):
                layer.keys = layer.keys[index]
                layer.values = layer.values[index]
        if self._slots is None:
            self._slots = SlotCache(self.max_batch_size, len(cache.layers))
        if running is None:
            self._slots.clear()
            running = _Batch([], torch.zeros(0, dtype=torch.long), slots=self._slots)
        kept = [admitted[i] for i in keep]
        self._slots.append(cache, [len(s.prompt_ids) for s in kept])
        running.rows = running.rows + kept
        running.next_tokens = torch.cat([running.next_tokens, fresh.next_tokens[keep]])
        return running

    def _decode(self, batch: _Batch) -> torch.Tensor:
        if batch.slots is None:
            assert batch.mask is not None
            positions = batch.mask.sum(dim=1, keepdim=True)
            batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.rows), 1))], dim=1)
            return self._forward(batch.next_tokens[:, None], batch.mask, positions, batch.cache)
        slots = batch.slots
        slots.reserve_decode()
        mask = slots.attention_mask()
        mask = mask[:, None, None, :] if self._mask_4d else mask.long()
        logits = self._forward(batch.next_tokens[:, None], mask, slots.positions(), slots.cache)
        slots.advance()
        return logits

    # -- choosing tokens ----------------------------------------------------------------

    def _advance(self, batch: _Batch, logits: torch.Tensor) -> list[int]:
        """Picks each row's next token (into ``batch.next_tokens``) and updates its text;
        returns the indices of the rows going on."""
        rows = batch.rows
        guided, masks = self._masks(rows)
        if masks is None and logits.device.type != "cpu" and all(s.temperature == 0 for s in rows):
            # Greedy rows without grammar on an accelerator: choose there and bring back two
            # numbers per row, not a vocabulary of logits (151,936 floats a row for Qwen).
            logits = logits.float()
            best = logits.argmax(dim=-1)
            picked = logits.gather(1, best[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)
            return self._take(batch, best.cpu(), picked.cpu().tolist(), [])
        logits = logits.float().cpu()
        blocked: list[bool] = []
        if masks is not None:
            allowed = torch.from_numpy(masks)
            if len(guided) == len(rows):
                logits.masked_fill_(~allowed, float("-inf"))
            else:
                index = torch.tensor(guided, dtype=torch.long)
                logits[index] = logits[index].masked_fill(~allowed, float("-inf"))
            blocked = torch.isneginf(logits).all(dim=1).tolist()
        logprobs = torch.log_softmax(logits, dim=-1)
        tokens = logits.argmax(dim=-1)
        for i, submission in enumerate(rows):
            if submission.temperature > 0 and not (blocked and blocked[i]):
                tokens[i] = self._sample(submission, logits[i])
        return self._take(
            batch, tokens, logprobs.gather(1, tokens[:, None])[:, 0].tolist(), blocked
        )

    def _take(
        self, batch: _Batch, tokens: torch.Tensor, chosen: list[float], blocked: list[bool]
    ) -> list[int]:
        """Records each row's chosen token; returns the indices of the rows going on."""
        rows = batch.rows
        batch.next_tokens = tokens
        keep: list[int] = []
        for i, (submission, token) in enumerate(zip(rows, tokens.tolist(), strict=True)):
            if submission.guide_error is not None:
                self._send(submission, submission.guide_error)
                continue
            if blocked and blocked[i]:
                self._send(
                    submission,
                    GenerationFailedError(
                        "constrained decoding reached a state no token of this vocabulary can "
                        "continue"
                    ),
                )
                continue
            if self._accept(submission, token, chosen[i]):
                keep.append(i)
        return keep

    @staticmethod
    def _sample(submission: Submission, logits: torch.Tensor) -> int:
        probs = torch.softmax(logits / submission.temperature, dim=-1)
        if submission.top_p < 1:
            sorted_probs, order = probs.sort(descending=True)
            cumulative = sorted_probs.cumsum(0)
            sorted_probs[cumulative - sorted_probs > submission.top_p] = 0
            probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=submission.generator))

    def _accept(self, submission: Submission, token: int, logprob: float) -> bool:
        """Records ``token``; returns whether the row goes on decoding."""
        now = time.monotonic()
        if submission.first_token_at is None:
            submission.first_token_at = now
        submission.logprobs.append(logprob)
        if submission.cancelled:
            return False
        if token in self.loaded.eos_ids:
            if submission.guide is not None and not submission.guide.accepting:
                self._send(
                    submission,
                    GenerationFailedError(
                        "constrained decoding reached a dead end (the output declaration and this "
                        f"input leave no way to finish): {submission.text[-80:]!r}"
                    ),
                )
            else:
                self._finish(submission, "stop")
            return False
        if submission.guide is not None:
            try:
                submission.guide.consume(token)
            except SLMError as exc:
                self._send(submission, exc)
                return False
        submission.generated.append(token)
        submission.text = self._detokenize(submission.generated)
        if submission.guide is None and submission.stop:
            cut = _stop_index(submission.text, submission.stop, submission.emitted)
            if cut is not None:
                submission.text = submission.text[:cut]
                self._finish(submission, "stop")
                return False
        if submission.guide is not None and submission.guide.finished:
            self._finish(submission, "stop")
            return False
        if len(submission.generated) >= submission.max_new_tokens:
            self._finish(submission, "length")
            return False
        if submission.deadline is not None and now >= submission.deadline:
            self._finish(submission, "deadline")
            return False
        self._emit(submission, final=False)
        return True

    def _emit(self, submission: Submission, final: bool) -> None:
        """Sends new text; holds back what a stop string or a split character may change."""
        end = len(submission.text)
        if not final:
            if submission.text.endswith("\ufffd"):
                end = len(submission.text.rstrip("\ufffd"))
            if submission.stop and submission.guide is None:
                end = min(end, len(submission.text) - (max(map(len, submission.stop)) - 1))
        if end > submission.emitted:
            self._send(submission, submission.text[submission.emitted : end])
            submission.emitted = end

    def _token_text(self, token: int) -> str:
        text = self._token_texts.get(token)
        if text is None:
            # One token id in, one string out (decode types a batch's list of strings too).
            text = self._token_texts[token] = cast(str, self.loaded.tokenizer.decode([token]))
        return text

    def _finish(self, submission: Submission, reason: FinishReason) -> None:
        self._emit(submission, final=True)
        end = time.monotonic()
        elapsed = end - submission.submitted
        tokens = len(submission.generated)
        usage = Usage(
            input_tokens=len(submission.prompt_ids),
            output_tokens=tokens,
            ttft_ms=None
            if submission.first_token_at is None
            else round((submission.first_token_at - submission.submitted) * 1000, 3),
            tokens_per_s=round(tokens / elapsed, 3) if tokens and elapsed > 0 else None,
            model=self.loaded.name,
            parameters=self.loaded.parameters,
            mean_logprob=(
                sum(submission.logprobs) / len(submission.logprobs) if submission.logprobs else None
            ),
            queue_ms=None
            if submission.admitted_at is None
            else round((submission.admitted_at - submission.submitted) * 1000, 3),
            batch_size=submission.batch_size or None,
            compute_ms=round(submission.compute_s * 1000, 3),
        )
        logprobs = tuple(
            TokenLogprob(self._token_text(t), lp)
            for t, lp in zip(submission.generated, submission.logprobs, strict=False)
        )
        self._send(submission, Generation(submission.text, reason, usage, None, logprobs))

    # -- batch bookkeeping --------------------------------------------------------------

    @staticmethod
    def _keep(batch: _Batch, keep: list[int]) -> _Batch | None:
        """The batch with only rows ``keep`` (ascending), or None when no row is left."""
        if len(keep) == len(batch.rows):
            return batch
        if not keep:
            if batch.slots is not None:
                batch.slots.clear()
            return None
        if batch.slots is not None:
            order = batch.slots.keep(keep)
            batch.rows = [batch.rows[i] for i in order]
            batch.next_tokens = batch.next_tokens[order]
            return batch
        # transformers' cache (batch-at-a-time): its layers select the rows. Columns are not
        # trimmed: a sliding-window layer holds fewer columns than the mask, which must keep
        # covering every position for transformers to place the window.
        assert batch.mask is not None
        assert batch.cache is not None
        index = torch.tensor(keep, dtype=torch.long)
        on_device = index.to(batch.mask.device)
        batch.cache.batch_select_indices(on_device)
        return _Batch(
            [batch.rows[i] for i in keep],
            batch.next_tokens[index],
            cache=batch.cache,
            mask=batch.mask[on_device],
        )


def _share_compute(rows: list[Submission], seconds: float) -> None:
    """Splits one forward pass's time evenly over the rows it computed."""
    if rows:
        for submission in rows:
            submission.compute_s += seconds / len(rows)


def _decoder(tokenizer: Any) -> Callable[[list[int]], str]:
    """``tokenizer.decode(ids, skip_special_tokens=True)``, without its per-call overhead.

    A fast tokenizer that does no clean-up decodes in its Rust backend exactly as
    transformers' ``decode`` does after converting the id list element by element (which
    costs more than the decoding itself, and grows with the text on every step).
    """
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is not None and not getattr(tokenizer, "clean_up_tokenization_spaces", True):
        return partial(backend.decode, skip_special_tokens=True)
    return partial(tokenizer.decode, skip_special_tokens=True)


def _stop_index(text: str, stops: tuple[str, ...], emitted: int) -> int | None:
    """Where the earliest stop string starts in the not yet emitted tail, if any."""
    start = max(0, emitted - max(map(len, stops)))
    found = [i for i in (text.find(stop, start) for stop in stops) if i >= 0]
    return min(found) if found else None
