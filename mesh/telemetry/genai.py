"""GenAI semantic-convention spans for model generations and tool executions.

Both helpers return ``None`` while telemetry is off, and every ``end_*`` accepts ``None``,
so a caller pays one attribute check. Spans start as children of the current context (the
agent's ``invoke_agent`` span) without becoming current themselves: a generation streams
across many event-loop turns and nothing runs inside it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context

from mesh.telemetry import names
from mesh.telemetry.setup import STATE


class GenerationSpan:
    """One ``chat {model}`` / ``text_completion {model}`` span and its start time."""

    __slots__ = ("model", "operation", "span", "started")

    def __init__(self, span: Span, model: str, operation: str) -> None:
        self.span = span
        self.model = model
        self.operation = operation
        self.started = time.monotonic()


def start_generation(
    model: str,
    *,
    provider: str,
    messages: Sequence[Mapping[str, str]] | None = None,
    prompt: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    output_type: str = "text",
    kind: SpanKind = SpanKind.CLIENT,
    parent: Context | None = None,
) -> GenerationSpan | None:
    """Opens the span of one generation (``chat`` for messages, ``text_completion`` for a prompt).

    A CLIENT span under the current context where the mesh calls a model; a SERVER span under
    ``parent`` (the caller's extracted W3C context) where the mesh serves one.
    """
    tracer = STATE.tracer
    if tracer is None:
        return None
    operation = names.OP_CHAT if messages is not None else names.OP_TEXT_COMPLETION
    attributes: dict[str, Any] = {
        names.OPERATION: operation,
        names.PROVIDER: provider,
        names.REQUEST_MODEL: model,
        names.OUTPUT_TYPE: output_type,
        names.OPENINFERENCE_KIND: "LLM",
    }
    if max_tokens is not None:
        attributes[names.REQUEST_MAX_TOKENS] = max_tokens
    if temperature is not None:
        attributes[names.REQUEST_TEMPERATURE] = temperature
    if top_p is not None:
        attributes[names.REQUEST_TOP_P] = top_p
    if seed is not None:
        attributes[names.REQUEST_SEED] = seed
    if STATE.content:
        chat = (
            [dict(m) for m in messages]
            if messages is not None
            else [{"role": "user", "content": prompt or ""}]
        )
        attributes[names.INPUT_MESSAGES] = json.dumps(
            [
                {
                    "role": m.get("role", "user"),
                    "parts": [{"type": "text", "content": m.get("content", "")}],
                }
                for m in chat
            ],
            ensure_ascii=False,
        )
    span = tracer.start_span(
        f"{operation} {model}", context=parent, kind=kind, attributes=attributes
    )
    return GenerationSpan(span, model, operation)


@contextlib.contextmanager
def current(handle: GenerationSpan | None) -> Iterator[None]:
    """Makes the generation's span current for a block (tasks started inside inherit it)."""
    if handle is None:
        yield
        return
    token = otel_context.attach(set_span_in_context(handle.span))
    try:
        yield
    finally:
        otel_context.detach(token)


def end_generation(
    handle: GenerationSpan | None,
    *,
    usage: Any = None,
    finish_reason: str | None = None,
    text: str | None = None,
    error: BaseException | None = None,
) -> None:
    """Closes the span with the generation's usage (a :class:`mesh.slm.Usage`) or its error."""
    if handle is None:
        return
    span = handle.span
    elapsed = time.monotonic() - handle.started
    base: dict[str, Any] = {names.REQUEST_MODEL: handle.model, names.OPERATION: handle.operation}
    instruments = STATE.instruments
    if usage is not None:
        attributes: dict[str, Any] = {
            names.RESPONSE_MODEL: usage.model,
            names.USAGE_INPUT_TOKENS: usage.input_tokens,
            names.USAGE_OUTPUT_TOKENS: usage.output_tokens,
        }
        if usage.ttft_ms is not None:
            attributes[names.TIME_TO_FIRST_CHUNK] = usage.ttft_ms / 1000
        optional = (
            (names.TOKENS_PER_S, usage.tokens_per_s),
            (names.PARAMETERS, usage.parameters),
            (names.MEAN_LOGPROB, usage.mean_logprob),
            (names.BATCH_SIZE, getattr(usage, "batch_size", None)),
            (
                names.QUEUE_WAIT,
                None if getattr(usage, "queue_ms", None) is None else usage.queue_ms / 1000,
            ),
        )
        attributes.update({k: v for k, v in optional if v is not None})
        span.set_attributes(attributes)
        if instruments is not None:
            instruments.genai_tokens.record(usage.input_tokens, {**base, names.TOKEN_TYPE: "input"})
            instruments.genai_tokens.record(
                usage.output_tokens, {**base, names.TOKEN_TYPE: "output"}
            )
            if usage.ttft_ms is not None:
                instruments.genai_ttft.record(usage.ttft_ms / 1000, base)
            if usage.tokens_per_s is not None:
                instruments.slm_tokens_per_s.record(usage.tokens_per_s, base)
            if getattr(usage, "batch_size", None):
                instruments.slm_batch.record(usage.batch_size, base)
            if getattr(usage, "queue_ms", None) is not None:
                instruments.slm_queue_wait.record(usage.queue_ms / 1000, base)
    if finish_reason is not None:
        span.set_attribute(names.FINISH_REASONS, [finish_reason])
    if STATE.content and text is not None:
        span.set_attribute(
            names.OUTPUT_MESSAGES,
            json.dumps(
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": text}],
                        "finish_reason": finish_reason or "stop",
                    }
                ],
                ensure_ascii=False,
            ),
        )
    if error is not None:
        _fail(span, error)
        base = {**base, names.ERROR_TYPE: type(error).__name__}
    if instruments is not None:
        instruments.genai_duration.record(elapsed, base)
    span.end()


