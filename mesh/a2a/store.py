"""The durable default task store: one SQLite file per agent, written in place, no ORM.

a2a-sdk's ``DatabaseTaskStore`` on ``sqlite+aiosqlite`` goes through SQLAlchemy's ORM
(``session.merge`` = a SELECT, then an INSERT or UPDATE), JSON-encodes the task field by
field, and hops to aiosqlite's worker thread for every statement: ~3.5 ms of CPU per save on
this project's benchmark machine. :class:`SqliteTaskStore` implements the same
:class:`~a2a.server.tasks.TaskStore` contract (owner scoping, ``ListTasks`` filters, order
and page tokens) with the standard ``sqlite3`` module: the task is stored as its protobuf
bytes next to the columns ``ListTasks`` filters and sorts on, and each call is one
statement on the event loop's thread (~40 us for a save, ~7 us for a read).

Durability: WAL journal with ``synchronous=NORMAL``, SQLite's recommended setting for
WAL. A committed task survives the process being killed at any point (the case that
matters for an agent replica); only an operating-system crash or power loss can lose the
last commits, in exchange for no fsync on the request path (an fsync per commit costs
~150 us of blocked event loop on the benchmark machine's disk). Replicas of one agent that
share a data directory share the file; WAL lets readers run alongside the one writer, and
a writer waits (``busy_timeout``) for the lock rather than failing.

With push notifications on, the same file holds the push configs
(:class:`SqlitePushConfigStore`) and the push outbox: :meth:`SqliteTaskStore.save_event` writes
a task and one outbox row per config of the task in one transaction (see
:mod:`mesh.a2a.outbox`). Everything here is sqlite3 on the event loop's thread: a second,
asynchronous connection to the file (aiosqlite) would hold the write lock across awaits while
this one waits for it on the loop, which is a deadlock until ``busy_timeout``.

Any SQLAlchemy URL in ``SLMESH_TASK_STORE`` still selects a2a-sdk's ``DatabaseTaskStore``.
"""

from __future__ import annotations

import builtins
import logging
import sqlite3
from pathlib import Path

from a2a.server.context import ServerCallContext
from a2a.server.owner_resolver import OwnerResolver, resolve_user_scope
from a2a.server.tasks import PushNotificationConfigStore, TaskStore
from a2a.server.tasks.push_notification_config_store import normalize_push_notification_config
from a2a.types.a2a_pb2 import (
    ListTasksRequest,
    ListTasksResponse,
    Task,
    TaskPushNotificationConfig,
)
from a2a.utils.constants import DEFAULT_LIST_TASKS_PAGE_SIZE
from a2a.utils.errors import InvalidParamsError
from a2a.utils.task import (
    ListTasksCursor,
    decode_list_tasks_cursor,
    decode_page_token,
    encode_list_tasks_cursor,
)

log = logging.getLogger(__name__)

TABLE = "a2a_tasks"
CONFIGS = "a2a_push_configs"
"""Push configs, keyed like a2a-sdk's database config store: (task, config id)."""
OUTBOX = "a2a_push_outbox"
"""Push notifications not yet delivered: one row per (event, config); see mesh.a2a.outbox."""
OUTBOX_COLUMNS = "event_key, task_id, config_id, event, attempts, next_at"
_COLUMNS = "id, owner, context_id, state, updated_ns, task"
_ORDER = "ORDER BY updated_ns IS NULL, updated_ns DESC, id DESC"
"""``ListTasks`` order: newest status timestamp first, tasks without one last, then id."""


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
"""SQLite's INTEGER range; a Timestamp (years 1-9999) in nanoseconds can exceed it."""


def _clamp_ns(ns: int) -> int:
    """Nanoseconds clamped to SQLite's INTEGER range (sqlite3 raises OverflowError beyond it).

    Exact for every time between 1677-09-21 and 2262-04-11; times outside sort and filter
    as those bounds.
    """
    return min(max(ns, _INT64_MIN), _INT64_MAX)


def _updated_ns(task: Task) -> int | None:
    status = task.status
    return _clamp_ns(status.timestamp.ToNanoseconds()) if status.HasField("timestamp") else None


