"""Test-only executor whose task lives a while and streams progress: replica-agnostic task tests."""

from __future__ import annotations

import asyncio

from a2a.helpers.proto_helpers import get_message_text, new_text_part
from a2a.types.a2a_pb2 import Task

from mesh.a2a.executor import Executor, Reporter, Request
from mesh.config import ServiceSpec, Settings


class TickerExecutor(Executor):
    """``ticks:N:SECONDS[:WAIT]`` emits N working updates ("tick I"), SECONDS apart (the first
    WAIT seconds after the task starts working), then completes with an artifact "done after N
    ticks"; a cancel ends the task at the next tick.

    Re-executed on a task that already ticked (a takeover after its replica died), it goes
    on after the last tick the task recorded, as an executor that can resume should.
    """

    def __init__(self, spec: ServiceSpec | None = None, settings: Settings | None = None) -> None:
        self.cancelled: set[str] = set()

    async def execute(self, request: Request, task: Reporter) -> None:
        _, count, interval, *wait = get_message_text(request.message).split(":")
        await task.working()
        if wait:
            await asyncio.sleep(float(wait[0]))
        for i in range(_recorded_ticks(request.task), int(count)):
            if request.task_id in self.cancelled:
                return
            await task.working(task.agent_message([new_text_part(f"tick {i}")]))
            await asyncio.sleep(float(interval))
        await task.artifact([new_text_part(f"done after {count} ticks")], name="ticker")
        await task.complete()

    async def cancel(self, request: Request, task: Reporter) -> None:
        assert request.task_id is not None
        self.cancelled.add(request.task_id)
        await task.cancel()


def _recorded_ticks(task: Task | None) -> int:
    """How many ticks the stored task already shows (its status message and history)."""
    if task is None:
        return 0
    messages = (
        [*task.history, task.status.message]
        if task.status.HasField("message")
        else list(task.history)
    )
    ticks = [
        int(text.split()[1]) for m in messages if (text := get_message_text(m)).startswith("tick ")
    ]
    return max(ticks) + 1 if ticks else 0
