"""Following one task from two replicas at once: the test of the task event feed and
``slmesh bench feed`` both start a ticker task on replica A and time each tick's arrival at a
subscriber on A (same replica: a2a-sdk's in-process tap) and one on B (the shared event log)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from a2a.helpers.proto_helpers import new_text_message
from a2a.types import a2a_pb2 as pb

from mesh.a2a.client import MeshClient, StaticReplicas
from tests.support.procs import ServiceProcess


def ticker_service(folder: Path, name: str) -> Path:
    """A service directory for :class:`tests.support.ticker.TickerExecutor` named ``name``."""
    service = folder / name
    service.mkdir(parents=True)
    (service / "agent.yaml").write_text(
        f"name: {name}\nkind: agent\nexecutor: tests.support.ticker:TickerExecutor\n"
        "skills:\n  - {id: tick, name: Tick, description: Streams ticks.}\n"
        "input_modes: [text/plain]\noutput_modes: [text/plain]\n",
        encoding="utf-8",
    )
    return service


@dataclass
class Arrivals:
    """When (``perf_counter``) each tick reached one subscriber, in arrival order."""

    ticks: list[int] = field(default_factory=list)
    at: dict[int, float] = field(default_factory=dict)
    final: int | None = None


@contextlib.asynccontextmanager
async def client_of(proc: ServiceProcess, agent: str) -> AsyncIterator[MeshClient]:
    async with MeshClient(
        StaticReplicas.from_urls(agent, proc.http_url, f"grpc://{proc.grpc_target}")
    ) as client:
        yield client


def _tick(event: pb.StreamResponse) -> int | None:
    if not event.HasField("status_update"):
        return None
    text = "".join(p.text for p in event.status_update.status.message.parts)
    return int(text.split()[1]) if text.startswith("tick ") else None


async def _follow(
    client: MeshClient,
    agent: str,
    task_id: str,
    arrivals: Arrivals,
    on_tick: Callable[[int], Awaitable[None]] | None,
) -> None:
    async for event in client.subscribe(agent, task_id, timeout=120):
        now = time.perf_counter()
        tick = _tick(event)
        if tick is not None:
            arrivals.ticks.append(tick)
            arrivals.at.setdefault(tick, now)
            if on_tick is not None:
                await on_tick(tick)
        if event.HasField("status_update"):
            arrivals.final = event.status_update.status.state


async def follow_from_both(
    a: ServiceProcess,
    b: ServiceProcess,
    agent: str,
    ticks: int,
    interval_s: float,
    on_tick_b: Callable[[int], Awaitable[None]] | None = None,
    wait_s: float = 1.0,
) -> tuple[Arrivals, Arrivals]:
    """Starts ``ticks`` ticks ``interval_s`` apart on A and follows the task from A and B until
    it completes; the ticks start ``wait_s`` after the task, time enough for both
    subscriptions to open."""
    async with client_of(a, agent) as on_a, client_of(b, agent) as on_b:
        stream = on_a.send_streaming_message(
            agent,
            pb.SendMessageRequest(message=new_text_message(f"ticks:{ticks}:{interval_s}:{wait_s}")),
        )
        task_id = ""
        async for event in stream:  # the task first: its id is all this needs
            if event.HasField("task"):
                task_id = event.task.id
                break
        await stream.aclose()
        assert task_id, "the ticker task was not created"
        same, other = Arrivals(), Arrivals()
        await asyncio.gather(
            _follow(on_a, agent, task_id, same, None),
            _follow(on_b, agent, task_id, other, on_tick_b),
        )
        return same, other


def lags_ms(same: Arrivals, other: Arrivals) -> list[float]:
    """How much later each tick reached B's subscriber than A's (ms), sorted."""
    return sorted((other.at[t] - same.at[t]) * 1000 for t in same.at if t in other.at)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]
