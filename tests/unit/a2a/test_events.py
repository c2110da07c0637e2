"""The task event feed's reading of a2a-sdk's event log (no sockets: the log on an SQLite file,
where the stream reads every poll_s instead of listening). The first tests pin what the feed
takes from the SDK: if a2a-sdk renames the log, its columns or its event encoding, they fail
here, by name, rather than subscribers going quiet in production."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from a2a.server.cluster import TaskVersion, VersionedDatabaseTaskStore
from a2a.server.context import ServerCallContext
from a2a.server.models import TaskEventModel
from a2a.types.a2a_pb2 import (
    Artifact,
    Message,
    Part,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from a2a.utils.proto_utils import to_stream_response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from mesh.a2a.events import _AFTER, EVENTS, NotifyTaskEventStream, stream_event

CTX = ServerCallContext()


def test_the_sdk_event_log_has_the_table_and_columns_the_feed_reads() -> None:
    table = TaskEventModel.__table__
    assert table.name == EVENTS, "a2a-sdk renamed its event log: update mesh.a2a.events"
    assert {"seq", "task_id", "task_version", "event_data"} <= set(table.columns.keys()), (
        "a2a-sdk changed its event log's columns: update mesh.a2a.events and the outbox trigger"
    )
    assert [c.name for c in table.primary_key.columns] == ["seq"]


@pytest.mark.parametrize(
    "event",
    [
        Task(id="t", context_id="c", status=TaskStatus(state=TaskState.TASK_STATE_WORKING)),
        Message(message_id="m", parts=[Part(text="hi")]),
        TaskStatusUpdateEvent(
            task_id="t", context_id="c", status=TaskStatus(state=TaskState.TASK_STATE_COMPLETED)
        ),
        TaskArtifactUpdateEvent(
            task_id="t", context_id="c", artifact=Artifact(artifact_id="a", parts=[Part(text="x")])
        ),
    ],
)
def test_each_kind_of_event_reads_back_as_written(event: object) -> None:
    data = to_stream_response(event).SerializeToString()  # type: ignore[arg-type]
    assert stream_event(data) == event


def test_a_row_with_no_event_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="no payload"):
        stream_event(b"")


def _update(i: int) -> TaskStatusUpdateEvent:
    return TaskStatusUpdateEvent(
        task_id="t1",
        context_id="c",
        status=TaskStatus(
            state=TaskState.TASK_STATE_WORKING, message=Message(message_id=str(i), parts=[])
        ),
    )


async def test_a_subscriber_gets_the_events_after_its_version_in_order(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'tasks.sqlite'}")
    store = VersionedDatabaseTaskStore(engine, table_name="tasks_feed")
    await store.initialize()
    task = Task(id="t1", context_id="c", status=TaskStatus(state=TaskState.TASK_STATE_WORKING))
    version = await store.save(
        task, event=None, prev=None, prev_version=TaskVersion.MISSING, context=CTX
    )
    for i in range(3):  # before the subscriber's snapshot: not for it
        version = await store.save(
            task, event=_update(i), prev=None, prev_version=version, context=CTX
        )
    snapshot = version

    # The store writes each event with the version it produced, where the feed reads it.
    async with engine.connect() as conn:
        rows = (await conn.execute(text(_AFTER), {"task": "t1", "cursor": 0})).all()
    assert [stream_event(r[2]) for r in rows] == [_update(i) for i in range(3)]
    assert TaskVersion(rows[-1][1]) == snapshot

    stream = NotifyTaskEventStream(engine, poll_s=0.01)
    got: list[str] = []

    async def follow() -> None:
        async for versioned in stream.subscribe("t1", after=snapshot):
            assert versioned.version.is_after(snapshot)
            got.append(versioned.event.status.message.message_id)  # type: ignore[union-attr]
            if len(got) == 5:
                return

    follower = asyncio.create_task(follow())
    for i in range(3, 8):
        version = await store.save(
            task, event=_update(i), prev=None, prev_version=version, context=CTX
        )
        await asyncio.sleep(0)
    await asyncio.wait_for(follower, 10)
    assert got == ["3", "4", "5", "6", "7"]
    await engine.dispose()
