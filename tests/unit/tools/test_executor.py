"""The tools executor driven through a2a-sdk's real DefaultRequestHandler."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from a2a.helpers import get_data_parts, get_message_text, new_data_part, new_text_part
from a2a.server.agent_execution import RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.tasks import InMemoryTaskStore
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    Task,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)

from mesh.a2a.executor import Reporter, Request, to_sdk
from mesh.config import ServiceSpec, Settings
from mesh.tools.executor import ToolsExecutor, database_path

SPEC = ServiceSpec(
    name="tools",
    executor="mesh.tools.executor:ToolsExecutor",
    options={"database": "orders.sqlite"},
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
async def handler(settings: Settings) -> AsyncIterator[DefaultRequestHandler]:
    card = AgentCard(
        name="tools",
        description="tools agent under test",
        version="0.1.0",
        supported_interfaces=[
            AgentInterface(
                url="http://localhost:1/", protocol_binding="JSONRPC", protocol_version="1.0"
            )
        ],
        capabilities=AgentCapabilities(streaming=False),
        default_input_modes=["application/json", "text/plain"],
        default_output_modes=["application/json"],
        skills=[
            AgentSkill(
                id="execute_tool", name="Execute tool call", description="one call", tags=["tools"]
            )
        ],
    )
    request_handler = DefaultRequestHandler(
        agent_executor=to_sdk(ToolsExecutor(SPEC, settings)),
        task_store=InMemoryTaskStore(),
        agent_card=card,
    )
    yield request_handler
    await request_handler.aclose()


def database(settings: Settings) -> Path:
    return settings.data_dir / "orders.sqlite"


def query(path: Path, sql: str, *params: object) -> list[tuple]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


async def send(handler: DefaultRequestHandler, *parts: Part) -> Task:
    message = Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=list(parts))
    result = await handler.on_message_send(SendMessageRequest(message=message), ServerCallContext())
    assert isinstance(result, Task)
    return result


def artifact_data(task: Task) -> dict[str, Any]:
    (artifact,) = task.artifacts
    assert artifact.name == "tool_result"
    (data,) = get_data_parts(artifact.parts)
    return data


async def an_order(handler: DefaultRequestHandler, settings: Settings, status: str) -> str:
    """Creates the database through a first request, then picks an order by status."""
    await send(handler, new_data_part({"name": "find_orders", "arguments": {"email": "a@b.co"}}))
    return query(
        database(settings), "SELECT order_id FROM orders WHERE status = ? LIMIT 1", status
    )[0][0]


async def test_valid_call_completes_with_a_tool_result_artifact(
    handler: DefaultRequestHandler, settings: Settings
) -> None:
    assert not database(settings).exists()
    order_id = await an_order(handler, settings, "shipped")

    task = await send(
        handler, new_data_part({"name": "track_shipment", "arguments": {"order_id": order_id}})
    )

    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    result = artifact_data(task)
    assert result["ok"] is True
    assert result["order_id"] == order_id
    assert (
        result["tracking_number"]
        == query(
            database(settings), "SELECT tracking_number FROM orders WHERE order_id = ?", order_id
        )[0][0]
    )
    stored = await handler.on_get_task(GetTaskRequest(id=task.id), ServerCallContext())
    assert stored is not None
    assert stored.status.state == TaskState.TASK_STATE_COMPLETED
    assert artifact_data(stored) == result
    assert stored.history[0].role == Role.ROLE_USER


async def test_business_refusal_completes_with_ok_false(
    handler: DefaultRequestHandler, settings: Settings
) -> None:
    order_id = await an_order(handler, settings, "delivered")

    task = await send(
        handler,
        new_data_part(
            {
                "name": "cancel_order",
                "arguments": {"order_id": order_id, "reason": "Changed my mind"},
                "idempotency_key": "cancel-1",
            }
        ),
    )

    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert artifact_data(task)["error"]["code"] == "not_cancellable"


async def test_invalid_call_is_rejected_with_the_errors_in_the_status_message(
    handler: DefaultRequestHandler,
) -> None:
    task = await send(
        handler,
        new_data_part({"name": "refund_order", "arguments": {"order_id": "104233", "amount": 0}}),
    )

    assert task.status.state == TaskState.TASK_STATE_REJECTED
    assert not task.artifacts
    status_message = task.status.message
    (data,) = get_data_parts(status_message.parts)
    error = data["error"]
    assert error["code"] == "invalid_arguments"
    assert {p["pointer"] for p in error["problems"]} == {"/order_id", "/amount", "/reason"}
    assert "invalid arguments for refund_order" in get_message_text(status_message)
    assert status_message.role == Role.ROLE_AGENT
    assert (status_message.task_id, status_message.context_id) == (task.id, task.context_id)


async def test_unknown_tool_and_non_object_calls_are_rejected(
    handler: DefaultRequestHandler,
) -> None:
    unknown = await send(handler, new_data_part({"name": "delete_everything", "arguments": {}}))
    not_object = await send(handler, new_data_part(["get_order"]))
    not_json = await send(handler, new_text_part("please cancel my order"))

    codes = []
    for task in (unknown, not_object, not_json):
        assert task.status.state == TaskState.TASK_STATE_REJECTED
        codes.append(get_data_parts(task.status.message.parts)[0]["error"]["code"])
    assert codes == ["unknown_tool", "malformed_call", "malformed_call"]


async def test_a_call_in_a_text_part_is_read_as_json(
    handler: DefaultRequestHandler, settings: Settings
) -> None:
    order_id = await an_order(handler, settings, "placed")

    task = await send(
        handler,
        new_text_part(json.dumps({"name": "get_order", "arguments": {"order_id": order_id}})),
    )

    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert artifact_data(task)["order"]["status"] == "placed"


async def test_idempotent_retry_replays_the_first_result_and_refunds_once(
    handler: DefaultRequestHandler, settings: Settings
) -> None:
    order_id = await an_order(handler, settings, "delivered")
    call = {
        "name": "refund_order",
        "arguments": {"order_id": order_id, "amount": 12, "reason": "Arrived damaged"},
        "idempotency_key": "refund-7f3a",
    }

    first = await send(handler, new_data_part(call))
    retry = await send(handler, new_data_part(call))

    assert first.id != retry.id
    for task in (first, retry):
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert artifact_data(first)["ok"] is True
    assert artifact_data(retry) == artifact_data(first)
    assert first.artifacts[0].metadata["replayed"] is False
    assert retry.artifacts[0].metadata["replayed"] is True
    assert query(
        database(settings),
        "SELECT COUNT(*), SUM(amount_cents) FROM refunds WHERE order_id = ?",
        order_id,
    ) == [(1, 1200)]


async def test_reusing_a_key_for_another_call_is_rejected(
    handler: DefaultRequestHandler, settings: Settings
) -> None:
    order_id = await an_order(handler, settings, "delivered")
    call = {
        "name": "refund_order",
        "arguments": {"order_id": order_id, "amount": 3, "reason": "Arrived damaged"},
        "idempotency_key": "refund-key",
    }
    await send(handler, new_data_part(call))

    task = await send(
        handler, new_data_part({**call, "arguments": {**call["arguments"], "amount": 4}})
    )

    assert task.status.state == TaskState.TASK_STATE_REJECTED
    assert get_data_parts(task.status.message.parts)[0]["error"]["code"] == "idempotency_conflict"


async def test_an_unusable_database_fails_the_task(
    handler: DefaultRequestHandler, settings: Settings
) -> None:
    settings.data_dir.mkdir(parents=True)
    database(settings).write_bytes(b"this is not an SQLite file" * 100)

    task = await send(
        handler, new_data_part({"name": "get_order", "arguments": {"order_id": "ORD-104233"}})
    )

    assert task.status.state == TaskState.TASK_STATE_FAILED
    assert not task.artifacts
    (data,) = get_data_parts(task.status.message.parts)
    assert data["error"]["code"] == "database_error"


def test_database_path_resolves_relative_paths_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    absolute = tmp_path / "elsewhere" / "db.sqlite"

    assert database_path(SPEC, settings) == tmp_path / "orders.sqlite"
    assert database_path(SPEC.model_copy(update={"options": {}}), settings) == (
        tmp_path / "orders.sqlite"
    )
    assert (
        database_path(SPEC.model_copy(update={"options": {"database": str(absolute)}}), settings)
        == absolute
    )
    with pytest.raises(ValueError, match=r"options\.database must be a file path"):
        database_path(SPEC.model_copy(update={"options": {"database": 5}}), settings)


class RecordingQueue:
    """Collects what the executor publishes; TaskUpdater only calls enqueue_event."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    async def enqueue_event(self, event: Any) -> None:
        self.events.append(event)


