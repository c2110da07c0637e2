"""The scaling benchmark's agent: a fixed CPU cost per request, like an SLM's forward passes."""

from __future__ import annotations

import asyncio
import time

from a2a.helpers.proto_helpers import new_text_part

from mesh.a2a.executor import Executor, Reporter, Request
from mesh.config import ServiceSpec, Settings


def burn(cpu_ms: float) -> None:
    """Spins until this thread has used ``cpu_ms`` of CPU time (not wall time: under
    contention the cost per request stays the same and the wall time grows)."""
    end = time.thread_time() + cpu_ms / 1000
    while time.thread_time() < end:
        pass


class BurnExecutor(Executor):
    """Burns ``options.cpu_ms`` in a worker thread (the GIL makes one replica one core), then
    completes with the input text as its artifact."""

    def __init__(self, spec: ServiceSpec, settings: Settings | None = None) -> None:
        self.cpu_ms = float(spec.options.get("cpu_ms", 20))

    async def execute(self, request: Request, task: Reporter) -> None:
        text = request.text
        await task.open()
        await asyncio.to_thread(burn, self.cpu_ms)
        await task.artifact([new_text_part(text)], name="burn")
        await task.complete()

    async def cancel(self, request: Request, task: Reporter) -> None:
        await task.cancel()
