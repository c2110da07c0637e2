"""The mesh's lean unary SendMessage path answers exactly as a2a-sdk's DefaultRequestHandler does.

Two servers run in this process on 127.0.0.1: the mesh's ``AgentServer`` (MeshRequestHandler,
SqliteTaskStore in a temporary directory) and a plain a2a-sdk server (DefaultRequestHandler,
GrpcHandler, JSON-RPC routes, InMemoryTaskStore), both with the same test-only
``ScriptedExecutor``. Each scenario sends the same requests through the same client to both and
compares what comes back (tasks, messages, errors, later GetTask/ListTasks), with generated ids
replaced by their order of first appearance and timestamps blanked. Every await is bounded.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from a2a.helpers.proto_helpers import new_text_message
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import InternalError
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message as ProtoMessage

from mesh.a2a import AgentServer
from mesh.a2a.client import GRPC, JSONRPC, MeshClient, text_of
from mesh.a2a.handler import MeshRequestHandler
from mesh.a2a.store import SqliteTaskStore
from tests.support.inproc import AGENT, StockServer, replicas, start_mesh
from tests.support.scripted import ScriptedExecutor

S = pb.TaskState
STEP = 4.0
"""Upper bound for any single await in these tests (each test stays well under 5 s)."""
OTHER = {GRPC: JSONRPC, JSONRPC: GRPC}


@dataclass
class Side:
    """One server under test and a mesh client per binding pointed at it."""

    name: str
    clients: dict[str, MeshClient] = field(default_factory=dict)


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[AgentServer]:
    server = await start_mesh(tmp_path / "mesh")
    assert isinstance(server.handler, MeshRequestHandler)
    assert isinstance(server.task_store, SqliteTaskStore)
    yield server
    await asyncio.wait_for(server.stop(), 10)


@pytest.fixture
async def stock() -> AsyncIterator[StockServer]:
    server = await StockServer().start()
    yield server
    await server.stop()


@pytest.fixture
async def sides(mesh: AgentServer, stock: StockServer) -> AsyncIterator[tuple[Side, Side]]:
    lean = Side(
        "lean",
        {
            b: MeshClient(replicas(mesh.http_port, mesh.grpc_port), bindings=[b])
            for b in (GRPC, JSONRPC)
        },
    )
    ref = Side(
        "stock",
        {
            b: MeshClient(replicas(stock.http_port, stock.grpc_port), bindings=[b])
            for b in (GRPC, JSONRPC)
        },
    )
    yield lean, ref
    for side in (lean, ref):
        for client in side.clients.values():
            await client.close()


# -- helpers --------------------------------------------------------------------------------------

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
_HOST = re.compile(r"127\.0\.0\.1:\d+")


def _plain(value: Any) -> Any:
    if isinstance(value, ProtoMessage):
        return {type(value).__name__: MessageToDict(value)}
    if isinstance(value, BaseException):
        return {"error": type(value).__name__, "message": str(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def norm(value: Any) -> str:
    """JSON of the value with uuids numbered by first appearance and timestamps blanked."""
    text = json.dumps(_plain(value), sort_keys=True, indent=1)
    numbering: dict[str, str] = {}
    text = _UUID.sub(lambda m: numbering.setdefault(m.group(0), f"<id{len(numbering)}>"), text)
    return _HOST.sub("<host>", _TIMESTAMP.sub("<ts>", text))


async def bounded(awaitable: Awaitable[Any], timeout: float = STEP) -> Any:
    return await asyncio.wait_for(awaitable, timeout)


async def outcome(awaitable: Awaitable[Any]) -> Any:
    """The result, or the exception it raised (as a value to compare)."""
    try:
        return await bounded(awaitable)
    except TimeoutError:
        raise
    except Exception as exc:  # noqa: BLE001 - the error is the observable result here
        return exc


async def collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [event async for event in stream]


def request(
    text: str,
    context_id: str | None = None,
    task_id: str | None = None,
    history_length: int | None = None,
) -> pb.SendMessageRequest:
    message = new_text_message(text, role=pb.Role.ROLE_USER, context_id=context_id, task_id=task_id)
    req = pb.SendMessageRequest(message=message)
    if history_length is not None:
        req.configuration.history_length = history_length
    return req


async def tasks_in(client: MeshClient, context_id: str) -> list[pb.Task]:
    listed = await bounded(
        client.list_tasks(AGENT, pb.ListTasksRequest(context_id=context_id, include_artifacts=True))
    )
    return list(listed.tasks)


async def task_when(
    client: MeshClient, context_id: str, ready: Callable[[pb.Task], bool]
) -> pb.Task:
    """Polls ListTasks until the context's one task satisfies ``ready``."""

    async def poll() -> pb.Task:
        while True:
            found = await tasks_in(client, context_id)
            if found and ready(found[0]):
                return found[0]
            await asyncio.sleep(0.01)

    return await bounded(poll())


