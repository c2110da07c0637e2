"""The scaling benchmark's agent: a fixed CPU cost per request, like an SLM's forward passes."""

from __future__ import annotations

import asyncio
import time

from a2a.helpers.proto_helpers import get_message_text, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue

from mesh.a2a.tasks import open_task
from mesh.config import ServiceSpec, Settings


def burn(cpu_ms: float) -> None:
    """Spins until this thread has used ``cpu_ms`` of CPU time (not wall time: under
    contention the cost per request stays the same and the wall time grows)."""
    end = time.thread_time() + cpu_ms / 1000
    while time.thread_time() < end:
        pass


class BurnExecutor(AgentExecutor):
    """Burns ``options.cpu_ms`` in a worker thread (the GIL makes one replica one core), then
    completes with the input text as its artifact."""

    def __init__(self, spec: ServiceSpec, settings: Settings | None = None) -> None:
        self.cpu_ms = float(spec.options.get("cpu_ms", 20))

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = get_message_text(context.message) if context.message else ""
        updater = await open_task(context, event_queue)
        await asyncio.to_thread(burn, self.cpu_ms)
        await updater.add_artifact([new_text_part(text)], name="burn")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = await open_task(context, event_queue)
        await updater.cancel()
