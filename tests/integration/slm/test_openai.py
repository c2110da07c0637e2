"""The OpenAI-compatible server on a tiny model, served for real by uvicorn, and the
OpenAI-compatible backend talking to it (and to a misbehaving fake server)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from mesh.slm import (
    Choice,
    GenerationRequest,
    InputTooLongError,
    InvalidOutputError,
    JsonOutput,
    OpenAIBackend,
    TransformersBackend,
    create_openai_app,
)
from tests.support.procs import free_port
from tests.support.tiny_slm import save_tiny_model

SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"enum": ["refund_request", "order_status", "other"]},
        "order_id": {"type": ["string", "null"], "x-grounded": True, "maxLength": 12},
    },
    "required": ["intent", "order_id"],
    "additionalProperties": False,
}
MESSAGE = "Where is my order ORD-104233?"


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TransformersBackend]:
    folder = save_tiny_model(tmp_path_factory.mktemp("openai") / "tiny-qwen2", "qwen2", "bpe")
    backend = TransformersBackend(str(folder), max_wait_ms=5, threads=1)
    yield backend
    backend.engine.close()


@pytest.fixture
async def base_url(local: TransformersBackend) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_openai_app(local),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
    )
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    await task


def chat(**extra: Any) -> dict[str, Any]:
    return {
        "model": "tiny-qwen2",
        "messages": [{"role": "user", "content": MESSAGE}],
        "max_tokens": 12,
        **extra,
    }


async def test_models_and_plain_completion(base_url: str) -> None:
    async with httpx.AsyncClient() as http:
        models = (await http.get(f"{base_url}/models")).json()
        assert [m["id"] for m in models["data"]] == ["tiny-qwen2"]
        response = await http.post(f"{base_url}/chat/completions", json=chat(logprobs=True))
    assert response.status_code == 200
    body = response.json()
    choice = body["choices"][0]
    assert body["object"] == "chat.completion"
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in {"stop", "length"}
    assert body["usage"]["completion_tokens"] == len(choice["logprobs"]["content"]) > 0
    assert (
        body["usage"]["total_tokens"]
        == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )


async def test_streaming_matches_non_streaming(base_url: str) -> None:
    async with httpx.AsyncClient() as http:
        whole = (await http.post(f"{base_url}/chat/completions", json=chat())).json()
        events = []
        async with http.stream(
            "POST",
            f"{base_url}/chat/completions",
            json=chat(stream=True, stream_options={"include_usage": True}),
        ) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
    assert events[-1] == "[DONE]"
    payloads = [json.loads(e) for e in events[:-1]]
    text = "".join(p["choices"][0]["delta"].get("content", "") for p in payloads if p["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    assert payloads[-1]["usage"] == whole["usage"]
    finishes = [p["choices"][0]["finish_reason"] for p in payloads if p["choices"]]
    assert finishes[-1] == whole["choices"][0]["finish_reason"]


async def test_json_schema_response_format_is_enforced(base_url: str) -> None:
    body = chat(
        max_tokens=80,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "triage", "schema": SCHEMA, "strict": True},
        },
    )
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{base_url}/chat/completions", json=body)
    value = json.loads(response.json()["choices"][0]["message"]["content"])
    assert set(value) == {"intent", "order_id"}
    assert value["order_id"] is None or value["order_id"] in MESSAGE


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "n"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
        (
            {
                "messages": [{"role": "user", "content": "hi"}],
                "response_format": {"type": "json_object"},
            },
            400,
            "response_format",
        ),
        (
            {
                "messages": [{"role": "user", "content": "hi"}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "date"}},
                },
            },
            400,
            "response_format",
        ),
        (
            {"messages": [{"role": "user", "content": "hi " * 300}], "max_tokens": 200},
            400,
            "messages",
        ),
        ({"messages": [{"role": "user", "content": "hi"}], "model": "gpt-9"}, 404, "model"),
    ],
)
async def test_bad_requests_get_openai_errors(
    base_url: str, body: Any, status: int, param: str | None
) -> None:
    async with httpx.AsyncClient() as http:
        if isinstance(body, bytes):
            response = await http.post(f"{base_url}/chat/completions", content=body)
        else:
            response = await http.post(f"{base_url}/chat/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["message"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


async def test_backend_round_trip_against_the_server(
    base_url: str, local: TransformersBackend
) -> None:
    remote = OpenAIBackend(base_url, "tiny-qwen2", api_key="secret", parameters=local.parameters)
    try:
        request = GenerationRequest(
            prompt=MESSAGE, max_new_tokens=80, output=JsonOutput(SCHEMA, MESSAGE)
        )
        stream = remote.stream(request)
        chunks = [c async for c in stream]
        generation = await stream.result()
        assert "".join(chunks) == generation.text
        assert generation.value == (await local.generate(request)).value
        usage = generation.usage
        assert usage.output_tokens > 0
        assert usage.input_tokens > 0
        assert usage.ttft_ms is not None
        assert usage.mean_logprob is not None
        assert usage.model == "tiny-qwen2"
        assert usage.parameters == local.parameters

        labels = Choice(("refund_request", "order_status"))
        label = await remote.generate(
            GenerationRequest(prompt=MESSAGE, max_new_tokens=20, output=labels)
        )
        assert label.value in labels.labels
        assert label.text.startswith('"')

        with pytest.raises(InputTooLongError):
            await remote.generate(GenerationRequest(prompt="hi " * 300, max_new_tokens=200))
    finally:
        await remote.aclose()


def fake_server(content: str) -> httpx.AsyncClient:
    """An OpenAI-compatible server whose model ignores the requested format."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["response_format"]["type"] == "json_schema"
        chunk = {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": "stop"}]}
        body = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    "content",
    [
        '{"intent": "refund_request"',
        '{"intent":"cancel","order_id":null}',
        '{"intent":"other","order_id":"ORD-9"}',
    ],
)
async def test_remote_output_is_validated_never_passed_through(content: str) -> None:
    remote = OpenAIBackend("http://fake/v1", "big", http=fake_server(content))
    with pytest.raises(InvalidOutputError):
        await remote.generate(GenerationRequest(prompt=MESSAGE, output=JsonOutput(SCHEMA, MESSAGE)))


async def test_payload_carries_schema_and_key() -> None:
    remote = OpenAIBackend("http://x/v1/", "m", api_key="k")
    await remote.aclose()
    body = remote.payload(
        GenerationRequest(prompt="p", max_new_tokens=5, stop=["\n"], output=JsonOutput(SCHEMA))
    )
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert body["max_tokens"] == 5
    assert "stop" not in body
    assert body["stream"] is True


async def test_the_api_key_is_sent_as_a_bearer_token() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        chunk = {"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]}
        body = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    remote = OpenAIBackend("http://x/v1/", "m", api_key="k", http=http)
    try:
        await remote.generate(GenerationRequest(prompt="p", max_new_tokens=5))
    finally:
        await remote.aclose()
    assert seen == ["Bearer k"]