def started(task: pb.Task) -> bool:
    return task.status.state == S.TASK_STATE_WORKING and len(task.artifacts) == 1


async def both(
    sides: tuple[Side, Side],
    scenario: Callable[[Side], Awaitable[Any]],
    comparable: Callable[[Any], Any] = lambda result: result,
) -> Any:
    """Runs the scenario on both servers; asserts the same observable result; returns the lean one.

    ``comparable`` takes out of each result what is known to differ on purpose.
    """
    lean, ref = sides
    got, expected = await scenario(lean), await scenario(ref)
    assert norm(comparable(got)) == norm(comparable(expected))
    return got


BINDINGS = pytest.mark.parametrize("binding", [GRPC, JSONRPC])


# -- scenarios ------------------------------------------------------------------------------------


@BINDINGS
async def test_unary_send_that_completes(sides: tuple[Side, Side], binding: str) -> None:
    async def scenario(side: Side) -> list[Any]:
        client = side.clients[binding]
        reply = await bounded(client.send_message(AGENT, request("echo hello there")))
        task_id = reply.task.id
        return [
            reply,
            await bounded(client.get_task(AGENT, task_id)),
            await tasks_in(client, reply.task.context_id),
            await outcome(client.cancel_task(AGENT, task_id)),
            await outcome(collect(client.subscribe(AGENT, task_id))),
        ]

    reply, got, listed, cancel, resubscribe = await both(sides, scenario)
    task = reply.task
    assert task.status.state == S.TASK_STATE_COMPLETED
    assert text_of(reply) == "HELLO THERE"
    assert [m.parts[0].text for m in task.history] == ["echo hello there", "on it"]
    assert [m.role for m in task.history] == [pb.Role.ROLE_USER, pb.Role.ROLE_AGENT]
    assert got == task
    assert listed == [task]
    assert type(cancel).__name__ == "TaskNotCancelableError"
    assert type(resubscribe).__name__ == "UnsupportedOperationError"


@BINDINGS
async def test_executor_that_raises_fails_the_task(sides: tuple[Side, Side], binding: str) -> None:
    async def scenario(side: Side) -> list[Any]:
        client = side.clients[binding]
        context_id = str(uuid.uuid4())
        error = await outcome(client.send_message(AGENT, request("raise", context_id=context_id)))
        failed = await task_when(
            client, context_id, lambda t: t.status.state == S.TASK_STATE_FAILED
        )
        return [error, failed]

    error, failed = await both(sides, scenario)
    assert isinstance(error, Exception)
    assert "scripted failure" in str(error)
    assert [m.parts[0].text for m in failed.history] == ["raise", "on it"]


@BINDINGS
async def test_executor_that_replies_with_a_direct_message(
    sides: tuple[Side, Side], binding: str
) -> None:
    async def scenario(side: Side) -> list[Any]:
        client = side.clients[binding]
        context_id = str(uuid.uuid4())
        reply = await bounded(
            client.send_message(AGENT, request("reply hi", context_id=context_id))
        )
        return [reply, await tasks_in(client, context_id)]

    reply, stored = await both(sides, scenario)
    assert reply.HasField("message")
    assert not reply.HasField("task")
    assert reply.message.parts[0].text == "direct: hi"
    assert reply.message.role == pb.Role.ROLE_AGENT
    assert stored == []  # a direct message opens no task


