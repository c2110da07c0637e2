"""Replica-agnostic tasks: two real replicas share a PostgreSQL task store and its event log
(SLMESH_TASK_EVENTS=database, a2a-sdk's versioned store), so a task started on replica A is
read, listed, followed and cancelled through replica B."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from a2a.types import a2a_pb2 as pb
from a2a.helpers.proto_helpers import new_text_message

from mesh.a2a.client import MeshClient, StaticReplicas
from tests.support.procs import ServiceProcess

POSTGRES_URL = "postgresql+asyncpg://127.0.0.1:5432/test"

pytestmark = pytest.mark.integration


def _postgres_up() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 5432), timeout=1):
        return True
    return False


@pytest.fixture
def ticker_service(tmp_path: Path) -> Iterator[Path]:
    """A ticker agent with a unique name, so its task table is its own; its rows are removed after."""
    if not _postgres_up():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    name = f"ticker-{uuid.uuid4().hex[:8]}"
    folder = tmp_path / name
    folder.mkdir()
    (folder / "agent.yaml").write_text(
        f"name: {name}\nkind: agent\nexecutor: tests.support.ticker:TickerExecutor\n"
        "skills:\n  - {id: tick, name: Tick, description: Streams ticks.}\n"
        "input_modes: [text/plain]\noutput_modes: [text/plain]\n", encoding="utf-8")
    yield folder
    table = f"tasks_{name.replace('-', '_')}"

    async def drop() -> None:
        import asyncpg

        conn = await asyncpg.connect("postgresql://127.0.0.1:5432/test")
        try:
            if await conn.fetchval("SELECT to_regclass($1)", table) is not None:
                # a2a-sdk's version and event tables are shared by all agents: only our rows go.
                for shared in ("task_events", "task_versions"):
                    await conn.execute(f'DELETE FROM {shared} WHERE task_id IN (SELECT id FROM "{table}")')
                await conn.execute(f'DROP TABLE "{table}"')
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture
def replicas(spawn: Callable[..., ServiceProcess], ticker_service: Path) -> tuple[ServiceProcess, ServiceProcess]:
    env = {"SLMESH_TASK_STORE": POSTGRES_URL, "SLMESH_TASK_EVENTS": "database"}
    return spawn(ticker_service, env=env), spawn(ticker_service, env=env)


@contextlib.asynccontextmanager
async def _client(proc: ServiceProcess, agent: str) -> AsyncIterator[MeshClient]:
    async with MeshClient(StaticReplicas.from_urls(agent, proc.http_url, f"grpc://{proc.grpc_target}")) as c:
        yield c


async def _start(client: MeshClient, agent: str, text: str) -> tuple[str, list[pb.StreamResponse]]:
    """Starts a streaming task and leaves its stream after the first tick (the caller's
    connection to that replica is gone); returns the task id and what it saw."""
    seen: list[pb.StreamResponse] = []
    stream = client.send_streaming_message(agent, pb.SendMessageRequest(message=new_text_message(text)))
    async for event in stream:
        seen.append(event)
        if event.HasField("status_update") and "tick 0" in str(event.status_update.status.message):
            break
    await stream.aclose()
    task_ids = {e.task.id for e in seen if e.HasField("task")} | {
        e.status_update.task_id for e in seen if e.HasField("status_update")}
    assert len(task_ids) == 1, seen
    return task_ids.pop(), seen


async def test_task_on_a_is_read_listed_and_followed_on_b(
        replicas: tuple[ServiceProcess, ServiceProcess], ticker_service: Path) -> None:
    a, b = replicas
    agent = ticker_service.name
    async with _client(a, agent) as on_a, _client(b, agent) as on_b:
        task_id, _ = await _start(on_a, agent, "ticks:5:0.4")

        task = await on_b.get_task(agent, task_id)
        assert task.status.state == pb.TaskState.TASK_STATE_WORKING
        listed = await on_b.list_tasks(agent)
        assert task_id in {t.id for t in listed.tasks}

        ticks, final = [], None
        async for event in on_b.subscribe(agent, task_id, timeout=30):
            if event.HasField("status_update"):
                text = "".join(p.text for p in event.status_update.status.message.parts)
                if text.startswith("tick "):
                    ticks.append(text)
                final = event.status_update.status.state
        # B's stream carries what A's executor emitted after the caller left A, up to the end.
        assert ticks and ticks[-1] == "tick 4"
        assert final == pb.TaskState.TASK_STATE_COMPLETED
        done = await on_b.get_task(agent, task_id)
        assert done.status.state == pb.TaskState.TASK_STATE_COMPLETED
        assert [p.text for a in done.artifacts for p in a.parts] == ["done after 5 ticks"]


async def test_task_on_a_is_cancelled_through_b(
        replicas: tuple[ServiceProcess, ServiceProcess], ticker_service: Path) -> None:
    a, b = replicas
    agent = ticker_service.name
    async with _client(a, agent) as on_a, _client(b, agent) as on_b:
        task_id, _ = await _start(on_a, agent, "ticks:200:0.1")
        cancelled = await on_b.cancel_task(agent, task_id)
        assert cancelled.status.state == pb.TaskState.TASK_STATE_CANCELED
        # A sees the cancel on its next write and stops; every replica reports it cancelled.
        for client in (on_a, on_b):
            assert (await client.get_task(agent, task_id)).status.state == pb.TaskState.TASK_STATE_CANCELED


async def test_a_follower_killed_mid_stream_resubscribes_on_another_replica(
        spawn: Callable[..., ServiceProcess], replicas: tuple[ServiceProcess, ServiceProcess],
        ticker_service: Path) -> None:
    """The task runs on A; its events are followed through B; B is killed (SIGKILL) mid-stream;
    the caller resubscribes through C and gets the remaining events and the final result."""
    a, b = replicas
    c = spawn(ticker_service, env={"SLMESH_TASK_STORE": POSTGRES_URL, "SLMESH_TASK_EVENTS": "database"})
    agent = ticker_service.name
    async with _client(a, agent) as on_a, _client(b, agent) as on_b, _client(c, agent) as on_c:
        task_id, _ = await _start(on_a, agent, "ticks:8:0.4")
        before: list[str] = []
        # Whatever the transport raises when B dies mid-stream ends this loop.
        with contextlib.suppress(Exception):
            async for event in on_b.subscribe(agent, task_id, timeout=30):
                if event.HasField("status_update"):
                    before.append("".join(p.text for p in event.status_update.status.message.parts))
                    if before[-1].startswith("tick "):
                        b.kill()  # at the first tick B delivers
        seen = max(int(t.split()[1]) for t in before if t.startswith("tick "))
        assert seen < 7
        after, final = [], None
        async for event in on_c.subscribe(agent, task_id, timeout=30):
            if event.HasField("status_update"):
                after.append("".join(p.text for p in event.status_update.status.message.parts))
                final = event.status_update.status.state
        ticks = [int(t.split()[1]) for t in after if t.startswith("tick ")]
        assert ticks and ticks[-1] == 7 and min(ticks) > seen, after
        assert final == pb.TaskState.TASK_STATE_COMPLETED
        done = await on_c.get_task(agent, task_id)
        assert [p.text for art in done.artifacts for p in art.parts] == ["done after 8 ticks"]
