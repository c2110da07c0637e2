"""Task events across replicas, pushed: PostgreSQL ``LISTEN/NOTIFY`` on a2a-sdk's event log.

With ``SLMESH_TASK_EVENTS=database`` a2a-sdk's versioned database store appends each task event
to ``task_events`` in the transaction that writes the task's new version. Its
``DatabaseTaskEventStream`` reads that log every 0.5 s, so a subscriber on a replica other than
the one running the task heard of each event up to half a second late.
:class:`NotifyTaskEventStream` reads the same log and waits between reads for a notification
instead of a timer:

- An ``AFTER INSERT`` trigger on ``task_events`` (installed once per database, under an
  advisory lock, like the push outbox's) calls ``pg_notify`` with the event's task id.
  PostgreSQL delivers it when the event's transaction commits, to every listening process.
- Each process holds one ``LISTEN`` connection of its own (not a pool's) and wakes the
  subscribers of that task, which read the log past the last ``seq`` they yielded.
- The log stays the truth. A subscriber starts by reading it, and every subscriber reads it
  again when the ``LISTEN`` connection is replaced, so an event committed while no
  notification could arrive is still delivered, once, in order. Until the connection is back
  subscribers read the log every ``poll_s`` (the SDK's pace); while it is up, every ``idle_s``,
  and the listener checks its connection as often, as a guard against one that died silently.

Per task, ``seq`` order is commit order: the store locks the task's version row before it
appends an event, so a later event of one task has a larger ``seq`` and commits after. Every
process hears every task's notifications (the log is shared by all agents): one small message
per event per listening process, filtered by task id here.

The log's schema is a2a-sdk's (``a2a.server.models.TaskEventModel``; the outbox's trigger
reads it too); ``tests/unit/a2a/test_events.py`` fails if the SDK changes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import asyncpg
from a2a.server.cluster import TaskEventStream, TaskVersion, VersionedEvent
from a2a.server.events import Event
from a2a.types.a2a_pb2 import StreamResponse
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.a2a.schema_lock import lock_id

log = logging.getLogger(__name__)

EVENTS = "task_events"
"""a2a-sdk's event log (the default table name of its versioned database store)."""
CHANNEL = "slmesh_task_events"
"""The notification channel; the payload is the task id."""
TRIGGER = "slmesh_task_events_notify"
APPLICATION_NAME = "slmesh-task-events"
"""The ``LISTEN`` connection's ``application_name`` prefix (the replica id follows)."""

_VERSIONS = f"SELECT seq, task_version FROM {EVENTS} WHERE task_id = :task ORDER BY seq"
_AFTER = (
    f"SELECT seq, task_version, event_data FROM {EVENTS} "
    "WHERE task_id = :task AND seq > :cursor ORDER BY seq"
)
_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
"""What a lost or refused ``LISTEN`` connection raises."""


def stream_event(data: bytes) -> Event:
    """The event of one log row: a serialized ``StreamResponse``, as the store wrote it."""
    response = StreamResponse.FromString(data)
    which = response.WhichOneof("payload")
    if which is None:
        raise ValueError("task event log row holds a StreamResponse with no payload")
    event: Event = getattr(response, which)
    return event


_INSTALL = (
    f"SELECT pg_advisory_xact_lock({lock_id(TRIGGER)})",
    f"CREATE OR REPLACE FUNCTION {TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS "
    f"$fn$ BEGIN PERFORM pg_notify('{CHANNEL}', NEW.task_id); RETURN NULL; END $fn$",
    # Created once: re-creating it would lock the event log at every start-up.
    f"DO $make$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = '{TRIGGER}' "
    f"AND tgrelid = '{EVENTS}'::regclass) THEN CREATE TRIGGER {TRIGGER} AFTER INSERT ON "
    f"{EVENTS} FOR EACH ROW EXECUTE FUNCTION {TRIGGER}(); END IF; END $make$",
)


