"""The remote backend: any OpenAI-compatible chat-completions server.

vLLM, SGLang, NIM, llama.cpp's server, a hosted large model used for escalation, or another
mesh SLM behind :mod:`mesh.slm.openai_api`. Generations always stream (so time to first
token is measured here); a declared output goes out as ``response_format`` (json_schema)
and comes back validated locally all the same: a server that ignores the format, or a model
that breaks it, produces an error, never an invalid value.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import httpx

from mesh.slm.errors import (
    GenerationFailedError,
    InputError,
    InputTooLongError,
    SLMError,
)
from mesh.slm.generation import (
    FinishReason,
    Generation,
    GenerationRequest,
    GenerationStream,
    TokenLogprob,
    Usage,
    finalize,
)
from mesh.slm.grammar import Choice, JsonOutput, OutputConstraint, check_schema
from mesh.telemetry import enabled as telemetry_enabled
from mesh.telemetry.propagation import carrier


class OpenAIBackend:
    """Generations from ``base_url`` (ending in ``/v1``) with model ``model``.

    ``api_key`` is the key's value (sent as a bearer token); resolving where it comes from
    (an environment variable named in the agent spec, a secret store) is the caller's job.
    ``parameters`` is reported in usage when known.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        parameters: int | None = None,
        logprobs: bool = True,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._parameters = parameters
        self.logprobs = logprobs
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=5.0))
        self._headers = headers
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def model_name(self) -> str:
        return self.model

    @property
    def parameters(self) -> int | None:
        return self._parameters

    def check_output(self, output: OutputConstraint) -> None:
        if isinstance(output, JsonOutput):
            check_schema(output.schema)

    def payload(self, request: GenerationRequest) -> dict[str, Any]:
        """The chat-completions request body for ``request``."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": request.chat(),
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.top_p < 1:
            body["top_p"] = request.top_p
        if request.seed is not None:
            body["seed"] = request.seed
        if request.stop and not isinstance(request.output, (JsonOutput, Choice)):
            body["stop"] = list(request.stop)
        if self.logprobs:
            body["logprobs"] = True
        if isinstance(request.output, JsonOutput):
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": "output",
                    "schema": dict(request.output.schema),
                    "strict": True,
                },
            }
        elif isinstance(request.output, Choice):
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": "label",
                    "schema": {"type": "string", "enum": list(request.output.labels)},
                    "strict": True,
                },
            }
        return body

    def stream(self, request: GenerationRequest) -> GenerationStream:
        stream = GenerationStream(partial(finalize, request.output))
        task = asyncio.get_running_loop().create_task(self._run(request, stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        stream.on_cancel(task.cancel)
        return stream

    async def generate(self, request: GenerationRequest) -> Generation:
        return await self.stream(request).result()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._own_http:
            await self._http.aclose()

    async def _run(self, request: GenerationRequest, stream: GenerationStream) -> None:
        try:
            stream.send(await asyncio.wait_for(self._generate(request, stream), request.timeout_s))
        except TimeoutError:
            stream.send(
                GenerationFailedError(f"{self.base_url} did not finish within {request.timeout_s}s")
            )
        except SLMError as exc:
            stream.send(exc)

    async def _generate(self, request: GenerationRequest, stream: GenerationStream) -> Generation:
        started = time.monotonic()
        first_at: float | None = None
        parts: list[str] = []
        logprobs: list[TokenLogprob] = []
        usage: dict[str, Any] = {}
        finish: FinishReason = "stop"
        url = f"{self.base_url}/chat/completions"
        try:
            # The generation's span goes along (W3C traceparent): vLLM, SGLang and NIM join it.
            headers = {**self._headers, **carrier()} if telemetry_enabled() else self._headers
            async with self._http.stream(
                "POST", url, json=self.payload(request), headers=headers
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _status_error(response)
                async for event in _sse_events(response):
                    if "error" in event:
                        raise GenerationFailedError(f"{url}: {_message(event['error'])}")
                    usage = event.get("usage") or usage
                    for choice in event.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            first_at = first_at or time.monotonic()
                            parts.append(text)
                            stream.send(text)
                        for item in (choice.get("logprobs") or {}).get("content") or []:
                            logprobs.append(
                                TokenLogprob(str(item.get("token", "")), float(item["logprob"]))
                            )
                        if choice.get("finish_reason") == "length":
                            finish = "length"
        except httpx.HTTPError as exc:
            raise GenerationFailedError(f"{url} could not be reached: {exc}") from exc
        elapsed = time.monotonic() - started
        output_tokens = int(usage.get("completion_tokens") or len(logprobs) or len(parts))
        return Generation(
            text="".join(parts),
            finish_reason=finish,
            usage=Usage(
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=output_tokens,
                ttft_ms=None if first_at is None else round((first_at - started) * 1000, 3),
                tokens_per_s=round(output_tokens / elapsed, 3) if elapsed > 0 else None,
                model=self.model,
                parameters=self._parameters,
                mean_logprob=(
                    sum(t.logprob for t in logprobs) / len(logprobs) if logprobs else None
                ),
            ),
            logprobs=tuple(logprobs),
        )


async def _sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON payloads of a server-sent event stream, up to ``[DONE]``."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            yield json.loads(data)
        except json.JSONDecodeError as exc:
            raise GenerationFailedError(
                f"the server sent an unreadable event: {data[:120]!r}"
            ) from exc


def _message(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


def _status_error(response: httpx.Response) -> SLMError:
    try:
        error = response.json().get("error", {})
    except (json.JSONDecodeError, AttributeError):
        error = {"message": response.text[:200]}
    message = f"{response.request.url} answered {response.status_code}: {_message(error)}"
    if (
        response.status_code == 400
        and isinstance(error, dict)
        and error.get("code") == "context_length_exceeded"
    ):
        return InputTooLongError(message)
    if 400 <= response.status_code < 500 and response.status_code not in (401, 403, 404, 408, 429):
        return InputError(message)
    return GenerationFailedError(message)