def follow_up(
    task: Task, message: Message | None, queue: RecordingQueue
) -> tuple[Request, Reporter]:
    """What a2a-sdk builds for a message naming only ``taskId`` (a fresh context id), as the
    executor sees it."""
    request = SendMessageRequest(message=message) if message is not None else None
    context = RequestContext(ServerCallContext(), request=request, task_id=task.id, task=task)
    if message is not None:
        assert context.context_id != task.context_id
    seen = Request.from_sdk(context)
    return seen, Reporter(queue, seen)


async def test_follow_up_events_carry_the_tasks_own_context_id(settings: Settings) -> None:
    task = Task(
        id="task-1", context_id="ctx-1", status=TaskStatus(state=TaskState.TASK_STATE_WORKING)
    )
    message = Message(
        role=Role.ROLE_USER,
        message_id="m-1",
        task_id="task-1",
        parts=[new_data_part({"name": "get_order", "arguments": {"order_id": "ORD-000001"}})],
    )
    queue = RecordingQueue()

    await ToolsExecutor(SPEC, settings).execute(*follow_up(task, message, queue))

    assert queue.events
    assert not any(isinstance(event, Task) for event in queue.events)
    assert {event.context_id for event in queue.events} == {"ctx-1"}
    assert queue.events[-1].status.state == TaskState.TASK_STATE_COMPLETED


