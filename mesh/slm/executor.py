"""The generic SLM agent: one prompt, one model, one declared output, as an A2A service.

Every SLM agent of the mesh (classifier, extractor, tool-caller, responder) is this executor
with different ``options`` in its ``agent.yaml``::

    options:
      model: ../../models/classifier   # folder (relative to the spec's folder) or model id
      adapter: ../../models/students/x # optional LoRA adapter merged into the model at load
      backend: transformers            # or openai (with base_url, model_name, api_key_env),
                                       # or encoder (a fine-tuned encoder folder: labels, spans)
      prompt: "Classify the customer message.\\nMessage: {input}\\nIntent: "
      output:
        labels: [refund_request, order_status]   # or schema: {...}, or grounded_text:
                                                 # {names: true, allow: ["5"]}; none: free text
      max_new_tokens: 96
      stop: ["\\n"]
      batching: {max_batch_size: 32, max_wait_ms: 5}
      threads: 2

The task's input is the message's text, or its data part as compact JSON. Bad input (empty,
longer than the context, no span to copy a grounded field from) rejects the task; output
that fails validation (possible only from a remote model) or a broken model fails it.
Text streams out as chunks of the ``output`` artifact, which the final, complete artifact
replaces: a ``{"label": ...}`` data part and the label text, the JSON value as a data part
and as JSON text (in schema order), or the text; ``usage`` goes into the artifact's metadata.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from a2a.helpers import get_data_parts, get_message_text, new_data_part, new_text_part
from a2a.types import Message, Part
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mesh.a2a.cards import ModelFacts
from mesh.a2a.client import restore_ints
from mesh.a2a.executor import FINISHED_STATES, Executor, Reporter, Request
from mesh.config import ServiceSpec, Settings, SpecError
from mesh.slm.errors import (
    GenerationCancelledError,
    InputError,
    SchemaError,
    SLMError,
)
from mesh.slm.generation import (
    Generation,
    GenerationRequest,
    GenerationStream,
    SLMBackend,
    Usage,
)
from mesh.slm.grammar import Choice, GroundedText, JsonOutput, OutputConstraint
from mesh.slm.loading import ModelLoadError
from mesh.slm.local import local_backend
from mesh.telemetry import genai

logger = logging.getLogger(__name__)

OUTPUT_ARTIFACT = "output"
JSON_MEDIA_TYPE = "application/json"


class BatchingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(32, ge=1)
    max_wait_ms: float = Field(5.0, ge=0)


class GroundedTextOptions(BaseModel):
    """Free text in which facts (numbers, emails, and with ``names`` names) are copied."""

    model_config = ConfigDict(extra="forbid")

    names: bool = True
    allow: list[str] = Field(
        default_factory=list, description="Words always allowed as facts (the agent's constants)."
    )


class OutputOptions(BaseModel):
    """A choice set (``labels``, or ``choices_from`` each input), a JSON ``schema`` or
    ``grounded_text``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    labels: list[str] | None = None
    choices_from: str | None = Field(
        None,
        description="'module:function' mapping the task's input text to the texts the "
        "output may be (a grammar of whole answers per input, e.g. replies rendered from "
        "facts); it raises ValueError for input it cannot use.",
    )
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    grounded_text: GroundedTextOptions | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> OutputOptions:
        kinds = (self.labels, self.choices_from, self.schema_, self.grounded_text)
        if sum(kind is not None for kind in kinds) != 1:
            raise ValueError(
                "output needs exactly one of labels, choices_from, schema or grounded_text"
            )
        return self

    def choices(self) -> Callable[[str], Sequence[str]] | None:
        """The ``choices_from`` function, imported; None without one."""
        if self.choices_from is None:
            return None
        module, _, name = self.choices_from.partition(":")
        try:
            function = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"output.choices_from {self.choices_from!r}: {exc}") from exc
        if not callable(function):
            raise ValueError(f"output.choices_from {self.choices_from!r} is not callable")
        return cast("Callable[[str], Sequence[str]]", function)

    def constraint(self) -> OutputConstraint | None:
        """The fixed constraint; None for ``choices_from`` (one per input)."""
        if self.choices_from is not None:
            return None
        if self.labels is not None:
            return Choice(tuple(self.labels))
        if self.grounded_text is not None:
            return GroundedText(
                names=self.grounded_text.names, allow=tuple(self.grounded_text.allow)
            )
        assert self.schema_ is not None
        return JsonOutput(self.schema_)