@BINDINGS
async def test_cancel_from_another_transport_during_a_unary_call(
    sides: tuple[Side, Side], mesh: AgentServer, binding: str
) -> None:
    async def scenario(side: Side) -> list[Any]:
        client, other = side.clients[binding], side.clients[OTHER[binding]]
        context_id = str(uuid.uuid4())
        send = asyncio.create_task(
            client.send_message(AGENT, request(f"wait {uuid.uuid4()}", context_id))
        )
        running = await task_when(other, context_id, started)
        if side.name == "lean":
            assert running.id in mesh.handler.runs  # the lean path is the one serving this call
        canceled = await bounded(other.cancel_task(AGENT, running.id))
        reply = await bounded(send)
        return [
            running,
            canceled,
            reply,
            await bounded(other.get_task(AGENT, running.id)),
            await outcome(other.cancel_task(AGENT, running.id)),
        ]

    running, canceled, reply, stored, again = await both(sides, scenario)
    assert running.status.state == S.TASK_STATE_WORKING
    assert canceled.id == reply.task.id == stored.id == running.id
    assert (
        canceled.status.state
        == reply.task.status.state
        == stored.status.state
        == S.TASK_STATE_CANCELED
    )
    assert [a.name for a in stored.artifacts] == ["started"]
    assert type(again).__name__ == "TaskNotCancelableError"
    assert mesh.handler.runs == {}


@BINDINGS
async def test_cancel_of_an_executor_whose_cancel_emits_nothing(
    sides: tuple[Side, Side], mesh: AgentServer, binding: str
) -> None:
    """The executor's cancel only cleans up: the handler closes the task as CANCELED itself,
    and the unary caller is answered with that CANCELED task, not the WORKING one."""

    async def scenario(side: Side) -> list[Any]:
        client, other = side.clients[binding], side.clients[OTHER[binding]]
        context_id = str(uuid.uuid4())
        send = asyncio.create_task(
            client.send_message(AGENT, request(f"linger {uuid.uuid4()}", context_id))
        )
        running = await task_when(other, context_id, started)
        canceled = await bounded(other.cancel_task(AGENT, running.id))
        reply = await bounded(send)
        return [canceled, reply, await bounded(other.get_task(AGENT, running.id))]

    canceled, reply, stored = await both(sides, scenario)
    assert (
        canceled.status.state
        == reply.task.status.state
        == stored.status.state
        == S.TASK_STATE_CANCELED
    )
    assert mesh.handler.runs == {}


@BINDINGS
async def test_subscribe_from_another_transport_during_a_unary_call(
    sides: tuple[Side, Side], mesh: AgentServer, binding: str
) -> None:
    async def scenario(side: Side) -> list[Any]:
        client, other = side.clients[binding], side.clients[OTHER[binding]]
        context_id, gate = str(uuid.uuid4()), str(uuid.uuid4())
        send = asyncio.create_task(client.send_message(AGENT, request(f"wait {gate}", context_id)))
        running = await task_when(other, context_id, started)
        if side.name == "lean":
            assert running.id in mesh.handler.runs
        stream = other.subscribe(AGENT, running.id)
        first = await bounded(anext(stream))  # subscribed: now let the executor finish
        ScriptedExecutor.gate(gate).set()
        rest = await bounded(collect(stream))
        return [first, rest, await bounded(send)]

    first, rest, reply = await both(sides, scenario)
    assert first.task.status.state == S.TASK_STATE_WORKING
    assert [a.name for a in first.task.artifacts] == ["started"]
    assert [e.WhichOneof("payload") for e in rest] == ["artifact_update", "status_update"]
    assert rest[-1].status_update.status.state == S.TASK_STATE_COMPLETED
    assert reply.task.status.state == S.TASK_STATE_COMPLETED
    assert [a.name for a in reply.task.artifacts] == ["started", "finished"]


