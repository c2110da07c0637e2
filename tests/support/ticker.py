"""Test-only executor whose task lives a while and streams progress: replica-agnostic task tests."""

from __future__ import annotations

import asyncio

from a2a.helpers.proto_helpers import get_message_text, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue

from mesh.a2a.tasks import open_task
from mesh.config import ServiceSpec, Settings


class TickerExecutor(AgentExecutor):
    """``ticks:N:SECONDS`` emits N working updates ("tick I"), SECONDS apart, then completes
    with an artifact "done after N ticks"; a cancel ends the task at the next tick."""

    def __init__(self, spec: ServiceSpec | None = None, settings: Settings | None = None) -> None:
        self.cancelled: set[str] = set()

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        _, count, interval = get_message_text(context.message).split(":")
        updater = await open_task(context, event_queue)
        await updater.start_work()
        for i in range(int(count)):
            if context.task_id in self.cancelled:
                return
            await updater.start_work(updater.new_agent_message([new_text_part(f"tick {i}")]))
            await asyncio.sleep(float(interval))
        await updater.add_artifact([new_text_part(f"done after {count} ticks")], name="ticker")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None
        self.cancelled.add(context.task_id)
        updater = await open_task(context, event_queue)
        await updater.cancel()
