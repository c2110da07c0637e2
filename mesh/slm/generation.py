"""What a caller asks an SLM for and what it gets back, whatever backend serves it.

Every backend (local transformers, remote OpenAI-compatible) streams text chunks through a
:class:`GenerationStream` and ends with a :class:`Generation` carrying the usage the mesh
accounts for (and that a later escalation policy reads: ``mean_logprob``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from mesh.slm.errors import GenerationCancelledError, IncompleteOutputError, InvalidOutputError
from mesh.slm.grammar import OutputConstraint
from mesh.slm.validation import parse_output

FinishReason = Literal["stop", "length", "deadline"]


@dataclass(frozen=True)
class GenerationRequest:
    """One generation: a plain ``prompt`` or chat ``messages`` (role/content dicts).

    ``output`` constrains decoding (labels or a JSON schema); ``stop`` strings apply to free
    text only; ``timeout_s`` is a deadline measured from submission (queueing included).
    ``temperature`` 0 is greedy decoding.
    """

    prompt: str | None = None
    messages: Sequence[Mapping[str, str]] | None = None
    max_new_tokens: int = 64
    stop: Sequence[str] = ()
    timeout_s: float | None = None
    output: OutputConstraint | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")

    def chat(self) -> list[dict[str, str]]:
        """The request as chat messages (a plain prompt is one user message)."""
        if self.messages is not None:
            return [dict(m) for m in self.messages]
        return [{"role": "user", "content": self.prompt or ""}]


@dataclass(frozen=True)
class Usage:
    """Accounting of one call.

    ``tokens_per_s`` is output tokens over the whole call (queueing and prefill included);
    ``mean_logprob`` is the mean log-probability of the chosen tokens under the distribution
    decoding sampled from (for constrained output: renormalised over the allowed tokens, so
    forced format tokens count as certain and the mean reflects the model's real choices).
    """

    input_tokens: int
    output_tokens: int
    ttft_ms: float | None
    tokens_per_s: float | None
    model: str
    parameters: int | None
    mean_logprob: float | None
    queue_ms: float | None = None
    """Time from submission until the request joined the running batch (local backend)."""
    batch_size: int | None = None
    """Requests decoding together when this one joined the batch (local backend)."""
    compute_ms: float | None = None
    """This request's share of the forward passes it took part in (local backends): the
    model compute a call costs, without queueing, grammar or transport."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float


@dataclass(frozen=True)
class Generation:
    """A finished generation; ``value`` is the label, the parsed JSON, or the text."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    value: Any = None
    logprobs: tuple[TokenLogprob, ...] = field(default=(), repr=False)


StreamItem = str | Generation | BaseException
"""What a producer hands a :class:`GenerationStream`: a text chunk, the result or an error."""


def finalize(output: OutputConstraint | None, generation: Generation) -> Generation:
    """Parses and validates the output; invalid output raises, it is never passed on."""
    try:
        value = parse_output(output, generation.text)
    except InvalidOutputError as exc:
        if output is not None and generation.finish_reason != "stop":
            raise IncompleteOutputError(
                f"the output was cut off ({generation.finish_reason}) after "
                f"{generation.usage.output_tokens} tokens, before it was complete: raise "
                "max_new_tokens or the deadline, or bound the schema's strings and arrays",
                generation,
            ) from exc
        exc.generation = generation
        raise
    return Generation(
        generation.text, generation.finish_reason, generation.usage, value, generation.logprobs
    )


class GenerationStream:
    """An async iterator of text chunks; ``await result()`` gives the final Generation.

    Producers (a worker thread or an HTTP reader task) call :meth:`send` with text chunks,
    then one :class:`Generation` or one exception. Created inside the consumer's event loop.
    """

    def __init__(self, finish: Callable[[Generation], Generation] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._items: asyncio.Queue[str | Generation | BaseException] = asyncio.Queue()
        self._finish = finish
        self._result: Generation | None = None
        self._error: BaseException | None = None
        self._done = False
        self._cancel_hooks: list[Callable[[], object]] = []
        self.cancelled = False

    # -- producer side ------------------------------------------------------------------

    def send(self, item: StreamItem) -> None:
        """Thread-safe: hands a chunk, the result or an error to the consumer."""
        if threading.get_ident() == self._loop_thread:
            self._items.put_nowait(item)
            return
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:
            self.cancelled = True  # the consumer's loop is gone: nobody is listening

    def on_cancel(self, hook: Callable[[], object]) -> None:
        self._cancel_hooks.append(hook)

    # -- consumer side ------------------------------------------------------------------

    def cancel(self) -> None:
        """Stops the generation (its batch slot is freed at the next step)."""
        if self._done:
            return
        self.cancelled = True
        for hook in self._cancel_hooks:
            hook()
        self._items.put_nowait(GenerationCancelledError("the generation was cancelled"))

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> str:
        if self._done:
            raise StopAsyncIteration
        try:
            item = await self._items.get()
        except asyncio.CancelledError:
            self.cancel()
            raise
        if isinstance(item, str):
            return item
        self._done = True
        if isinstance(item, BaseException):
            self._error = item
            raise item
        try:
            self._result = self._finish(item) if self._finish else item
        except InvalidOutputError as exc:
            self._error = exc
            raise
        raise StopAsyncIteration

    async def result(self) -> Generation:
        """Drains the stream; raises the generation's error if it failed."""
        async for _ in self:
            pass
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


def send_all(items: Sequence[tuple[GenerationStream, StreamItem]]) -> None:
    """Thread-safe: :meth:`GenerationStream.send` for many items, one wake-up per event loop.

    A batch engine finishing a step has a chunk for nearly every row; handing them over with
    one ``call_soon_threadsafe`` per loop instead of one per chunk saves the worker a syscall
    per row and the event loop a wake-up per row. Items for one stream keep their order.
    """
    here = threading.get_ident()
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[GenerationStream, StreamItem]]] = {}
    for stream, item in items:
        # GenerationStream's batch sender: this module's own class, its fields read as send() does.
        if stream._loop_thread == here:  # noqa: SLF001 - GenerationStream's own module
            stream._items.put_nowait(item)  # noqa: SLF001 - GenerationStream's own module
        else:
            by_loop.setdefault(stream._loop, []).append((stream, item))  # noqa: SLF001 - same
    for loop, batch in by_loop.items():
        try:
            loop.call_soon_threadsafe(_deliver, batch)
        except RuntimeError:
            for stream, _ in batch:
                stream.cancelled = True  # the consumer's loop is gone: nobody is listening


def _deliver(batch: list[tuple[GenerationStream, StreamItem]]) -> None:
    for stream, item in batch:
        stream._items.put_nowait(item)  # noqa: SLF001 - GenerationStream's own module


class SLMBackend(Protocol):
    """A model that serves generations: local (transformers) or remote (OpenAI API)."""

    @property
    def model_name(self) -> str: ...

    @property
    def parameters(self) -> int | None: ...

    def check_output(self, output: OutputConstraint) -> None:
        """Raises SchemaError when ``output`` cannot be enforced (called at start-up)."""

    def stream(self, request: GenerationRequest) -> GenerationStream: ...

    async def generate(self, request: GenerationRequest) -> Generation: ...

    async def aclose(self) -> None: ...