class ToolSpan:
    """One ``execute_tool {name}`` span and its start time."""

    __slots__ = ("name", "span", "started")

    def __init__(self, span: Span, name: str) -> None:
        self.span = span
        self.name = name
        self.started = time.monotonic()


def start_tool(
    name: str, call_id: str | None, arguments: Any = None, description: str | None = None
) -> ToolSpan | None:
    """Opens the ``execute_tool {name}`` span of one tool call."""
    tracer = STATE.tracer
    if tracer is None:
        return None
    attributes: dict[str, Any] = {
        names.OPERATION: names.OP_EXECUTE_TOOL,
        names.TOOL_NAME: name,
        names.TOOL_TYPE: "function",
        names.OPENINFERENCE_KIND: "TOOL",
    }
    if call_id:
        attributes[names.TOOL_CALL_ID] = call_id
    if description:
        attributes["gen_ai.tool.description"] = description
    if STATE.content and arguments is not None:
        attributes[names.TOOL_CALL_ARGUMENTS] = json.dumps(
            arguments, ensure_ascii=False, default=str
        )
    span = tracer.start_span(
        f"{names.OP_EXECUTE_TOOL} {name}", kind=SpanKind.INTERNAL, attributes=attributes
    )
    return ToolSpan(span, name)


def end_tool(
    handle: ToolSpan | None,
    *,
    outcome: str,
    result: Any = None,
    replayed: bool | None = None,
    error: BaseException | None = None,
) -> None:
    """Closes a tool span: ``outcome`` is ok, refused (business rule), rejected or failed."""
    if handle is None:
        return
    span = handle.span
    span.set_attribute(names.TOOL_OUTCOME, outcome)
    if replayed is not None:
        span.set_attribute(names.TOOL_REPLAYED, replayed)
    if STATE.content and result is not None:
        span.set_attribute(
            names.TOOL_CALL_RESULT, json.dumps(result, ensure_ascii=False, default=str)
        )
    if error is not None:
        _fail(span, error)
    elif outcome in ("rejected", "failed"):
        span.set_status(Status(StatusCode.ERROR, outcome))
    instruments = STATE.instruments
    if instruments is not None:
        instruments.tool_duration.record(
            time.monotonic() - handle.started,
            {names.TOOL_NAME: handle.name, names.TOOL_OUTCOME: outcome},
        )
    span.end()


def _fail(span: Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.set_attribute(names.ERROR_TYPE, type(error).__name__)
