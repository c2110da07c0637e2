"""Replica-agnostic tasks: two real replicas share a PostgreSQL task store and its event log
(SLMESH_TASK_EVENTS=database, a2a-sdk's versioned store), so a task started on replica A is
read, listed, followed and cancelled through replica B."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from a2a.client import Client, ClientConfig, create_client
from a2a.helpers.proto_helpers import new_text_message
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import UnsupportedOperationError
from google.protobuf.json_format import MessageToDict

from mesh.a2a.client import MeshClient, StaticReplicas
from mesh.a2a.leases import TABLE as LEASES
from mesh.a2a.leases import TAKEOVER_METADATA
from tests.support.postgres import FAST_LEASES, SHARED, connect, drop_agent_tasks, postgres_up
from tests.support.procs import ServiceProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def ticker_service(tmp_path: Path) -> Iterator[Path]:
    """A ticker agent with a unique name, so its task table is its own; its rows are removed
    after."""
    if not postgres_up():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    name = f"ticker-{uuid.uuid4().hex[:8]}"
    folder = tmp_path / name
    folder.mkdir()
    (folder / "agent.yaml").write_text(
        f"name: {name}\nkind: agent\nexecutor: tests.support.ticker:TickerExecutor\n"
        "skills:\n  - {id: tick, name: Tick, description: Streams ticks.}\n"
        "input_modes: [text/plain]\noutput_modes: [text/plain]\n",
        encoding="utf-8",
    )
    yield folder
    asyncio.run(drop_agent_tasks(name))


@pytest.fixture
def replicas(
    spawn: Callable[..., ServiceProcess], ticker_service: Path
) -> tuple[ServiceProcess, ServiceProcess]:
    return spawn(ticker_service, env=SHARED), spawn(ticker_service, env=SHARED)


@contextlib.asynccontextmanager
async def _client(proc: ServiceProcess, agent: str) -> AsyncIterator[MeshClient]:
    async with MeshClient(
        StaticReplicas.from_urls(agent, proc.http_url, f"grpc://{proc.grpc_target}")
    ) as c:
        yield c


async def _start(client: MeshClient, agent: str, text: str) -> tuple[str, list[pb.StreamResponse]]:
    """Starts a streaming task and leaves its stream after the first tick (the caller's
    connection to that replica is gone); returns the task id and what it saw."""
    seen: list[pb.StreamResponse] = []
    stream = client.send_streaming_message(
        agent, pb.SendMessageRequest(message=new_text_message(text))
    )
    async for event in stream:
        seen.append(event)
        if event.HasField("status_update") and "tick 0" in str(event.status_update.status.message):
            break
    await stream.aclose()
    task_ids = {e.task.id for e in seen if e.HasField("task")} | {
        e.status_update.task_id for e in seen if e.HasField("status_update")
    }
    assert len(task_ids) == 1, seen
    return task_ids.pop(), seen


async def test_task_on_a_is_read_listed_and_followed_on_b(
    replicas: tuple[ServiceProcess, ServiceProcess], ticker_service: Path
) -> None:
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
        assert ticks
        assert ticks[-1] == "tick 4"
        assert final == pb.TaskState.TASK_STATE_COMPLETED
        done = await on_b.get_task(agent, task_id)
        assert done.status.state == pb.TaskState.TASK_STATE_COMPLETED
        assert [p.text for a in done.artifacts for p in a.parts] == ["done after 5 ticks"]


async def test_task_on_a_is_cancelled_through_b(
    replicas: tuple[ServiceProcess, ServiceProcess], ticker_service: Path
) -> None:
    a, b = replicas
    agent = ticker_service.name
    async with _client(a, agent) as on_a, _client(b, agent) as on_b:
        task_id, _ = await _start(on_a, agent, "ticks:200:0.1")
        cancelled = await on_b.cancel_task(agent, task_id)
        assert cancelled.status.state == pb.TaskState.TASK_STATE_CANCELED
        # A sees the cancel on its next write and stops; every replica reports it cancelled.
        for client in (on_a, on_b):
            assert (
                await client.get_task(agent, task_id)
            ).status.state == pb.TaskState.TASK_STATE_CANCELED


async def test_a_follower_killed_mid_stream_resubscribes_on_another_replica(
    spawn: Callable[..., ServiceProcess],
    replicas: tuple[ServiceProcess, ServiceProcess],
    ticker_service: Path,
) -> None:
    """The task runs on A; its events are followed through B; B is killed (SIGKILL) mid-stream;
    the caller resubscribes through C and gets the remaining events and the final result."""
    a, b = replicas
    c = spawn(ticker_service, env=SHARED)
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
        assert ticks, after
        assert ticks[-1] == 7, after
        assert min(ticks) > seen, after
        assert final == pb.TaskState.TASK_STATE_COMPLETED
        done = await on_c.get_task(agent, task_id)
        assert [p.text for art in done.artifacts for p in art.parts] == ["done after 8 ticks"]


# -- takeover: a task whose replica is killed is finished by another (mesh.a2a.leases) --------


@contextlib.asynccontextmanager
async def _official(proc: ServiceProcess) -> AsyncIterator[Client]:
    """a2a-sdk's own client on one replica, over gRPC (an idle stream has no HTTP read timeout)."""

    def channel(url: str) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(url.split("://", 1)[-1])

    client = await create_client(
        proc.http_url,
        ClientConfig(supported_protocol_bindings=["GRPC"], grpc_channel_factory=channel),
    )
    try:
        yield client
    finally:
        await client.close()


