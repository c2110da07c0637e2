"""The generic SLM executor through a2a-sdk's real DefaultRequestHandler (in process)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.helpers import get_data_parts, new_data_part, new_text_part
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.tasks import InMemoryTaskStore
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    Message,
    Part,
    Role,
    SendMessageRequest,
    Task,
    TaskState,
)

from mesh.a2a.executor import Executor, to_sdk
from mesh.config import ServiceSpec, Settings, SpecError
from mesh.slm import OpenAIBackend, SLMExecutor, TransformersBackend
from mesh.slm.executor import input_text
from tests.support.tiny_slm import save_tiny_model

LABELS = ["refund_request", "order_status", "other"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("exec") / "svc" / "model", "llama", "char")


@pytest.fixture(scope="module")
def local(model_dir: Path) -> Iterator[TransformersBackend]:
    backend = TransformersBackend(str(model_dir), max_wait_ms=1, threads=1)
    yield backend
    backend.engine.close()


def spec(folder: Path | None = None, **options: Any) -> ServiceSpec:
    return ServiceSpec(
        name="slm",
        executor="mesh.slm.executor:SLMExecutor",
        options={"model": "./model", **options},
        path=folder,
    )


def handler_for(executor: Executor) -> DefaultRequestHandler:
    card = AgentCard(
        name="slm",
        description="under test",
        version="0.1.0",
        supported_interfaces=[
            AgentInterface(
                url="http://localhost:1/", protocol_binding="JSONRPC", protocol_version="1.0"
            )
        ],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["application/json"],
    )
    return DefaultRequestHandler(
        agent_executor=to_sdk(executor), task_store=InMemoryTaskStore(), agent_card=card
    )


async def send(executor: Executor, *parts: Part) -> Task:
    handler = handler_for(executor)
    message = Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=list(parts))
    try:
        result = await handler.on_message_send(
            SendMessageRequest(message=message), ServerCallContext()
        )
    finally:
        await handler.aclose()
    assert isinstance(result, Task)
    return result


async def test_labels_output_is_a_label_data_part_and_text(local: TransformersBackend) -> None:
    executor = SLMExecutor(
        spec(output={"labels": LABELS}, prompt="Intent of: {input}\n"), Settings(), backend=local
    )
    task = await send(executor, new_text_part("where is ORD-1?"))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    (artifact,) = task.artifacts
    (data,) = get_data_parts(artifact.parts)
    assert data["label"] in LABELS
    assert artifact.parts[1].text == data["label"]
    usage = dict(artifact.metadata["usage"])
    assert usage["model"] == "model"
    assert usage["output_tokens"] >= 1


async def test_free_text_with_stop_and_budget(local: TransformersBackend) -> None:
    executor = SLMExecutor(spec(max_new_tokens=5, stop=["\n"]), Settings(), backend=local)
    task = await send(executor, new_text_part("hello"))
    (artifact,) = task.artifacts
    assert artifact.parts[-1].text is not None
    assert "\n" not in artifact.parts[-1].text
    assert artifact.metadata["finish_reason"] in {"stop", "length"}


async def test_model_loads_relative_to_the_spec_folder(model_dir: Path) -> None:
    executor = SLMExecutor(
        spec(
            model_dir.parent,
            output={
                "schema": {
                    "type": "object",
                    "properties": {"who": {"type": "string", "x-grounded": True}},
                }
            },
            max_new_tokens=60,
            threads=1,
        ),
        Settings(),
    )
    try:
        task = await send(executor, new_data_part({"name": "Ann Lee", "n": 3}))
        (value,) = get_data_parts(task.artifacts[0].parts)
        # protobuf Struct keeps keys sorted, so the input the model saw is this:
        assert value["who"] in '{"n":3,"name":"Ann Lee"}'
    finally:
        await executor.aclose()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model": None}, "needs options.model"),
        ({"prompt": "{input} {other}"}, "only {input}"),
        ({"output": {"labels": ["a"], "schema": {"type": "string"}}}, "exactly one"),
        ({"output": {"schema": {"type": "string", "format": "date", "minimum": 3}}}, "minimum"),
        ({"backend": "openai"}, "base_url"),
        ({"batching": {"max_batch_size": 0}}, "max_batch_size"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_bad_options_fail_at_start_up(
    local: TransformersBackend, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        SLMExecutor(spec(**options), Settings(), backend=local)


async def test_empty_input_is_rejected(local: TransformersBackend) -> None:
    task = await send(SLMExecutor(spec(), Settings(), backend=local), new_text_part("  "))
    assert task.status.state == TaskState.TASK_STATE_REJECTED


async def test_input_without_a_span_to_copy_is_rejected(local: TransformersBackend) -> None:
    schema = {
        "type": "object",
        "properties": {
            "email": {
                "type": "string",
                "x-grounded": True,
                "pattern": r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
            }
        },
    }
    executor = SLMExecutor(spec(output={"schema": schema}), Settings(), backend=local)
    task = await send(executor, new_text_part("no address here"))
    assert task.status.state == TaskState.TASK_STATE_REJECTED
    assert "no usable span" in task.status.message.parts[0].text


async def test_whole_value_grounding_copies_a_value_of_the_data_input(
    local: TransformersBackend,
) -> None:
    schema = {
        "type": "object",
        "properties": {
            "order_id": {"type": "string", "x-grounded": "/fields"},
            "reason": {"type": ["string", "null"], "minLength": 3, "x-grounded": "/fields"},
        },
        "required": ["order_id", "reason"],
        "additionalProperties": False,
    }
    executor = SLMExecutor(spec(output={"schema": schema}), Settings(), backend=local)
    data = {
        "message": "cancel ORD-104233 please, wrong size",
        "intent": "cancel_order",
        "fields": {"order_id": "ORD-104233", "reason": "wrong size", "email": None},
    }
    task = await send(executor, new_data_part(data))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED, task.status.message
    (value,) = [v for artifact in task.artifacts for v in get_data_parts(artifact.parts)]
    assert value["order_id"] == "ORD-104233"
    assert value["reason"] in (None, "wrong size")
    # plain text is not JSON: there is no value to copy, so the task is refused, not guessed
    task = await send(executor, new_text_part("cancel ORD-104233 please"))
    assert task.status.state == TaskState.TASK_STATE_REJECTED
    assert "copied from the input" in task.status.message.parts[0].text


async def test_invalid_remote_output_fails_the_task() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        chunk = {"choices": [{"delta": {"content": "refund please"}, "finish_reason": "stop"}]}
        return httpx.Response(
            200,
            text=f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n",
            headers={"content-type": "text/event-stream"},
        )

    remote = OpenAIBackend(
        "http://big/v1", "big", http=httpx.AsyncClient(transport=httpx.MockTransport(handler))
    )
    options = {
        "backend": "openai",
        "base_url": "http://big/v1",
        "model_name": "big",
        "model": None,
        "output": {"labels": LABELS},
    }
    task = await send(
        SLMExecutor(spec(**options), Settings(), backend=remote), new_text_part("refund")
    )
    assert task.status.state == TaskState.TASK_STATE_FAILED
    assert "not one of the labels" in task.status.message.parts[0].text


def test_input_text_renders_data_as_compact_json() -> None:
    message = Message(
        role=Role.ROLE_USER,
        message_id="m",
        parts=[new_data_part({"order": "ORD-1", "amount": 19, "note": "é"})],
    )
    rendered = input_text(message)  # protobuf Struct: key order is the map's, not the sender's
    assert json.loads(rendered) == {"order": "ORD-1", "amount": 19, "note": "é"}
    assert " " not in rendered
    assert '"amount":19' in rendered
    assert "é" in rendered
    text = Message(
        role=Role.ROLE_USER, message_id="t", parts=[new_text_part("a"), new_text_part("b")]
    )
    assert input_text(text) == "a\nb"
