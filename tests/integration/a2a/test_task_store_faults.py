"""The shared task store's connection dropped mid-transaction (``pg_terminate_backend`` on the
replica's own backend, on a PostgreSQL database of the test's own): the call fails with an
error that says the task store failed and may be retried, without the driver's text (the SQL
and the task's content); nothing of the write is stored (every task version with exactly its
event-log rows); the replica stays up and the retried call completes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pytest
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import InternalError

from mesh.a2a.client import MeshClient, StaticReplicas
from mesh.a2a.handler import TASK_STORE_FAILED
from tests.support.postgres import scratch_database
from tests.support.procs import ROOT, ServiceProcess
from tests.support.proxy import Proxy

pytestmark = pytest.mark.integration

ECHO = ROOT / "tests" / "support" / "echo_service"
SECRET = "text-that-must-not-leak"


@pytest.fixture
def database() -> Iterator[str]:
    with scratch_database("taskstore") as url:
        yield url


async def _consistent(conn: asyncpg.Connection) -> None:
    """Every stored task has one version row whose number is its count of event-log rows."""
    tasks = await conn.fetchval("SELECT count(*) FROM tasks_echo")
    versions = await conn.fetch(
        "SELECT v.task_id, v.version, (SELECT count(*) FROM task_events e "
        "WHERE e.task_id = v.task_id) AS events FROM task_versions v"
    )
    assert len(versions) == tasks
    assert all(row["version"] == row["events"] for row in versions), versions


async def _terminate_waiting_insert(admin: asyncpg.Connection, call: asyncio.Task[Any]) -> None:
    """Terminates the replica's backend once it waits on the held lock to insert an event-log
    row: the connection dropped mid-transaction."""
    backend = None
    async with asyncio.timeout(30):
        while backend is None:
            assert not call.done(), call.result()
            backend = await admin.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO task_events%'"
            )
            await asyncio.sleep(0.02)
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", backend)


async def test_a_task_store_connection_dropped_mid_transaction_fails_clearly_and_stores_nothing(
    database: str, spawn: Callable[..., ServiceProcess]
) -> None:
    env = {
        "SLMESH_TASK_STORE": database.replace("postgresql://", "postgresql+asyncpg://", 1),
        "SLMESH_TASK_EVENTS": "database",
    }
    proc = spawn(ECHO, env=env)
    admin = await asyncpg.connect(database)
    blocker = await asyncpg.connect(database)
    replicas = StaticReplicas.from_urls("echo", proc.http_url, f"grpc://{proc.grpc_target}")
    try:
        async with MeshClient(replicas) as client:
            first = await client.send_text("echo", "first")
            assert first.task.status.state == pb.TaskState.TASK_STATE_COMPLETED
            before = await admin.fetchval("SELECT count(*) FROM task_events")

            # The replica's next write blocks inserting its event-log row behind this lock
            # (inside its transaction, after the task row): its backend is terminated there.
            holding = blocker.transaction()
            await holding.start()
            await blocker.execute("LOCK TABLE task_events IN SHARE ROW EXCLUSIVE MODE")
            sent = asyncio.create_task(client.send_text("echo", SECRET, timeout=60))
            await _terminate_waiting_insert(admin, sent)
            with pytest.raises(InternalError) as failed:
                await sent
            await holding.rollback()

            assert failed.value.message == TASK_STORE_FAILED
            assert "retry" in failed.value.message
            assert SECRET not in str(failed.value)
            assert "INSERT" not in str(failed.value)
            # Nothing of the failed write is stored, and no task is half-written.
            assert await admin.fetchval("SELECT count(*) FROM task_events") == before
            assert not await admin.fetchval(
                "SELECT count(*) FROM task_events WHERE position($1::bytea IN event_data) > 0",
                SECRET.encode(),
            )
            await _consistent(admin)

            # The replica stays up (its pool replaced the connection); the retry completes.
            again = await client.send_text("echo", SECRET)
            assert again.task.status.state == pb.TaskState.TASK_STATE_COMPLETED
            assert again.task.artifacts[0].parts[0].text == SECRET.upper()
            await _consistent(admin)
    finally:
        await blocker.close()
        await admin.close()
    assert proc.popen.poll() is None


async def test_a_streamed_task_whose_store_connection_drops_ends_with_the_clear_error(
    database: str, spawn: Callable[..., ServiceProcess]
) -> None:
    """The same cut under SendStreamingMessage: the stream ends with the same error, nothing
    of the write stored."""
    env = {
        "SLMESH_TASK_STORE": database.replace("postgresql://", "postgresql+asyncpg://", 1),
        "SLMESH_TASK_EVENTS": "database",
    }
    proc = spawn(ECHO, env=env)
    admin = await asyncpg.connect(database)
    blocker = await asyncpg.connect(database)
    replicas = StaticReplicas.from_urls("echo", proc.http_url, f"grpc://{proc.grpc_target}")
    try:
        async with MeshClient(replicas) as client:
            await client.send_text("echo", "first")  # the tables exist
            holding = blocker.transaction()
            await holding.start()
            await blocker.execute("LOCK TABLE task_events IN SHARE ROW EXCLUSIVE MODE")
            request = pb.SendMessageRequest(
                message=pb.Message(
                    role=pb.Role.ROLE_USER,
                    message_id="streamed-1",
                    parts=[pb.Part(text=SECRET)],
                )
            )
            received: list[pb.StreamResponse] = []

            async def consume() -> None:
                async for event in client.send_streaming_message("echo", request, timeout=60):
                    received.append(event)

            streamed = asyncio.create_task(consume())
            await _terminate_waiting_insert(admin, streamed)
            with pytest.raises(InternalError) as failed:
                await streamed
            await holding.rollback()

            assert failed.value.message == TASK_STORE_FAILED
            assert SECRET not in str(failed.value)
            assert "INSERT" not in str(failed.value)
            assert not await admin.fetchval(
                "SELECT count(*) FROM task_events WHERE position($1::bytea IN event_data) > 0",
                SECRET.encode(),
            )
            await _consistent(admin)
    finally:
        await blocker.close()
        await admin.close()
    assert proc.popen.poll() is None


class _ThreadedProxy:
    """A :class:`Proxy` to PostgreSQL on a loop of its own thread, so it forwards while the
    test blocks (starting a replica waits for it synchronously)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.proxy = self._run(Proxy(5432).start())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def stop(self) -> None:
        """The server gone: open connections closed, new ones refused."""
        self._run(self.proxy.stop())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


