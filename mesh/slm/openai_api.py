"""The mesh's SLMs on the OpenAI chat-completions API, so any OpenAI client can use them.

``create_openai_app(backend)`` serves ``POST /v1/chat/completions`` (JSON or ``stream: true``
server-sent events) and ``GET /v1/models``. ``response_format: {"type": "json_schema"}`` is
decoded under constraint (the mesh's schema subset, ``x-grounded`` strings copied from the
user messages); a schema outside the subset is a 400, as is every malformed request, in
OpenAI's error shape. ``logprobs: true`` returns the chosen tokens' log-probabilities (no
alternatives: ``top_logprobs`` is always empty).

With telemetry on, each completion runs in a ``chat {model}`` SERVER span that continues the
caller's trace (W3C ``traceparent`` in the request headers), so a remote caller's generation
span and the mesh's serving span sit in one trace.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from mesh.slm.errors import (
    GenerationCancelledError,
    IncompleteOutputError,
    InputError,
    InputTooLongError,
    InvalidOutputError,
    SchemaError,
    SLMError,
)
from mesh.slm.generation import Generation, GenerationRequest, GenerationStream, SLMBackend
from mesh.slm.grammar import JsonOutput, check_schema
from mesh.telemetry import genai
from mesh.telemetry.propagation import from_asgi
from mesh.telemetry.setup import STATE

DEFAULT_MAX_TOKENS = 256
PROVIDER = "slmesh"
"""``gen_ai.provider.name`` of the serving span: the mesh itself serves the model here."""


class _TextPart(BaseModel):
    type: Literal["text"]
    text: str


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class _JsonSchema(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str = "output"
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class _ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: _JsonSchema | None = None


class _StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's request the mesh honours; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None
    response_format: _ResponseFormat | None = None
    logprobs: bool = False
    seed: int | None = None


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = (
            status,
            message,
            param,
            code,
            kind,
        )

    def response(self) -> JSONResponse:
        return JSONResponse(
            status_code=self.status,
            content=_error_body(self.message, self.kind, self.param, self.code),
        )


def _error_body(message: str, kind: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def create_openai_app(backend: SLMBackend) -> FastAPI:
    """A FastAPI app serving ``backend`` on the OpenAI chat-completions API."""
    app = FastAPI(title=f"slmesh OpenAI-compatible API ({backend.model_name})")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = (
            f"{where}: {first.get('msg', 'invalid request')}"
            if where
            else str(first.get("msg", "invalid request"))
        )
        return _ApiError(400, message, param=where or None).response()

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return JSONResponse(
            status_code=exc.status_code, content=_error_body(str(exc.detail), kind, None, None)
        )

    @app.exception_handler(_ApiError)
    async def _api(_: Request, exc: _ApiError) -> JSONResponse:
        return exc.response()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": backend.model_name, "object": "model", "created": 0, "owned_by": "slmesh"}
            ],
        }

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> JSONResponse | StreamingResponse:
        body = await _json_body(request)
        try:
            chat = ChatCompletionRequest.model_validate(body)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from exc
        if chat.model and chat.model != backend.model_name:
            raise _ApiError(
                404,
                f"the model {chat.model!r} does not exist; this server has {backend.model_name!r}",
                param="model",
                code="model_not_found",
            )
        generation_request = _generation_request(chat)
        span = _server_span(request, generation_request, backend.model_name)
        with genai.current(span):  # a remote backend behind this server carries the trace on
            stream = backend.stream(generation_request)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if chat.stream:
            return await _streaming_response(stream, chat, completion_id, backend.model_name, span)
        try:
            generation = await _result(stream)
        except BaseException as exc:
            genai.end_generation(span, error=exc)
            raise
        genai.end_generation(span, usage=generation.usage, finish_reason=generation.finish_reason)
        return JSONResponse(_completion(generation, chat, completion_id, backend.model_name))

    return app


async def _result(stream: GenerationStream) -> Generation:
    """The whole generation; a cut-off constrained output is a ``length`` finish, not an error."""
    try:
        return await stream.result()
    except InvalidOutputError as exc:
        return _cut_off(exc)
    except SLMError as exc:
        raise _api_error(exc) from exc


def _server_span(
    request: Request, generation: GenerationRequest, model: str
) -> genai.GenerationSpan | None:
    """The completion's SERVER span, a child of the caller's W3C context when it sent one."""
    if STATE.tracer is None:
        return None
    return genai.start_generation(
        model,
        provider=PROVIDER,
        messages=generation.messages,
        max_tokens=generation.max_new_tokens,
        temperature=generation.temperature,
        top_p=generation.top_p,
        seed=generation.seed,
        output_type="text" if generation.output is None else "json",
        kind=SpanKind.SERVER,
        parent=from_asgi(dict(request.scope["headers"])),
    )


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _ApiError(400, f"the request body is not JSON: {exc}") from exc


def _generation_request(chat: ChatCompletionRequest) -> GenerationRequest:
    output = None
    response_format = chat.response_format
    if response_format is not None and response_format.type == "json_object":
        raise _ApiError(
            400,
            "response_format json_object is not supported; send a json_schema",
            param="response_format",
            code="unsupported_response_format",
        )
    if response_format is not None and response_format.type == "json_schema":
        if response_format.json_schema is None:
            raise _ApiError(
                400,
                "response_format.json_schema is required for type json_schema",
                param="response_format",
            )
        schema = response_format.json_schema.schema_
        try:
            check_schema(schema)
        except SchemaError as exc:
            raise _ApiError(400, str(exc), param="response_format", code="invalid_schema") from exc
        source = "\n".join(m.text() for m in chat.messages if m.role == "user")
        output = JsonOutput(schema, source)
    stop = [chat.stop] if isinstance(chat.stop, str) else list(chat.stop or [])
    return GenerationRequest(
        messages=[{"role": m.role, "content": m.text()} for m in chat.messages],
        max_new_tokens=chat.max_completion_tokens or chat.max_tokens or DEFAULT_MAX_TOKENS,
        stop=stop,
        output=output,
        temperature=chat.temperature or 0.0,
        top_p=chat.top_p or 1.0,
        seed=chat.seed,
    )


def _api_error(exc: SLMError) -> _ApiError:
    if isinstance(exc, InputTooLongError):
        return _ApiError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, SchemaError):
        return _ApiError(400, str(exc), param="response_format", code="invalid_schema")
    if isinstance(exc, InputError):
        return _ApiError(400, str(exc), param="messages")
    return _ApiError(500, str(exc), kind="server_error")


def _cut_off(exc: InvalidOutputError) -> Generation:
    """A constrained output cut off by its budget is reported as OpenAI does: finish ``length``."""
    if isinstance(exc, IncompleteOutputError) and isinstance(exc.generation, Generation):
        return exc.generation
    raise _ApiError(500, str(exc), kind="server_error") from exc


def _finish_reason(generation: Generation) -> str:
    return "stop" if generation.finish_reason == "stop" else "length"


def _usage(generation: Generation) -> dict[str, int]:
    usage = generation.usage
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _logprobs(generation: Generation) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": t.token,
                "logprob": t.logprob,
                "bytes": list(t.token.encode("utf-8")),
                "top_logprobs": [],
            }
            for t in generation.logprobs
        ]
    }


def _completion(
    generation: Generation, chat: ChatCompletionRequest, completion_id: str, model: str
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": generation.text},
                "finish_reason": _finish_reason(generation),
                "logprobs": _logprobs(generation) if chat.logprobs else None,
            }
        ],
        "usage": _usage(generation),
    }


async def _streaming_response(
    stream: GenerationStream,
    chat: ChatCompletionRequest,
    completion_id: str,
    model: str,
    span: genai.GenerationSpan | None,
) -> StreamingResponse:
    """SSE response; errors before the first chunk still get a proper HTTP status.

    ``span`` ends with the stream (its usage once known, or its error).
    """
    first: str | None = None
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        pass
    except InvalidOutputError:
        pass  # reported at the end of the stream like any cut-off output
    except SLMError as exc:
        genai.end_generation(span, error=exc)
        raise _api_error(exc) from exc
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, **extra}],
        }
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

    async def events() -> AsyncIterator[bytes]:
        generation: Generation | None = None
        failure: BaseException | None = None
        try:
            yield chunk({"role": "assistant", "content": ""})
            if first:
                yield chunk({"content": first})
            async for text in stream:
                yield chunk({"content": text})
            generation = await stream.result()
        except InvalidOutputError as exc:
            try:
                generation = _cut_off(exc)
            except _ApiError as error:
                failure = error
                yield _sse_error(error)
                return
        except GenerationCancelledError as exc:
            failure = exc
            return
        except SLMError as exc:
            failure = exc
            yield _sse_error(_api_error(exc))
            return
        except BaseException as exc:  # the client went away (GeneratorExit, cancellation)
            failure = exc
            raise
        finally:
            stream.cancel()
            if generation is not None and failure is None:
                genai.end_generation(
                    span, usage=generation.usage, finish_reason=generation.finish_reason
                )
            else:
                genai.end_generation(span, error=failure)
        extra = {"logprobs": _logprobs(generation)} if chat.logprobs else {}
        yield chunk({}, _finish_reason(generation), **extra)
        if chat.stream_options is not None and chat.stream_options.include_usage:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": _usage(generation),
            }
            yield f"data: {json.dumps(payload)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


def _sse_error(error: _ApiError) -> bytes:
    body = _error_body(error.message, error.kind, error.param, error.code)
    return f"data: {json.dumps(body)}\n\n".encode()
