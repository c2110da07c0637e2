"""The A2A TCK's scenarios (``a2a-tck/scenarios/*.feature``) as a mesh executor.

The TCK drives the agent through each message's ``messageId`` prefix; one :class:`Scenario` per
Gherkin scenario says what the agent then does. Longer prefixes are matched first
(``tck-artifact-file-url`` before ``tck-artifact-file``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.tasks import TaskUpdater
from a2a.types import a2a_pb2 as pb
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Value

from mesh.a2a.tasks import open_task
from mesh.config import ServiceSpec, Settings

STREAMING_TIMEOUT_S = 2.0
"""The TCK's streaming timeout; the resubscription scenario runs for twice as long."""

Step = Callable[[TaskUpdater], Awaitable[None]]


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


async def _stream(updater: TaskUpdater, part: pb.Part) -> None:
    await updater.start_work()
    await updater.add_artifact([part])
    await updater.complete()


async def _artifact(updater: TaskUpdater, part: pb.Part) -> None:
    await updater.add_artifact([part])
    await updater.complete()


async def _chunked(updater: TaskUpdater) -> None:
    await updater.start_work()
    await updater.add_artifact([_text("chunk-1 ")], artifact_id="chunked", append=False)
    await updater.add_artifact(
        [_text("chunk-2")], artifact_id="chunked", append=True, last_chunk=True
    )
    await updater.complete()


async def _long_running(updater: TaskUpdater) -> None:
    await updater.start_work()
    await asyncio.sleep(2 * STREAMING_TIMEOUT_S)
    await updater.complete()


async def _complete_with_message(updater: TaskUpdater, text: str) -> None:
    await updater.complete(updater.new_agent_message([_text(text)]))


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
            Scenario("tck-input-required", lambda u: u.requires_input()),
            Scenario(
                "tck-reject-task", lambda u: u.reject(u.new_agent_message([_text("rejected")]))
            ),
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


class ConformanceExecutor(AgentExecutor):
    """Runs the scenario named by the message id; unknown prefixes complete with an echo."""

    def __init__(self, spec: ServiceSpec | None = None, settings: Settings | None = None) -> None:
        pass

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        message_id = context.message.message_id if context.message else ""
        if message_id.startswith(MESSAGE_RESPONSE) and context.current_task is None:
            await event_queue.enqueue_event(
                pb.Message(
                    role=pb.Role.ROLE_AGENT,
                    message_id=f"{message_id}-reply",
                    context_id=context.context_id or "",
                    parts=[_text("Direct message response")],
                )
            )
            return
        updater = await open_task(context, event_queue)
        scenario = scenario_for(message_id)
        if scenario is None:
            await _complete_with_message(updater, f"Unhandled messageId prefix: {message_id}")
            return
        await scenario.run(updater)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = await open_task(context, event_queue)
        await updater.cancel()