async def test_reads_and_subscriptions_on_an_unreachable_task_store_fail_clearly(
    database: str, spawn: Callable[..., ServiceProcess]
) -> None:
    name = database.rsplit("/", 1)[1]
    proxy = _ThreadedProxy()
    try:
        env = {
            "SLMESH_TASK_STORE": f"postgresql+asyncpg://127.0.0.1:{proxy.proxy.port}/{name}",
            "SLMESH_TASK_EVENTS": "database",
        }
        proc = spawn(ECHO, env=env)
        replicas = StaticReplicas.from_urls("echo", proc.http_url, f"grpc://{proc.grpc_target}")
        async with MeshClient(replicas) as client:
            done = await client.send_text("echo", SECRET)
            assert done.task.status.state == pb.TaskState.TASK_STATE_COMPLETED
            proxy.stop()
            with pytest.raises(InternalError) as read:
                await client.get_task("echo", done.task.id, timeout=30)
            assert read.value.message == TASK_STORE_FAILED
            with pytest.raises(InternalError) as subscribed:
                async for _ in client.subscribe("echo", done.task.id, timeout=30):
                    pass
            assert subscribed.value.message == TASK_STORE_FAILED
            assert SECRET not in str(read.value) + str(subscribed.value)
        assert proc.popen.poll() is None
    finally:
        proxy.close()