@BINDINGS
async def test_follow_up_with_only_task_id_on_an_input_required_task(
    sides: tuple[Side, Side], binding: str
) -> None:
    async def scenario(side: Side) -> list[Any]:
        client = side.clients[binding]
        asked = await bounded(client.send_message(AGENT, request("ask")))
        answered = await bounded(client.send_message(AGENT, request("blue", task_id=asked.task.id)))
        return [asked, answered, await bounded(client.get_task(AGENT, asked.task.id))]

    def without_follow_up_context(result: list[Any]) -> list[Any]:
        """The one deliberate difference: a2a-sdk records a follow-up that names only its task
        under a fresh random contextId; the mesh records it under the task's own context
        (MeshRequestHandler._adopt_context), as the protocol asks."""
        out = []
        for item in result:
            copy = type(item)()
            copy.CopyFrom(item)
            task = copy.task if isinstance(copy, pb.SendMessageResponse) else copy
            for message in task.history:
                if message.parts[0].text == "blue":
                    message.ClearField("context_id")
            out.append(copy)
        return out

    asked, answered, stored = await both(sides, scenario, without_follow_up_context)
    assert asked.task.status.state == S.TASK_STATE_INPUT_REQUIRED
    assert asked.task.status.message.parts[0].text == "what else?"
    assert answered.task.id == asked.task.id
    assert answered.task.context_id == asked.task.context_id
    assert answered.task.status.state == S.TASK_STATE_COMPLETED
    assert text_of(answered) == "got: blue"
    assert [m.parts[0].text for m in stored.history] == ["ask", "what else?", "blue"]
    assert {m.context_id for m in stored.history} == {stored.context_id}


async def test_follow_up_after_a_restart_continues_the_task(tmp_path: Path) -> None:
    """A task left INPUT_REQUIRED by a lean run is continued by a new replica on the same file
    (nothing parked in memory: the task comes back from the sqlite store)."""
    first = await start_mesh(tmp_path / "data")
    async with MeshClient(replicas(first.http_port, first.grpc_port), bindings=[GRPC]) as client:
        asked = await bounded(client.send_message(AGENT, request("ask")))
    await bounded(first.stop(), 10)
    second = await start_mesh(tmp_path / "data")
    try:
        async with MeshClient(
            replicas(second.http_port, second.grpc_port), bindings=[JSONRPC]
        ) as client:
            answered = await bounded(
                client.send_message(AGENT, request("green", task_id=asked.task.id))
            )
        assert answered.task.id == asked.task.id
        assert answered.task.context_id == asked.task.context_id
        assert answered.task.status.state == S.TASK_STATE_COMPLETED
        assert text_of(answered) == "got: green"
    finally:
        await bounded(second.stop(), 10)


@BINDINGS
async def test_history_length(sides: tuple[Side, Side], binding: str) -> None:
    async def scenario(side: Side) -> list[Any]:
        client = side.clients[binding]
        replies = [
            await bounded(client.send_message(AGENT, request("echo x", history_length=n)))
            for n in (0, 1, 2, 5)
        ]
        full = replies[-1].task.id
        reads = [await bounded(client.get_task(AGENT, full, history_length=n)) for n in (0, 1)]
        return [
            *replies,
            *reads,
            await outcome(client.send_message(AGENT, request("echo x", history_length=-1))),
        ]

    *replies, read0, read1, negative = await both(sides, scenario)
    assert [len(r.task.history) for r in replies] == [0, 1, 2, 2]
    assert replies[1].task.history[0].parts[0].text == "on it"  # the most recent message is kept
    assert len(read0.history) == 0
    assert len(read1.history) == 1
    assert type(negative).__name__ == "InvalidParamsError"


@BINDINGS
async def test_executor_that_emits_nothing_is_an_internal_error_not_a_hang(
    sides: tuple[Side, Side], mesh: AgentServer, binding: str
) -> None:
    """a2a-sdk's default handler waits forever here, so only the lean path is checked."""
    lean, _ = sides
    client = lean.clients[binding]
    context_id = str(uuid.uuid4())
    with pytest.raises(InternalError, match="neither a task nor a message"):
        await bounded(client.send_message(AGENT, request("nothing", context_id=context_id)))
    assert await tasks_in(client, context_id) == []
    assert mesh.handler.runs == {}
    assert (
        text_of(await bounded(client.send_message(AGENT, request("echo still here"))))
        == "STILL HERE"
    )