def _text(status: pb.TaskStatus) -> str:
    return "".join(p.text for p in status.message.parts)


async def _lease_rows(task_id: str) -> list[asyncpg.Record]:
    conn = await connect()
    try:
        return await conn.fetch(
            f"SELECT replica, takeovers, expires_at < now() AS expired FROM {LEASES} WHERE task_id "
            "= $1",
            task_id,
        )
    finally:
        await conn.close()


async def test_a_task_whose_replica_is_killed_is_taken_over_and_finished(
    spawn: Callable[..., ServiceProcess], ticker_service: Path
) -> None:
    """A streams a task; A is SIGKILLed after its first ticks; a subscriber on B (official
    client) gets the ticks A never sent, one takeover notice and the completed task."""
    a, b = spawn(ticker_service, env=FAST_LEASES), spawn(ticker_service, env=FAST_LEASES)
    agent = ticker_service.name
    async with _client(a, agent) as on_a, _official(b) as on_b:
        task_id, _ = await _start(on_a, agent, "ticks:8:0.5")
        [lease] = await _lease_rows(task_id)
        assert lease["takeovers"] == 0
        assert not lease["expired"]
        a.kill()
        killed = time.monotonic()
        assert (
            await on_b.get_task(pb.GetTaskRequest(id=task_id))
        ).status.state == pb.TaskState.TASK_STATE_WORKING

        snapshot: pb.Task | None = None
        ticks: list[int] = []
        notices: list[str] = []
        states_at_notice: list[int] = []
        final: pb.TaskStatus | None = None
        subscription = on_b.subscribe(pb.SubscribeToTaskRequest(id=task_id))
        async with asyncio.timeout(30):
            async for event in subscription:
                if event.HasField("task"):
                    snapshot = event.task
                elif event.HasField("status_update"):
                    text = _text(event.status_update.status)
                    if text.startswith("tick "):
                        ticks.append(int(text.split()[1]))
                    elif text.startswith("taken over"):
                        notices.append(text)
                        taken_after = time.monotonic() - killed
                        task = await on_b.get_task(pb.GetTaskRequest(id=task_id))
                        states_at_notice.append(task.status.state)
                    final = event.status_update.status

        print(
            f"\ntakeover: notice on B {taken_after:.2f} s after SIGKILL, completed "
            f"{time.monotonic() - killed:.2f} s "
            f"after (lease 2 s, renew 0.4 s, remaining ticks {len(ticks)} x 0.5 s)"
        )
        assert snapshot is not None
        assert _text(snapshot.status).startswith("tick ")
        last_by_a = int(_text(snapshot.status).split()[1])
        assert last_by_a < 7
        # Every tick A did not record, once, in order, then the end.
        assert ticks == list(range(last_by_a + 1, 8)), (last_by_a, ticks)
        assert len(notices) == 1
        assert "takeover 1 of at most 3" in notices[0]
        assert states_at_notice == [pb.TaskState.TASK_STATE_WORKING]
        assert final is not None
        assert final.state == pb.TaskState.TASK_STATE_COMPLETED

        done = await on_b.get_task(pb.GetTaskRequest(id=task_id))
        assert done.status.state == pb.TaskState.TASK_STATE_COMPLETED
        assert [p.text for art in done.artifacts for p in art.parts] == ["done after 8 ticks"]
        takeover = MessageToDict(done.metadata)[TAKEOVER_METADATA]
        assert takeover["count"] == 1
        assert takeover["from"] != takeover["replica"]
        assert takeover["replica"].endswith(f"-{b.popen.pid}")
        # The finished task's lease is dropped: nothing is left to take over.
        async with asyncio.timeout(10):
            while await _lease_rows(task_id):
                await asyncio.sleep(0.1)