async def test_cancel_publishes_canceled_for_the_task(settings: Settings) -> None:
    task = Task(
        id="task-2", context_id="ctx-2", status=TaskStatus(state=TaskState.TASK_STATE_WORKING)
    )
    queue = RecordingQueue()

    await ToolsExecutor(SPEC, settings).cancel(*follow_up(task, None, queue))

    (event,) = queue.events
    assert isinstance(event, TaskStatusUpdateEvent)
    assert (event.task_id, event.context_id) == ("task-2", "ctx-2")
    assert event.status.state == TaskState.TASK_STATE_CANCELED


async def test_principal_and_confirmation_travel_in_the_call_and_the_limit_is_a_spec_option(
    settings: Settings,
) -> None:
    spec = SPEC.model_copy(update={"options": {**SPEC.options, "confirm_refund_above": 5}})
    executor = ToolsExecutor(spec, settings)
    queue = RecordingQueue()

    async def run(payload: dict[str, Any]) -> Any:
        queue.events.clear()
        message = Message(
            role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=[new_data_part(payload)]
        )
        request = Request(message, task_id=str(uuid.uuid4()), context_id=str(uuid.uuid4()))
        await executor.execute(request, Reporter(queue, request))
        return queue.events[-1].status

    assert (await run({"name": "search_faq", "arguments": {"query": "opening hours?"}})).state == (
        TaskState.TASK_STATE_COMPLETED
    )
    order_id, email = query(
        database(settings),
        "SELECT o.order_id, c.email FROM orders o JOIN customers c ON c.id = o.customer_id "
        "WHERE o.status = 'delivered' AND o.amount_cents > 1000 LIMIT 1",
    )[0]
    refund = {
        "name": "refund_order",
        "arguments": {"order_id": order_id, "amount": 6, "reason": "Box was crushed"},
        "idempotency_key": "refund-6",
        "principal": {"customer": email},
    }

    asked = await run(refund)
    artifacts = [e for e in queue.events if getattr(e, "artifact", None) is not None]
    assert get_data_parts(artifacts[-1].artifact.parts)[0]["error"]["code"] == (
        "confirmation_required"
    )
    done = await run({**refund, "confirmed": True})
    artifacts = [e for e in queue.events if getattr(e, "artifact", None) is not None]
    malformed = await run({**refund, "principal": {"customer": "someone"}})

    assert (asked.state, done.state) == (TaskState.TASK_STATE_COMPLETED,) * 2
    assert get_data_parts(artifacts[-1].artifact.parts)[0]["amount"] == "6.00"
    assert malformed.state == TaskState.TASK_STATE_REJECTED
    assert get_data_parts(malformed.message.parts)[0]["error"]["code"] == "malformed_call"


def test_a_bad_refund_limit_stops_the_executor_at_start(settings: Settings) -> None:
    spec = SPEC.model_copy(update={"options": {"confirm_refund_above": "lots"}})

    with pytest.raises(ValueError, match=r"service 'tools': options\.confirm_refund_above"):
        ToolsExecutor(spec, settings)
