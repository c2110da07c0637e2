"""Test-only executor whose behaviour is chosen by the first word of the user's text.

Used to compare the mesh's lean request path with a2a-sdk's ``DefaultRequestHandler`` on the
same requests, and to drive the mesh client against an in-process server. Every branch is
deterministic; nothing here is used outside tests/.

* ``echo WORDS``     - opens the task, WORKING with the agent message "on it", one artifact
  (WORDS upper-cased), COMPLETED. History ends as [user message, "on it"].
* ``raise``          - opens the task, WORKING, then raises ``RuntimeError``.
* ``reply WORDS``    - answers with one direct agent ``Message`` (no task).
* ``ask``            - INPUT_REQUIRED with the question "what else?"; the follow-up message
  (any text, sent with only ``taskId``) gets an artifact ``got: <text>`` and COMPLETED.
* ``nothing``        - returns without emitting any event.
* ``wait NAME``      - opens the task, WORKING, artifact ``started``, then waits until the test
  calls ``ScriptedExecutor.gate(NAME).set()``; then artifact ``finished``, COMPLETED. The
  server runs in the test's own process and event loop, so the test decides when it ends.
* ``linger NAME``    - as ``wait NAME``, but its ``cancel`` only cleans up: it emits nothing, so
  the handler must close the task as CANCELED itself.
* ``delay SECONDS WORDS`` - sleeps, then as ``echo WORDS`` (timeouts, requests in flight).
* ``big BYTES``      - completes the task with one text artifact of BYTES ``x`` characters.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from a2a.helpers.proto_helpers import get_message_text, new_text_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.types import a2a_pb2 as pb

from mesh.a2a.tasks import open_task
from mesh.config import ServiceSpec, Settings


class ScriptedExecutor(AgentExecutor):
    """See the module docstring for the script words."""

    gates: ClassVar[dict[str, asyncio.Event]] = {}

    def __init__(self, spec: ServiceSpec | None = None, settings: Settings | None = None) -> None:
        pass

    @classmethod
    def gate(cls, name: str) -> asyncio.Event:
        """The event a ``wait NAME`` task waits for (created on first use, by either side)."""
        return cls.gates.setdefault(name, asyncio.Event())

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = get_message_text(context.message) if context.message else ""
        word, _, rest = text.partition(" ")
        current = context.current_task
        if current is not None and current.status.state == pb.TaskState.TASK_STATE_INPUT_REQUIRED:
            updater = await open_task(context, event_queue)
            await updater.add_artifact([new_text_part(f"got: {text}")], name="answer")
            await updater.complete()
            return
        if word == "nothing":
            return
        if word == "reply":
            await event_queue.enqueue_event(
                new_text_message(f"direct: {rest}", context_id=context.context_id)
            )
            return
        updater = await open_task(context, event_queue)
        if word == "ask":
            await updater.requires_input(updater.new_agent_message([new_text_part("what else?")]))
            return
        if word == "big":
            await updater.add_artifact([new_text_part("x" * int(rest))], name="big")
            await updater.complete()
            return
        if word == "delay":
            seconds, _, rest = rest.partition(" ")
            await asyncio.sleep(float(seconds))
        await updater.start_work(updater.new_agent_message([new_text_part("on it")]))
        if word == "raise":
            raise RuntimeError("scripted failure")
        if word in ("wait", "linger"):
            await updater.add_artifact([new_text_part("started")], name="started")
            await self.gate(rest).wait()
            await updater.add_artifact([new_text_part("finished")], name="finished")
            await updater.complete()
            return
        await updater.add_artifact([new_text_part(rest.upper())], name="echo")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task
        if (
            task is not None
            and task.history
            and get_message_text(task.history[0]).startswith("linger ")
        ):
            return  # cleanup only: no terminal state from the executor
        updater = await open_task(context, event_queue)
        await updater.cancel()