class SqliteTaskStore(TaskStore):
    """A2A tasks in one SQLite file, as protobuf bytes plus the columns ``ListTasks`` needs."""

    def __init__(
        self,
        path: str | Path,
        owner_resolver: OwnerResolver = resolve_user_scope,
        busy_timeout_ms: int = 5000,
        push: bool = False,
    ) -> None:
        self.path = Path(path)
        self.owner_resolver = owner_resolver
        self._busy_timeout_ms = busy_timeout_ms
        self.push = push
        self._db: sqlite3.Connection | None = None

    async def initialize(self) -> None:
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} ("
                " id TEXT PRIMARY KEY, owner TEXT NOT NULL, context_id TEXT NOT NULL,"
                " state INTEGER NOT NULL, updated_ns INTEGER, task BLOB NOT NULL)"
            )
            db.execute(
                f"CREATE INDEX IF NOT EXISTS {TABLE}_by_time "
                f"ON {TABLE} (owner, updated_ns IS NULL, updated_ns DESC, id DESC)"
            )
            db.execute(
                f"CREATE INDEX IF NOT EXISTS {TABLE}_by_context ON {TABLE} (owner, context_id)"
            )
            if self.push:
                _create_push_tables(db)
            self._db = db
        return self._db

    def enable_push(self) -> None:
        """Adds the push config and outbox tables to the file (push notifications on)."""
        self.push = True
        if self._db is not None:
            _create_push_tables(self._db)

    @property
    def connection(self) -> sqlite3.Connection:
        """The store's one connection (the push config store and outbox share it)."""
        return self._connect()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def save(self, task: Task, context: ServerCallContext) -> None:
        """Inserts or replaces the task (by id) for the caller's owner scope."""
        self._upsert(self._connect(), task, context)

    async def save_event(
        self, task: Task, event_key: str, event: bytes, context: ServerCallContext
    ) -> None:
        """Saves the task and, in the same transaction, one outbox row per push config of the
        task: the notification of ``event`` (a serialized ``StreamResponse``) under
        ``event_key``. Either both are written or neither."""
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            self._upsert(db, task, context)
            db.execute(
                f"INSERT INTO {OUTBOX} ({OUTBOX_COLUMNS}) "
                f"SELECT ?, task_id, config_id, ?, 0, 0 FROM {CONFIGS} WHERE task_id = ?",
                (event_key, event, task.id),
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _upsert(self, db: sqlite3.Connection, task: Task, context: ServerCallContext) -> None:
        db.execute(
            f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE "
            "SET owner=excluded.owner, context_id=excluded.context_id, state=excluded.state, "
            "updated_ns=excluded.updated_ns, task=excluded.task",
            (
                task.id,
                self.owner_resolver(context),
                task.context_id,
                int(task.status.state),
                _updated_ns(task),
                task.SerializeToString(),
            ),
        )

    async def get(self, task_id: str, context: ServerCallContext) -> Task | None:
        row = (
            self._connect()
            .execute(
                f"SELECT task FROM {TABLE} WHERE id = ? AND owner = ?",
                (task_id, self.owner_resolver(context)),
            )
            .fetchone()
        )
        return Task.FromString(row[0]) if row else None

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        self._connect().execute(
            f"DELETE FROM {TABLE} WHERE id = ? AND owner = ?",
            (task_id, self.owner_resolver(context)),
        )

    async def list(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        """Same filters, order and page tokens as a2a-sdk's in-memory and database stores."""
        db = self._connect()
        owner = self.owner_resolver(context)
        where: builtins.list[str] = ["owner = ?"]
        args: builtins.list[object] = [owner]
        if params.context_id:
            where.append("context_id = ?")
            args.append(params.context_id)
        if params.status:
            where.append("state = ?")
            args.append(int(params.status))
        if params.HasField("status_timestamp_after"):
            where.append("updated_ns >= ?")
            args.append(_clamp_ns(params.status_timestamp_after.ToNanoseconds()))
        filtered = " AND ".join(where)
        total = db.execute(f"SELECT count(*) FROM {TABLE} WHERE {filtered}", args).fetchone()[0]
        page_where, page_args = [filtered], list(args)
        if params.page_token:
            cursor = decode_list_tasks_cursor(params.page_token)
            if cursor is None:
                clause, clause_args = self._legacy_start(db, owner, params.page_token)
            else:
                clause, clause_args = self._after(cursor)
            page_where.append(clause)
            page_args += clause_args
        page_size = params.page_size or DEFAULT_LIST_TASKS_PAGE_SIZE
        rows = db.execute(
            f"SELECT id, updated_ns, task FROM {TABLE} WHERE {' AND '.join(page_where)} {_ORDER} "
            "LIMIT ?",
            [*page_args, page_size + 1],
        ).fetchall()
        page = rows[:page_size]
        next_token = (
            encode_list_tasks_cursor(ListTasksCursor(timestamp_ns=page[-1][1], task_id=page[-1][0]))
            if len(rows) > page_size
            else None
        )
        return ListTasksResponse(
            tasks=[Task.FromString(r[2]) for r in page],
            total_size=total,
            next_page_token=next_token,
            page_size=page_size,
        )

    @staticmethod
    def _after(cursor: ListTasksCursor) -> tuple[str, builtins.list[object]]:
        """Rows strictly after ``cursor`` in the list order."""
        if cursor.timestamp_ns is None:
            return "(updated_ns IS NULL AND id < ?)", [cursor.task_id]
        ts = cursor.timestamp_ns
        if ts != _clamp_ns(
            ts
        ):  # never issued by this store: a forged token (as DatabaseTaskStore says)
            raise InvalidParamsError("Invalid page token")
        return (
            "(updated_ns < ? OR (updated_ns = ? AND id < ?) OR updated_ns IS NULL)",
            [ts, ts, cursor.task_id],
        )

    @staticmethod
    def _legacy_start(
        db: sqlite3.Connection, owner: str, page_token: str
    ) -> tuple[str, builtins.list[object]]:
        """A legacy page token names the first task of the page: rows from it on."""
        start_id = decode_page_token(page_token)
        row = db.execute(
            f"SELECT updated_ns FROM {TABLE} WHERE id = ? AND owner = ?", (start_id, owner)
        ).fetchone()
        if row is None:
            raise InvalidParamsError(f"Invalid page token: {page_token}")
        ts = row[0]
        if ts is None:
            return "(updated_ns IS NULL AND id <= ?)", [start_id]
        return (
            "((updated_ns = ? AND id <= ?) OR updated_ns < ? OR updated_ns IS NULL)",
            [ts, start_id, ts],
        )


def _create_push_tables(db: sqlite3.Connection) -> None:
    db.execute(
        f"CREATE TABLE IF NOT EXISTS {CONFIGS} ("
        " task_id TEXT NOT NULL, config_id TEXT NOT NULL, owner TEXT NOT NULL,"
        " config BLOB NOT NULL, PRIMARY KEY (task_id, config_id))"
    )
    db.execute(f"CREATE INDEX IF NOT EXISTS {CONFIGS}_by_owner ON {CONFIGS} (owner, task_id)")
    # INTEGER PRIMARY KEY is the rowid: a new row's id is above every row's still there, so
    # ids order each (task, config)'s notifications.
    db.execute(
        f"CREATE TABLE IF NOT EXISTS {OUTBOX} ("
        " id INTEGER PRIMARY KEY, event_key TEXT NOT NULL, task_id TEXT NOT NULL,"
        " config_id TEXT NOT NULL, event BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
        " next_at REAL NOT NULL DEFAULT 0, lease_owner TEXT, lease_until REAL)"
    )
    db.execute(f"CREATE INDEX IF NOT EXISTS {OUTBOX}_by_group ON {OUTBOX} (task_id, config_id, id)")


class SqlitePushConfigStore(PushNotificationConfigStore):
    """Push configs in the SQLite task store's file, on its connection, so that
    :meth:`SqliteTaskStore.save_event` can fan an event out to them in its transaction.

    Same contract as a2a-sdk's database config store: a config is keyed by (task, id), reads
    through the API are scoped to the caller, dispatch sees every owner's.
    """

    def __init__(
        self, tasks: SqliteTaskStore, owner_resolver: OwnerResolver = resolve_user_scope
    ) -> None:
        if not tasks.push:
            raise ValueError("the SQLite task store was opened without its push tables")
        self._tasks = tasks
        self.owner_resolver = owner_resolver

    async def set_info(
        self,
        task_id: str,
        notification_config: TaskPushNotificationConfig,
        context: ServerCallContext,
    ) -> TaskPushNotificationConfig:
        stored = normalize_push_notification_config(task_id, notification_config)
        self._tasks.connection.execute(
            f"INSERT INTO {CONFIGS} (task_id, config_id, owner, config) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(task_id, config_id) DO UPDATE SET owner=excluded.owner, "
            "config=excluded.config",
            (task_id, stored.id, self.owner_resolver(context), stored.SerializeToString()),
        )
        return stored

    async def get_info(
        self, task_id: str, context: ServerCallContext
    ) -> builtins.list[TaskPushNotificationConfig]:
        rows = self._tasks.connection.execute(
            f"SELECT config FROM {CONFIGS} WHERE task_id = ? AND owner = ? ORDER BY rowid",
            (task_id, self.owner_resolver(context)),
        ).fetchall()
        return [TaskPushNotificationConfig.FromString(r[0]) for r in rows]

    async def get_info_for_dispatch(
        self, task_id: str
    ) -> builtins.list[TaskPushNotificationConfig]:
        rows = self._tasks.connection.execute(
            f"SELECT config FROM {CONFIGS} WHERE task_id = ? ORDER BY rowid", (task_id,)
        ).fetchall()
        return [TaskPushNotificationConfig.FromString(r[0]) for r in rows]

    async def delete_info(
        self, task_id: str, context: ServerCallContext, config_id: str | None = None
    ) -> None:
        where, args = "task_id = ? AND owner = ?", [task_id, self.owner_resolver(context)]
        if config_id is not None:
            where += " AND config_id = ?"
            args.append(config_id)
        deleted = self._tasks.connection.execute(f"DELETE FROM {CONFIGS} WHERE {where}", args)
        if deleted.rowcount == 0:
            log.info("no push config %s of task %s to delete", config_id or "(any)", task_id)