async def test_a_task_finished_before_its_replica_died_is_never_rerun(
    spawn: Callable[..., ServiceProcess], ticker_service: Path
) -> None:
    """A task completed on A whose lease outlived A (killed before dropping it) is not run again:
    the takeover finds it completed, drops the lease, and the task keeps its version."""
    a, b = spawn(ticker_service, env=FAST_LEASES), spawn(ticker_service, env=FAST_LEASES)
    agent = ticker_service.name
    async with _client(a, agent) as on_a:
        stream = on_a.send_streaming_message(
            agent, pb.SendMessageRequest(message=new_text_message("ticks:1:0"))
        )
        task_id = next(iter([e async for e in stream])).task.id
    a.kill()
    conn = await connect()
    try:
        # A's lease as it would be had A died between storing the result and dropping the lease.
        await conn.execute(
            f"INSERT INTO {LEASES} (agent, task_id, owner, replica, expires_at, request) VALUES "
            "($1, $2, '', 'dead-replica', now() - interval '1 second', $3) ON CONFLICT (agent, "
            "task_id) DO UPDATE SET replica = EXCLUDED.replica, expires_at = EXCLUDED.expires_at",
            agent,
            task_id,
            new_text_message("ticks:1:0").SerializeToString(),
        )
        version = await conn.fetchval(
            "SELECT version FROM task_versions WHERE task_id = $1", task_id
        )
        async with _official(b) as on_b:
            with pytest.raises(UnsupportedOperationError, match="terminal state"):
                async for _ in on_b.subscribe(pb.SubscribeToTaskRequest(id=task_id)):
                    pass
            task = await on_b.get_task(pb.GetTaskRequest(id=task_id))
        assert task.status.state == pb.TaskState.TASK_STATE_COMPLETED
        assert TAKEOVER_METADATA not in MessageToDict(task.metadata)
        assert (
            await conn.fetchval("SELECT version FROM task_versions WHERE task_id = $1", task_id)
            == version
        )
        assert await _lease_rows(task_id) == []
    finally:
        await conn.close()


