"""The push outbox: notifications written in the task event's transaction, delivered by any
replica, at least once.

An outbox row is one task event for one push config of the task: the event's
``StreamResponse`` bytes, its idempotency id (``event_key``: the same for every config and
every try), the tries so far, when the next is due, and a lease (``lease_owner``,
``lease_until``) while a replica delivers it. Where the rows are written:

- **SQLAlchemy stores with the event log** (``SLMESH_TASK_EVENTS=database``: a2a-sdk's
  ``VersionedDatabaseTaskStore``, PostgreSQL for replicas): the SDK appends each task event to
  ``task_events`` in the transaction that writes the task's new version, through no code of
  ours, so :meth:`SqlOutbox.install` puts an ``AFTER INSERT`` trigger on that table that
  inserts one row per config of the task (``event_key`` = task id + the event's ``seq``). The
  database makes it part of the same transaction: an event is committed with its outbox rows
  or not at all.
- **The default SQLite store**: :class:`OutboxTaskStore` receives each event (a2a-sdk hands
  ``VersionedTaskStore.save`` the event that produced the new state) and
  :meth:`~mesh.a2a.store.SqliteTaskStore.save_event` writes task and rows in one transaction.

Delivery (:class:`~mesh.a2a.push.PushSender`) claims rows with a lease: on PostgreSQL
``SELECT ... FOR UPDATE SKIP LOCKED`` picks rows no other replica is claiming; on SQLite the
one writer does. Only the oldest row of each (task, config) is claimable, so a config sees its
task's events in order. A row leaves the outbox when it is delivered, refused for good or out
of tries; a failed try puts it back with a later ``next_at``; a replica killed mid-delivery
leaves its leased rows to whichever replica claims after the lease ends. Times are the
database's clock, so replicas on different hosts agree on when a lease ends.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from a2a.server.cluster.task_store import LegacyTaskStoreAdapter
from a2a.server.cluster.version import TaskVersion
from a2a.server.context import ServerCallContext
from a2a.server.events import Event
from a2a.types.a2a_pb2 import Task
from a2a.utils.proto_utils import to_stream_response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.a2a.schema_lock import lock_id
from mesh.a2a.store import OUTBOX, OUTBOX_COLUMNS, SqliteTaskStore


@dataclass(frozen=True)
class OutboxRow:
    """One notification to deliver: ``event`` is a serialized ``StreamResponse``."""

    id: int
    event_key: str
    task_id: str
    config_id: str
    event: bytes
    attempts: int


_SQLITE_NOW = "((julianday('now') - 2440587.5) * 86400.0)"
_POSTGRES_NOW = "CAST(extract(epoch FROM clock_timestamp()) AS double precision)"

_CLAIM = (
    "UPDATE {t} SET lease_owner = :me, lease_until = {now} + :lease "
    "WHERE id IN (SELECT h.id FROM {t} h WHERE h.next_at <= {now} "
    "AND (h.lease_until IS NULL OR h.lease_until < {now}) "
    "AND NOT EXISTS (SELECT 1 FROM {t} p WHERE p.task_id = h.task_id "
    "AND p.config_id = h.config_id AND p.id < h.id) "
    "ORDER BY h.id LIMIT :n{lock}) "
    "RETURNING id, event_key, task_id, config_id, event, attempts"
)
"""Leases the due heads of their (task, config) that no live lease holds."""
_DONE = "DELETE FROM {t} WHERE id = :id AND lease_owner = :me"
_RETRY = (
    "UPDATE {t} SET attempts = :attempts, next_at = {now} + :delay, lease_owner = NULL, "
    "lease_until = NULL WHERE id = :id AND lease_owner = :me"
)
_RELEASE = "UPDATE {t} SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = :me"
_PENDING = "SELECT count(*) FROM {t}"


class Outbox(ABC):
    """Claims and settles outbox rows; one per agent replica."""

    @abstractmethod
    async def install(self) -> None:
        """Creates what the outbox needs (idempotent; replicas may run it at once)."""

    @abstractmethod
    async def _run(self, sql: str, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """Runs one statement in its own transaction; returns its rows."""

    @property
    @abstractmethod
    def _sql(self) -> Mapping[str, str]:
        """The statements above, for this table and dialect."""

    async def claim(self, owner: str, lease_s: float, limit: int) -> list[OutboxRow]:
        """Leases up to ``limit`` due rows to ``owner`` for ``lease_s`` seconds."""
        rows = await self._run(self._sql["claim"], {"me": owner, "lease": lease_s, "n": limit})
        return sorted((OutboxRow(*row) for row in rows), key=lambda r: r.id)

    async def done(self, row: OutboxRow, owner: str) -> None:
        """Removes a row ``owner`` still holds: delivered, refused for good or out of tries."""
        await self._run(self._sql["done"], {"id": row.id, "me": owner})

    async def retry(self, row: OutboxRow, owner: str, delay_s: float) -> None:
        """Counts a failed try and releases the row, due again after ``delay_s``."""
        await self._run(
            self._sql["retry"],
            {"id": row.id, "me": owner, "attempts": row.attempts + 1, "delay": delay_s},
        )

    async def release(self, owner: str) -> None:
        """Gives up ``owner``'s leases at once (a replica stopping cleanly)."""
        await self._run(self._sql["release"], {"me": owner})

    async def pending(self) -> int:
        """Rows not yet delivered."""
        return int((await self._run(self._sql["pending"], {}))[0][0])


def _statements(table: str, now: str, lock: str) -> dict[str, str]:
    return {
        "claim": _CLAIM.format(t=table, now=now, lock=lock),
        "done": _DONE.format(t=table),
        "retry": _RETRY.format(t=table, now=now),
        "release": _RELEASE.format(t=table),
        "pending": _PENDING.format(t=table),
    }