class SLMOptions(BaseModel):
    """``options`` of an SLM agent's spec."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["transformers", "openai", "encoder"] = Field(
        "transformers",
        description="transformers: a causal LM; openai: an OpenAI-compatible "
        "server; encoder: a fine-tuned encoder with a label or span head (mesh.slm.encoder).",
    )
    model: str | None = Field(None, description="Folder (relative to the spec) or model id.")
    adapter: str | None = Field(
        None,
        description="transformers backend: a LoRA adapter folder (relative to the spec) "
        "merged into options.model at load; the agent is then named after it in usage.",
    )
    base_url: str | None = Field(None, description="openai backend: server URL ending in /v1.")
    model_name: str | None = Field(None, description="openai backend: the served model's name.")
    api_key_env: str | None = Field(
        None,
        description="openai backend: environment variable holding the API key (read when "
        "the backend is built, unless the caller passes api_key).",
    )
    parameters: int | None = Field(
        None,
        ge=1,
        description="Parameter count of the model, for a remote one the mesh cannot "
        "count (a local model's is counted): usage, the agent card and the planner's cost ledger.",
    )
    escalate_below: float | None = Field(
        None,
        le=0,
        description="Mean token log-probability under which the planner should send "
        "this skill's call on to a larger model offering it (published on the agent card).",
    )
    prompt: str = "{input}"
    system: str | None = None
    use_chat_template: bool = True
    output: OutputOptions | None = None
    max_new_tokens: int = Field(96, ge=1)
    stop: list[str] = Field(default_factory=list)
    temperature: float = Field(0.0, ge=0)
    timeout_s: float | None = Field(None, gt=0)
    batching: BatchingOptions = Field(default_factory=BatchingOptions)
    threads: int | None = Field(None, ge=1)
    stream_interval_ms: float = Field(
        50.0, ge=0, description="Streamed chunks are coalesced to at most one event per interval."
    )

    @model_validator(mode="after")
    def _complete(self) -> SLMOptions:
        if self.backend in ("transformers", "encoder") and not self.model:
            raise ValueError(f"the {self.backend} backend needs options.model")
        if self.backend == "encoder" and (
            self.adapter or self.output is None or self.output.grounded_text is not None
        ):
            raise ValueError(
                "the encoder backend answers labels or a JSON object of grounded spans "
                "(options.output.labels or .schema); its folder holds its own adapter"
            )
        if self.backend == "openai" and not (self.base_url and self.model_name):
            raise ValueError("the openai backend needs options.base_url and options.model_name")
        if self.backend == "openai" and self.adapter:
            raise ValueError(
                "options.adapter needs the transformers backend (an OpenAI-"
                "compatible server loads its adapters itself)"
            )
        try:
            self.prompt.format(input="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"prompt must be a str.format template with only {{input}} (double other braces): "
                f"{exc}"
            ) from exc
        return self


class SLMExecutor(Executor):
    """Runs each task's input through the agent's model under its declared output.

    The model loads here, once, when the agent starts (a remote backend only connects);
    ``backend`` replaces it (tests, or an embedding process that shares one model).
    """

    def __init__(
        self,
        spec: ServiceSpec,
        settings: Settings,
        *,
        backend: SLMBackend | None = None,
        api_key: str | None = None,
    ) -> None:
        try:
            self.options = SLMOptions.model_validate(spec.options)
        except ValidationError as exc:
            raise SpecError(f"service {spec.name!r}: invalid SLM options: {exc}") from exc
        self.spec = spec
        self.output = self.options.output.constraint() if self.options.output else None
        try:
            self._choices = self.options.output.choices() if self.options.output else None
        except ValueError as exc:
            raise SpecError(f"service {spec.name!r}: {exc}") from exc
        self.backend = backend or self._build_backend(spec, settings, api_key)
        if self.output is not None:
            try:
                self.backend.check_output(self.output)
            except SchemaError as exc:
                raise SpecError(f"service {spec.name!r}: options.output: {exc}") from exc
        self._running: dict[str, GenerationStream] = {}
        self.observers: list[Callable[[FinishedCall], None]] = []
        """Called with every finished call, on the request path (so: quick, never raising):
        the call recorder (:mod:`mesh.recording`) is one, installed by whoever builds the agent."""
        self.output_spec = (
            self.options.output.model_dump(by_alias=True, exclude_none=True)
            if self.options.output
            else None
        )

    async def warm_up(self, rounds: int = 2) -> None:
        """Answers the skills' own examples before the agent reports ready.

        The first generations pay for kernel selection, memory pools and grammar
        compilation; paid here, they do not land on the first customers. An example the
        model cannot answer is logged and skipped: warm-up never keeps an agent down.
        """
        examples = [text for skill in self.spec.skills for text in skill.examples][:4]
        for _ in range(rounds):
            for text in examples:
                try:
                    await self.backend.generate(self.request_for(text))
                except (SLMError, ValueError) as exc:
                    logger.warning("warm-up example %r failed: %s", text[:60], exc)

    def card_extensions(self) -> list[Any]:
        """The model behind this agent, on its card: the planner routes and prices by it."""
        return [
            ModelFacts(
                model=self.backend.model_name,
                parameters=self.backend.parameters,
                backend=self.options.backend,
                escalate_below=self.options.escalate_below,
            ).extension()
        ]

    def _build_backend(
        self, spec: ServiceSpec, settings: Settings, api_key: str | None
    ) -> SLMBackend:
        return build_backend(self.options, spec, settings, api_key)

    def request_for(self, text: str) -> GenerationRequest:
        """The generation a task with input ``text`` asks for."""
        options = self.options
        prompt = options.prompt.format(input=text)
        output = self.output.with_source(text) if self.output is not None else None
        if self._choices is not None:
            try:
                output = Choice(tuple(self._choices(text)))
            except (ValueError, KeyError, TypeError, SchemaError) as exc:
                raise InputError(f"no answer fits this input: {exc}") from exc
        common: dict[str, Any] = dict(
            max_new_tokens=options.max_new_tokens,
            stop=tuple(options.stop),
            timeout_s=options.timeout_s,
            output=output,
            temperature=options.temperature,
        )
        if options.system is not None:
            return GenerationRequest(
                messages=[
                    {"role": "system", "content": options.system},
                    {"role": "user", "content": prompt},
                ],
                **common,
            )
        return GenerationRequest(prompt=prompt, **common)

    async def execute(self, request: Request, task: Reporter) -> None:
        started = time.perf_counter()
        await task.working()
        text = input_text(request.message)
        outcome = await self._answer(text, task)
        if self.observers and outcome is not None:
            call = self._finished(task.task_id, text, outcome, started)
            for observe in self.observers:
                observe(call)

    async def _answer(self, text: str, updater: Reporter) -> _Outcome | None:
        """Runs the task to its end state; the outcome to record, None when it was cancelled."""
        if not text.strip():
            reason = "the message has no text and no data to work on"
            await updater.reject(_message(updater, "empty_input", reason))
            return _Outcome("rejected", error=f"empty_input: {reason}")
        try:
            request = self.request_for(text)
        except InputError as exc:
            await updater.reject(_message(updater, "bad_input", str(exc)))
            return _Outcome("rejected", error=f"bad_input: {exc}")
        span = genai.start_generation(
            self.backend.model_name,
            provider=self.options.backend,
            messages=request.messages,
            prompt=request.prompt,
            max_tokens=request.max_new_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            output_type="json" if isinstance(self.output, JsonOutput) else "text",
        )
        with genai.current(span):  # a remote backend's request task carries the span on
            stream = self.backend.stream(request)
        self._running[updater.task_id] = stream
        artifact_id = uuid.uuid4().hex
        try:
            started = await self._stream_chunks(stream, updater, artifact_id)
            generation = await stream.result()
        except GenerationCancelledError as exc:
            genai.end_generation(span, error=exc)
            return None
        except InputError as exc:
            genai.end_generation(span, error=exc)
            await updater.reject(_message(updater, "bad_input", str(exc)))
            return _Outcome("rejected", error=f"bad_input: {exc}")
        except SLMError as exc:
            partial: Generation | None = getattr(exc, "generation", None)
            genai.end_generation(span, usage=partial.usage if partial else None, error=exc)
            logger.warning("task %s failed: %s", updater.task_id, exc)
            await updater.fail(_message(updater, "generation_failed", str(exc)))
            return _Outcome("failed", partial, error=f"generation_failed: {exc}")
        except BaseException as exc:
            genai.end_generation(span, error=exc)
            raise
        finally:
            self._running.pop(updater.task_id, None)
        genai.end_generation(
            span,
            usage=generation.usage,
            finish_reason=generation.finish_reason,
            text=generation.text,
        )
        await updater.artifact(
            self._final_parts(generation),
            artifact_id=artifact_id,
            name=OUTPUT_ARTIFACT,
            metadata={
                "usage": generation.usage.to_dict(),
                "finish_reason": generation.finish_reason,
            },
            append=False if started else None,
            last_chunk=True,
        )
        await updater.complete()
        return _Outcome("completed", generation, valid=True)

    def _finished(self, task_id: str, text: str, outcome: _Outcome, started: float) -> FinishedCall:
        """What observers see of one finished task."""
        generation = outcome.generation
        if generation is None:
            answer = None
        elif outcome.valid:
            answer = self._output_text(generation)
        else:
            answer = generation.text
        return FinishedCall(
            task_id=task_id,
            input=text,
            state=outcome.state,
            output=answer,
            valid=outcome.valid,
            error=outcome.error,
            value=generation.value if generation is not None and outcome.valid else None,
            usage=generation.usage if generation is not None else None,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    async def _stream_chunks(
        self, stream: GenerationStream, updater: Reporter, artifact_id: str
    ) -> bool:
        """Forwards text chunks as artifact updates, coalesced; returns whether any went out."""
        interval = self.options.stream_interval_ms / 1000
        pending: list[str] = []
        last = time.monotonic()
        started = False
        async for chunk in stream:
            pending.append(chunk)
            now = time.monotonic()
            if now - last >= interval:
                await updater.artifact(
                    [new_text_part("".join(pending))],
                    artifact_id=artifact_id,
                    name=OUTPUT_ARTIFACT,
                    append=started or None,
                    last_chunk=False,
                )
                started, pending, last = True, [], now
        return started

    def _final_parts(self, generation: Generation) -> list[Part]:
        if isinstance(self.output, Choice):
            return [
                new_data_part({"label": generation.value}, media_type=JSON_MEDIA_TYPE),
                new_text_part(str(generation.value)),
            ]
        if isinstance(self.output, JsonOutput):
            # The text part keeps the schema's key order, which a protobuf Struct loses.
            return [
                new_data_part(generation.value, media_type=JSON_MEDIA_TYPE),
                new_text_part(self._output_text(generation), media_type=JSON_MEDIA_TYPE),
            ]
        return [new_text_part(generation.text)]

    def _output_text(self, generation: Generation) -> str:
        """The answer as text: the label, compact JSON in the schema's key order, or the text."""
        if isinstance(self.output, Choice):
            return str(generation.value)
        if isinstance(self.output, JsonOutput):
            return json.dumps(generation.value, ensure_ascii=False, separators=(",", ":"))
        return generation.text

    async def cancel(self, request: Request, task: Reporter) -> None:
        """Frees the task's batch slot and marks it canceled."""
        stream = self._running.pop(request.task_id, None)
        if stream is not None:
            stream.cancel()
        if request.task is not None and request.task.status.state in FINISHED_STATES:
            return
        await task.cancel()

    async def aclose(self) -> None:
        await self.backend.aclose()


