"""The A2A TCK's scenarios (``a2a-tck/scenarios/*.feature``) as a mesh executor.

The TCK drives the agent through each message's ``messageId`` prefix; one :class:`Scenario` per
Gherkin scenario says what the agent then does. Longer prefixes are matched first
(``tck-artifact-file-url`` before ``tck-artifact-file``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from a2a.types import a2a_pb2 as pb
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Value

from mesh.a2a.executor import Executor, Reporter, Request
from mesh.config import ServiceSpec, Settings

STREAMING_TIMEOUT_S = 2.0
"""The TCK's streaming timeout; the resubscription scenario runs for twice as long."""

Step = Callable[[Reporter], Awaitable[None]]


def _text(text: str) -> pb.Part:
    return pb.Part(text=text)


def _file() -> pb.Part:
    return pb.Part(raw=b"tck", media_type="text/plain", filename="output.txt")


def _file_url() -> pb.Part:
    return pb.Part(
        url="https://example.com/output.txt", media_type="text/plain", filename="output.txt"
    )


def _data() -> pb.Part:
    return pb.Part(data=json_format.Parse('{"key": "value", "count": 42}', Value()))


async def _stream(task: Reporter, part: pb.Part) -> None:
    await task.working()
    await task.artifact([part])
    await task.complete()


async def _artifact(task: Reporter, part: pb.Part) -> None:
    await task.artifact([part])
    await task.complete()


async def _chunked(task: Reporter) -> None:
    await task.working()
    await task.artifact([_text("chunk-1 ")], artifact_id="chunked", append=False)
    await task.artifact([_text("chunk-2")], artifact_id="chunked", append=True, last_chunk=True)
    await task.complete()


async def _long_running(task: Reporter) -> None:
    await task.working()
    await asyncio.sleep(2 * STREAMING_TIMEOUT_S)
    await task.complete()


async def _complete_with_message(task: Reporter, text: str) -> None:
    await task.complete(task.agent_message([_text(text)]))


@dataclass(frozen=True)
class Scenario:
    """What the agent does for messages whose id starts with ``prefix``."""

    prefix: str
    run: Step


SCENARIOS: tuple[Scenario, ...] = tuple(
    sorted(
        (
            # core_operations.feature
            Scenario("tck-complete-task", lambda u: _complete_with_message(u, "Hello from TCK")),
            Scenario("tck-artifact-text", lambda u: _artifact(u, _text("Generated text content"))),
            Scenario("tck-artifact-file", lambda u: _artifact(u, _file())),
            Scenario("tck-artifact-file-url", lambda u: _artifact(u, _file_url())),
            Scenario("tck-artifact-data", lambda u: _artifact(u, _data())),
            Scenario("tck-input-required", lambda u: u.require_input()),
            Scenario("tck-reject-task", lambda u: u.reject(u.agent_message([_text("rejected")]))),
            # streaming.feature
            Scenario("tck-stream-001", lambda u: _stream(u, _text("Stream hello from TCK"))),
            Scenario("tck-stream-002", lambda u: u.complete()),
            Scenario("tck-stream-003", lambda u: _stream(u, _text("Stream task lifecycle"))),
            Scenario("tck-stream-ordering-001", lambda u: _stream(u, _text("Ordered output"))),
            Scenario(
                "tck-stream-artifact-text", lambda u: _stream(u, _text("Streamed text content"))
            ),
            Scenario("tck-stream-artifact-file", lambda u: _stream(u, _file())),
            Scenario("tck-stream-artifact-chunked", _chunked),
            Scenario("test-resubscribe-message-id", _long_running),
        ),
        key=lambda s: -len(s.prefix),
    )
)

MESSAGE_RESPONSE = "tck-message-response"
"""The one scenario answered with a Message instead of a task."""


def scenario_for(message_id: str) -> Scenario | None:
    return next((s for s in SCENARIOS if message_id.startswith(s.prefix)), None)


class ConformanceExecutor(Executor):
    """Runs the scenario named by the message id; unknown prefixes complete with an echo."""

    def __init__(self, spec: ServiceSpec | None = None, settings: Settings | None = None) -> None:
        pass

    async def execute(self, request: Request, task: Reporter) -> None:
        message_id = request.message.message_id if request.message else ""
        if message_id.startswith(MESSAGE_RESPONSE) and request.task is None:
            await task.reply(
                pb.Message(
                    role=pb.Role.ROLE_AGENT,
                    message_id=f"{message_id}-reply",
                    context_id=request.context_id or "",
                    parts=[_text("Direct message response")],
                )
            )
            return
        scenario = scenario_for(message_id)
        if scenario is None:
            await _complete_with_message(task, f"Unhandled messageId prefix: {message_id}")
            return
        await scenario.run(task)

    async def cancel(self, request: Request, task: Reporter) -> None:
        await task.cancel()