class SqliteOutbox(Outbox):
    """The outbox of the default SQLite store, on its connection (see :mod:`mesh.a2a.store`
    for why not a second one); rows come from :meth:`SqliteTaskStore.save_event`."""

    def __init__(self, store: SqliteTaskStore) -> None:
        if not store.push:
            raise ValueError("the SQLite task store was opened without its push tables")
        self._store = store
        self._statements = _statements(OUTBOX, _SQLITE_NOW, "")

    @property
    def _sql(self) -> Mapping[str, str]:
        return self._statements

    async def install(self) -> None:
        self._store.connection  # noqa: B018 - opening it creates the tables

    async def _run(self, sql: str, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        return self._store.connection.execute(sql, dict(params)).fetchall()


def outbox_table(agent: str) -> str:
    """The agent's outbox table in a database its replicas (and other agents) share."""
    return f"push_outbox_{agent.replace('-', '_')}"


def config_table(agent: str) -> str:
    """The agent's push config table (a2a-sdk's ``DatabasePushNotificationConfigStore``)."""
    return f"push_configs_{agent.replace('-', '_')}"


class SqlOutbox(Outbox):
    """The outbox in an SQLAlchemy database (PostgreSQL, or SQLite through aiosqlite), filled by
    a trigger on a2a-sdk's event log."""

    def __init__(self, engine: AsyncEngine, agent: str, events_table: str = "task_events") -> None:
        self.engine = engine
        self.table = outbox_table(agent)
        self._configs = config_table(agent)
        self._events = events_table
        self._postgres = engine.dialect.name == "postgresql"
        self._statements = _statements(
            self.table,
            _POSTGRES_NOW if self._postgres else _SQLITE_NOW,
            " FOR UPDATE SKIP LOCKED" if self._postgres else "",
        )

    @property
    def _sql(self) -> Mapping[str, str]:
        return self._statements

    async def _run(self, sql: str, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        async with self.engine.begin() as conn:
            result = await conn.execute(text(sql), dict(params))
            return result.fetchall() if result.returns_rows else []

    async def install(self) -> None:
        """Creates the table, its index and the trigger on the event log. The event log and the
        config table must exist (the stores' ``initialize`` made them)."""
        t, fill = self.table, f"{self.table}_fill"
        select = (
            f"INSERT INTO {t} ({OUTBOX_COLUMNS}) SELECT NEW.task_id || '.' || "
            "CAST(NEW.seq AS TEXT), NEW.task_id, c.config_id, NEW.event_data, 0, 0 "
            f"FROM {self._configs} c WHERE c.task_id = NEW.task_id;"
        )
        if self._postgres:
            statements = [
                # Replicas starting together would race on the catalog: one at a time.
                f"SELECT pg_advisory_xact_lock({lock_id(t)})",
                f"CREATE TABLE IF NOT EXISTS {t} (id BIGSERIAL PRIMARY KEY,"
                " event_key TEXT NOT NULL, task_id VARCHAR(36) NOT NULL,"
                " config_id VARCHAR(255) NOT NULL, event BYTEA NOT NULL,"
                " attempts INTEGER NOT NULL DEFAULT 0, next_at DOUBLE PRECISION NOT NULL DEFAULT 0,"
                " lease_owner TEXT, lease_until DOUBLE PRECISION)",
                f"CREATE INDEX IF NOT EXISTS {t}_by_group ON {t} (task_id, config_id, id)",
                f"CREATE OR REPLACE FUNCTION {fill}() RETURNS trigger LANGUAGE plpgsql AS "
                f"$fill$ BEGIN {select} RETURN NULL; END $fill$",
                # Created once: re-creating it would lock the event log at every start-up.
                f"DO $make$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = "
                f"'{fill}' AND tgrelid = '{self._events}'::regclass) THEN "
                f"CREATE TRIGGER {fill} AFTER INSERT ON {self._events} "
                f"FOR EACH ROW EXECUTE FUNCTION {fill}(); END IF; END $make$",
            ]
        else:
            statements = [
                f"CREATE TABLE IF NOT EXISTS {t} (id INTEGER PRIMARY KEY,"
                " event_key TEXT NOT NULL, task_id TEXT NOT NULL, config_id TEXT NOT NULL,"
                " event BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
                " next_at REAL NOT NULL DEFAULT 0, lease_owner TEXT, lease_until REAL)",
                f"CREATE INDEX IF NOT EXISTS {t}_by_group ON {t} (task_id, config_id, id)",
                f"CREATE TRIGGER IF NOT EXISTS {fill} AFTER INSERT ON {self._events} "
                f"FOR EACH ROW BEGIN {select} END",
            ]
        async with self.engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))


class OutboxTaskStore(LegacyTaskStoreAdapter):
    """The SQLite task store as a2a-sdk's handler sees it with push on: like the SDK's own
    adapter for plain stores (no versions), except that the event behind each save reaches
    :meth:`SqliteTaskStore.save_event`, which writes its outbox rows in the same
    transaction."""

    def __init__(self, store: SqliteTaskStore) -> None:
        super().__init__(store)
        self._sqlite = store

    async def save(
        self,
        task: Task,
        *,
        event: Event | None,
        prev: Task | None,
        prev_version: TaskVersion,
        context: ServerCallContext,
    ) -> TaskVersion:
        if event is None:  # a direct write (a new task, a message added): not a notification
            await self._sqlite.save(task, context)
        else:
            payload = to_stream_response(event).SerializeToString()
            await self._sqlite.save_event(task, f"{task.id}.{uuid.uuid4().hex}", payload, context)
        return TaskVersion.MISSING