async def test_a_task_past_its_takeover_limit_fails_with_the_reason(
    spawn: Callable[..., ServiceProcess], ticker_service: Path
) -> None:
    env = {**FAST_LEASES, "SLMESH_TASK_MAX_TAKEOVERS": "0"}
    a, b = spawn(ticker_service, env=env), spawn(ticker_service, env=env)
    agent = ticker_service.name
    async with _client(a, agent) as on_a, _official(b) as on_b:
        task_id, _ = await _start(on_a, agent, "ticks:50:0.5")
        a.kill()
        final: pb.TaskStatus | None = None
        async with asyncio.timeout(30):
            async for event in on_b.subscribe(pb.SubscribeToTaskRequest(id=task_id)):
                if event.HasField("status_update"):
                    final = event.status_update.status
        assert final is not None
        assert final.state == pb.TaskState.TASK_STATE_FAILED
        assert "task_max_takeovers is 0" in _text(final), _text(final)
        assert (
            await on_b.get_task(pb.GetTaskRequest(id=task_id))
        ).status.state == pb.TaskState.TASK_STATE_FAILED


@pytest.fixture
def conformance_service(tmp_path: Path) -> Iterator[Path]:
    """The TCK's conformance agent under a unique name (its own task table, dropped after)."""
    if not postgres_up():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    name = f"tck-{uuid.uuid4().hex[:8]}"
    folder = tmp_path / name
    folder.mkdir()
    (folder / "agent.yaml").write_text(
        f"name: {name}\nkind: agent\nexecutor: tests.conformance.executor:ConformanceExecutor\n"
        "skills:\n  - {id: tck, name: TCK, description: TCK scenarios.}\n",
        encoding="utf-8",
    )
    yield folder
    asyncio.run(drop_agent_tasks(name))


async def test_a_follow_up_naming_only_its_task_continues_it_on_another_replica(
    spawn: Callable[..., ServiceProcess], conformance_service: Path
) -> None:
    agent = conformance_service.name
    a, b = spawn(conformance_service, env=SHARED), spawn(conformance_service, env=SHARED)
    async with _client(a, agent) as on_a:
        first = await on_a.send_message(
            agent, pb.SendMessageRequest(message=_message("tck-input-required-1", "start"))
        )
    assert first.task.status.state == pb.TaskState.TASK_STATE_INPUT_REQUIRED
    follow_up = _message("tck-complete-task-2", "go on")
    follow_up.task_id = first.task.id  # no context id: the replica reads it from the store
    async with _client(b, agent) as on_b:
        done = await on_b.send_message(agent, pb.SendMessageRequest(message=follow_up))
    assert done.task.id == first.task.id
    assert done.task.context_id == first.task.context_id
    assert done.task.status.state == pb.TaskState.TASK_STATE_COMPLETED


def _message(message_id: str, text: str) -> pb.Message:
    return pb.Message(role=pb.Role.ROLE_USER, message_id=message_id, parts=[pb.Part(text=text)])


@pytest.mark.parametrize(("follower", "sender"), [(0, 1), (1, 0), (0, 0)])
async def test_a_subscriber_to_a_parked_task_sees_the_turn_that_ends_it_on_any_replica(
    spawn: Callable[..., ServiceProcess], conformance_service: Path, follower: int, sender: int
) -> None:
    agent = conformance_service.name
    procs = [spawn(conformance_service, env=SHARED) for _ in range(2)]
    async with _client(procs[0], agent) as first, _client(procs[1], agent) as second:
        clients = (first, second)
        parked = await first.send_message(
            agent, pb.SendMessageRequest(message=_message("tck-input-required-1", "start"))
        )
        task_id = parked.task.id

        async def follow() -> list[pb.StreamResponse]:
            return [e async for e in clients[follower].subscribe(agent, task_id, timeout=15)]

        following = asyncio.create_task(follow())
        await asyncio.sleep(0.5)
        follow_up = _message("tck-complete-task-2", "go on")
        follow_up.task_id = task_id
        await clients[sender].send_message(agent, pb.SendMessageRequest(message=follow_up))
        events = await following
    assert events[0].task.status.state == pb.TaskState.TASK_STATE_INPUT_REQUIRED
    assert events[-1].status_update.status.state == pb.TaskState.TASK_STATE_COMPLETED
