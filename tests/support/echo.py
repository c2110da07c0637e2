"""Test-only executors: deterministic, instant agents for runtime and transport tests."""

from __future__ import annotations

import asyncio
import time

from a2a.helpers.proto_helpers import new_text_part

from mesh.a2a.executor import Executor, Reporter, Request
from mesh.config import ServiceSpec, Settings


class EchoExecutor(Executor):
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

    async def execute(self, request: Request, task: Reporter) -> None:
        text = request.text
        await task.working()
        delay = self.delay
        if text.startswith("sleep:"):
            delay = float(text.split(":", 1)[1].split()[0])
        if delay:
            await asyncio.sleep(delay)
        await task.artifact([new_text_part(text.upper())], name="echo")
        await task.complete()

    async def cancel(self, request: Request, task: Reporter) -> None:
        await task.cancel()
