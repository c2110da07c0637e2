"""Test-only executors: deterministic, instant agents for runtime and transport tests."""

from __future__ import annotations

import asyncio
import time

from a2a.helpers.proto_helpers import get_message_text, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue

from mesh.a2a.tasks import open_task
from mesh.config import ServiceSpec, Settings


class EchoExecutor(AgentExecutor):
    """Completes each task with one artifact that upper-cases the input text.

    ``sleep:<seconds>`` at the start of the text makes it wait first (drain, deadline and
    planner tests; words may follow).
    """

    def __init__(self, spec: ServiceSpec | None = None, settings: Settings | None = None) -> None:
        options = spec.options if spec else {}
        self.delay = float(options.get("delay_s", 0.0))
        # A service slow to start (a large model loading): `slmesh up` interrupted mid-start.
        time.sleep(float(options.get("start_delay_s", 0.0)))
        self.warm_up_s = float(options.get("warm_up_s", 0.0))

    async def warm_up(self) -> None:
        """Like a model's first forward passes: the replica is not ready until it is done."""
        await asyncio.sleep(self.warm_up_s)

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = get_message_text(context.message) if context.message else ""
        updater = await open_task(context, event_queue)
        await updater.start_work()
        delay = self.delay
        if text.startswith("sleep:"):
            delay = float(text.split(":", 1)[1].split()[0])
        if delay:
            await asyncio.sleep(delay)
        await updater.add_artifact([new_text_part(text.upper())], name="echo")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = await open_task(context, event_queue)
        await updater.cancel()
