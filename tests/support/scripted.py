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
from a2a.types import a2a_pb2 as pb

from mesh.a2a.executor import Executor, Reporter, Request
from mesh.config import ServiceSpec, Settings


class ScriptedExecutor(Executor):
    """See the module docstring for the script words."""

    gates: ClassVar[dict[str, asyncio.Event]] = {}

    def __init__(self, spec: ServiceSpec | None = None, settings: Settings | None = None) -> None:
        pass

    @classmethod
    def gate(cls, name: str) -> asyncio.Event:
        """The event a ``wait NAME`` task waits for (created on first use, by either side)."""
        return cls.gates.setdefault(name, asyncio.Event())

    async def execute(self, request: Request, task: Reporter) -> None:
        text = request.text
        word, _, rest = text.partition(" ")
        current = request.task
        if current is not None and current.status.state == pb.TaskState.TASK_STATE_INPUT_REQUIRED:
            await task.artifact([new_text_part(f"got: {text}")], name="answer")
            await task.complete()
            return
        if word == "nothing":
            return
        if word == "reply":
            await task.reply(new_text_message(f"direct: {rest}", context_id=request.context_id))
            return
        await task.open()
        if word == "ask":
            await task.require_input(task.agent_message([new_text_part("what else?")]))
            return
        if word == "big":
            await task.artifact([new_text_part("x" * int(rest))], name="big")
            await task.complete()
            return
        if word == "delay":
            seconds, _, rest = rest.partition(" ")
            await asyncio.sleep(float(seconds))
        await task.working(task.agent_message([new_text_part("on it")]))
        if word == "raise":
            raise RuntimeError("scripted failure")
        if word in ("wait", "linger"):
            await task.artifact([new_text_part("started")], name="started")
            await self.gate(rest).wait()
            await task.artifact([new_text_part("finished")], name="finished")
            await task.complete()
            return
        await task.artifact([new_text_part(rest.upper())], name="echo")
        await task.complete()

    async def cancel(self, request: Request, task: Reporter) -> None:
        current = request.task
        if (
            current is not None
            and current.history
            and get_message_text(current.history[0]).startswith("linger ")
        ):
            return  # cleanup only: no terminal state from the executor
        await task.cancel()