@dataclass(frozen=True)
class FinishedCall:
    """One finished task of an SLM agent, as :attr:`SLMExecutor.observers` see it.

    ``output`` is the answer as text (the label, compact JSON in schema order, or the text),
    the invalid output of a failed call, or None; ``value`` the parsed answer of a valid one.
    """

    task_id: str
    input: str
    state: Literal["completed", "failed", "rejected"]
    output: str | None
    valid: bool
    error: str | None
    value: Any
    usage: Usage | None
    latency_ms: float


@dataclass(frozen=True)
class _Outcome:
    """How a task ended, for the observers."""

    state: Literal["completed", "failed", "rejected"]
    generation: Generation | None = None
    valid: bool = False
    error: str | None = None


def build_backend(
    options: SLMOptions, spec: ServiceSpec, settings: Settings, api_key: str | None = None
) -> SLMBackend:
    """The backend ``options`` name: a local causal LM or encoder, or an OpenAI-compatible
    server."""
    if options.backend == "openai":
        from mesh.slm.openai_backend import OpenAIBackend

        if options.api_key_env and api_key is None:
            # The one place a secret is read by name from the environment: the spec names
            # the variable (like OPENAI_API_KEY), the value never appears in config or logs.
            api_key = os.environ.get(options.api_key_env)
            if api_key is None:
                logger.warning(
                    "service %s: options.api_key_env=%s is not set; calls go without a key",
                    spec.name,
                    options.api_key_env,
                )
        assert options.base_url
        assert options.model_name
        return OpenAIBackend(
            options.base_url,
            options.model_name,
            api_key=api_key,
            timeout_s=options.timeout_s or settings.request_timeout_s,
            parameters=options.parameters,
        )
    assert options.model
    try:
        causal = (
            {}
            if options.backend == "encoder"
            else {"use_chat_template": options.use_chat_template, "adapter": options.adapter}
        )
        return local_backend(
            options.backend,
            options.model,
            base_dir=spec.path,
            max_batch_size=options.batching.max_batch_size,
            max_wait_ms=options.batching.max_wait_ms,
            threads=options.threads,
            **causal,
        )
    except ModelLoadError as exc:
        raise SpecError(f"service {spec.name!r}: {exc}") from exc


def input_text(message: Message | None) -> str:
    """The message's data part as compact JSON if it has one, else its text parts joined."""
    if message is None:
        return ""
    data = get_data_parts(message.parts)
    if data:
        value = data[0] if len(data) == 1 else data
        return json.dumps(restore_ints(value), separators=(",", ":"), ensure_ascii=False)
    return get_message_text(message)


def _message(updater: Reporter, code: str, text: str) -> Message:
    return updater.agent_message(
        [
            new_text_part(f"{code}: {text}"),
            new_data_part({"error": {"code": code, "message": text}}, media_type=JSON_MEDIA_TYPE),
        ]
    )
