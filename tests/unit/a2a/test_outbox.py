"""The push outbox on SQLite files (no sockets): rows written with the task or not at all, one
per config, claimed in order per (task, config) under a lease that another owner takes over
once it ends; the same through a2a-sdk's versioned store and the trigger on its event log."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from a2a.server.cluster import VersionedDatabaseTaskStore
from a2a.server.cluster.version import TaskVersion
from a2a.server.context import ServerCallContext
from a2a.server.tasks import DatabasePushNotificationConfigStore
from a2a.types.a2a_pb2 import (
    StreamResponse,
    Task,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from sqlalchemy.ext.asyncio import create_async_engine

from mesh.a2a.outbox import OutboxTaskStore, SqliteOutbox, SqlOutbox, config_table
from mesh.a2a.store import SqlitePushConfigStore, SqliteTaskStore

CTX = ServerCallContext()


def _task(task_id: str, state: int = TaskState.TASK_STATE_WORKING) -> Task:
    return Task(id=task_id, context_id="c", status=TaskStatus(state=state))


def _update(task_id: str, state: int) -> TaskStatusUpdateEvent:
    return TaskStatusUpdateEvent(task_id=task_id, context_id="c", status=TaskStatus(state=state))


def _config(config_id: str) -> TaskPushNotificationConfig:
    return TaskPushNotificationConfig(id=config_id, url=f"https://example.com/{config_id}")


@pytest.fixture
def store(tmp_path: Path) -> SqliteTaskStore:
    tasks = SqliteTaskStore(tmp_path / "tasks.sqlite")
    tasks.enable_push()
    return tasks


async def test_an_event_is_saved_with_one_row_per_config_or_not_at_all(
    store: SqliteTaskStore,
) -> None:
    configs = SqlitePushConfigStore(store)
    handler_store = OutboxTaskStore(store)
    outbox = SqliteOutbox(store)
    await configs.set_info("t1", _config("a"), CTX)
    await configs.set_info("t1", _config("b"), CTX)
    assert [c.id for c in await configs.get_info("t1", CTX)] == ["a", "b"]
    assert [c.task_id for c in await configs.get_info_for_dispatch("t1")] == ["t1", "t1"]

    for state in (TaskState.TASK_STATE_WORKING, TaskState.TASK_STATE_COMPLETED):
        await handler_store.save(
            _task("t1", state),
            event=_update("t1", state),
            prev=None,
            prev_version=TaskVersion.MISSING,
            context=CTX,
        )
    # A direct write (no event) and a task without configs leave no rows.
    await handler_store.save(
        _task("t1"), event=None, prev=None, prev_version=TaskVersion.MISSING, context=CTX
    )
    await handler_store.save(
        _task("t2"),
        event=_update("t2", TaskState.TASK_STATE_WORKING),
        prev=None,
        prev_version=TaskVersion.MISSING,
        context=CTX,
    )
    assert await outbox.pending() == 4
    rows = await outbox.claim("r1", 30, 10)
    # Only each (task, config)'s oldest row is claimable: one per config.
    assert sorted(r.config_id for r in rows) == ["a", "b"]
    assert rows[0].event_key == rows[1].event_key  # one idempotency id per event
    first = StreamResponse.FromString(rows[0].event)
    assert first.status_update.status.state == TaskState.TASK_STATE_WORKING

    # The outbox insert failing takes the task write with it.
    store.connection.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON a2a_push_outbox "
        "BEGIN SELECT RAISE(ABORT, 'no'); END"
    )
    with pytest.raises(sqlite3.IntegrityError):
        await store.save_event(_task("t1", TaskState.TASK_STATE_FAILED), "k", b"x", CTX)
    stored = await store.get("t1", CTX)
    assert stored is not None
    assert stored.status.state == TaskState.TASK_STATE_WORKING

    await configs.delete_info("t1", CTX, "a")
    assert [c.id for c in await configs.get_info("t1", CTX)] == ["b"]


async def test_claims_keep_order_and_a_dead_owners_lease_passes_on(store: SqliteTaskStore) -> None:
    configs, outbox = SqlitePushConfigStore(store), SqliteOutbox(store)
    await configs.set_info("t", _config("a"), CTX)
    for i in range(3):
        await store.save_event(_task("t"), f"t.{i}", b"e", CTX)

    [head] = await outbox.claim("dead", 0.2, 10)
    assert head.event_key == "t.0"
    assert await outbox.claim("alive", 30, 10) == []  # leased, and the rest wait behind it
    await asyncio.sleep(0.3)  # the holder died: its lease ends
    [taken] = await outbox.claim("alive", 30, 10)
    assert (taken.event_key, taken.attempts) == ("t.0", 0)
    await outbox.done(head, "dead")  # the late holder cannot settle what it lost
    assert await outbox.pending() == 3

    await outbox.retry(taken, "alive", 0.2)  # failed once: due again later
    assert await outbox.claim("alive", 30, 10) == []
    await asyncio.sleep(0.3)
    [again] = await outbox.claim("alive", 30, 10)
    assert (again.event_key, again.attempts) == ("t.0", 1)
    await outbox.done(again, "alive")
    [following] = await outbox.claim("alive", 30, 10)
    assert following.event_key == "t.1"
    await outbox.release("alive")  # a clean stop hands it back at once
    assert [r.event_key for r in await outbox.claim("other", 30, 10)] == ["t.1"]


async def test_the_trigger_writes_rows_in_the_event_logs_transaction(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'events.sqlite'}")
    try:
        tasks = VersionedDatabaseTaskStore(engine, table_name="tasks_echo")
        configs = DatabasePushNotificationConfigStore(engine, table_name=config_table("echo"))
        await tasks.initialize()
        await configs.initialize()
        outbox = SqlOutbox(engine, "echo")
        await outbox.install()
        await outbox.install()  # idempotent: every replica runs it at start
        await configs.set_info("t", _config("a"), CTX)
        await tasks.save(
            _task("t"),
            event=_update("t", TaskState.TASK_STATE_WORKING),
            prev=None,
            prev_version=TaskVersion.MISSING,
            context=CTX,
        )
        await tasks.save(
            _task("u"),
            event=_update("u", TaskState.TASK_STATE_WORKING),
            prev=None,
            prev_version=TaskVersion.MISSING,
            context=CTX,
        )
        assert await outbox.pending() == 1  # task u has no config
        [row] = await outbox.claim("r", 30, 10)
        assert row.event_key == "t.1"
        assert row.config_id == "a"
        assert StreamResponse.FromString(row.event).status_update.task_id == "t"
        await outbox.done(row, "r")
        # A save that loses its compare-and-swap writes no event and so no row.
        with pytest.raises(Exception, match="modified concurrently"):
            await tasks.save(
                _task("t"),
                event=_update("t", TaskState.TASK_STATE_COMPLETED),
                prev=None,
                prev_version=TaskVersion(99),  # stale: the stored version is 1
                context=CTX,
            )
        assert await outbox.pending() == 0
    finally:
        await engine.dispose()