class NotifyTaskEventStream(TaskEventStream):
    """a2a-sdk's ``TaskEventStream`` over its PostgreSQL event log, woken by ``NOTIFY``."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        replica_id: str = "",
        poll_s: float = 0.5,
        idle_s: float = 5.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self._engine = engine
        self._notify = engine.dialect.name == "postgresql"
        """Elsewhere (SQLite: one host, tests) there is nothing to listen to: reads every poll_s."""
        self._dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.application_name = f"{APPLICATION_NAME} {replica_id}".strip()[:63]
        self._poll_s = poll_s
        self._idle_s = idle_s
        self._connect_timeout_s = connect_timeout_s
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._listener: asyncpg.Connection | None = None
        self._follow: asyncio.Task[None] | None = None
        self._installed = False
        self._starting = asyncio.Lock()
        self.connections = 0
        """``LISTEN`` connections made so far (more than one: reconnects)."""

    @property
    def listening(self) -> bool:
        return self._listener is not None and not self._listener.is_closed()

    async def initialize(self) -> None:
        """Installs the trigger (the event log must exist: the store's ``initialize`` made it)
        and starts listening. Idempotent; replicas may run it at once."""
        if not self._notify:
            return
        async with self._starting:
            if not self._installed:
                async with self._engine.begin() as conn:
                    for statement in _INSTALL:
                        await conn.execute(text(statement))
                self._installed = True
            if self._follow is None:
                self._follow = asyncio.create_task(self._listen(), name="task-event-feed")

    async def aclose(self) -> None:
        """Stops listening; subscribers still open fall back to reading every ``poll_s``."""
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
            self._follow = None

    async def publish(self, task_id: str, event: VersionedEvent) -> None:
        """Nothing to do: the store commits the event to the log, the trigger announces it."""
        del task_id, event

    async def destroy(self, task_id: str) -> None:
        """Nothing to do: the log is kept; subscribers stop at the task's last event."""
        del task_id

    async def subscribe(
        self, task_id: str, *, after: TaskVersion
    ) -> AsyncGenerator[VersionedEvent, None]:
        """Yields the events of ``task_id`` newer than ``after``, in log order, until closed."""
        await self.initialize()
        wake = asyncio.Event()
        self._waiters.setdefault(task_id, set()).add(wake)
        try:
            cursor = await self._retrying(self._start, task_id, after)
            while True:
                # Cleared before the read: a commit the read misses notifies after this.
                wake.clear()
                rows = await self._retrying(self._read, task_id, cursor)
                for seq, version, data in rows:
                    cursor = seq
                    versioned = TaskVersion(version)
                    if versioned.is_after(after):
                        yield VersionedEvent(event=stream_event(data), version=versioned)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        wake.wait(), self._idle_s if self.listening else self._poll_s
                    )
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(wake)
                if not waiters:
                    del self._waiters[task_id]

    # -- the log ------------------------------------------------------------------------

    async def _start(self, task_id: str, after: TaskVersion) -> int:
        """The ``seq`` to read after: that of the last event at or before ``after``."""
        if after.is_missing:
            return 0
        async with self._engine.connect() as conn:
            rows = (await conn.execute(text(_VERSIONS), {"task": task_id})).all()
        cursor = 0
        for seq, version in rows:
            if TaskVersion(version).is_after(after):
                break
            cursor = seq
        return cursor

    async def _read(self, task_id: str, cursor: int) -> Sequence[Any]:
        async with self._engine.connect() as conn:
            return (await conn.execute(text(_AFTER), {"task": task_id, "cursor": cursor})).all()

    async def _retrying(self, read: Any, *args: Any) -> Any:
        """``read(*args)``, again every ``poll_s`` while the database is unreachable."""
        while True:
            try:
                return await read(*args)
            except (DBAPIError, *_ERRORS) as exc:
                log.warning("task event log unreadable (%s); retrying", exc)
                await asyncio.sleep(self._poll_s)

    # -- the LISTEN connection -----------------------------------------------------------

    def _notified(self, _conn: Any, _pid: int, _channel: str, task_id: str) -> None:
        for wake in self._waiters.get(task_id, ()):
            wake.set()

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for wake in waiters:
                wake.set()

    async def _listen(self) -> None:
        """Holds a ``LISTEN`` connection, replacing it whenever it is lost."""
        delay = 0.1
        while True:
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=self._connect_timeout_s,
                    server_settings={"application_name": self.application_name},
                )
            except Exception as exc:  # noqa: BLE001 - whatever it is, the feed must go on
                log.warning("task event feed cannot connect (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.1
            self.connections += 1
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
            try:
                await conn.add_listener(CHANNEL, self._notified)
                self._listener = conn
                # What committed while nothing could notify us is in the log: read it now.
                self._wake_all()
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), self._idle_s)
                    if not lost.is_set():  # a silently dead connection fails this
                        await conn.execute("SELECT 1", timeout=self._connect_timeout_s)
            except _ERRORS as exc:
                log.warning("task event feed lost its LISTEN connection (%s)", exc)
            except Exception:  # a bug must not leave subscribers on the slow path for good
                log.exception("task event feed failed; reconnecting")
                await asyncio.sleep(delay)
            finally:
                self._listener = None
                conn.terminate()
            log.warning("task event feed reconnecting; subscribers read the log meanwhile")
