"""The registry's replicas in PostgreSQL, so several registry processes serve one truth.

Tables (created at start under an advisory lock, like the task store's lease table):

- ``slmesh_registry_replicas``: one row per registered replica (the ``Replica`` message, its
  agent, skills and last heartbeat). It is the source of truth: List reads it, with the
  TTL applied by the database's clock, so an expired replica is never listed even before a
  sweep removes it.
- ``slmesh_registry_changes``: the change log, one row per watch event, numbered by
  revision. Every transaction that changes replicas takes the next revisions from the one
  row of ``slmesh_registry_revision`` (a row lock held to commit), so revisions commit in
  order with no gaps, and a reader that has seen revision N has seen everything up to N.
- After commit the writer's ``NOTIFY slmesh_registry`` wakes every registry process (one
  ``LISTEN`` connection each), which reads the log past what it has dispatched and hands
  the changes to its watchers: the feed is pushed, the log is what makes it lossless.

A watcher resumes after any revision the log still holds; the log keeps the last
``change_log_size`` changes (and no change older than ``change_log_s``). When the listening
connection is lost, the process ends every watch with UNAVAILABLE (its watchers resume on a
replica that can still see the database) and the store's calls fail
:class:`~mesh.registry.store.StoreUnavailable` until it is back.

A connection that is cut silently (a network partition: nothing is closed, nothing answers)
is noticed by a *lease*: the listening connection reads the log every third of ``lease_s``,
and each answer renews the lease from the moment the read was sent. Past ``lease_s``
without one, the store is :attr:`~PostgresRegistryStore.available` no more: watches end,
calls fail at once, and the registry reports NOT_SERVING, so a registry that cannot see the
shared state stops serving its old picture of it while the others serve the truth. A read
that took longer than the lease to come back is not served either (it may predate changes
made since). The listening connection is then replaced; once it answers, the store serves
again.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from mesh.proto.slmesh.registry.v1 import registry_pb2 as pb
from mesh.registry.store import (
    EventType,
    RegistryStore,
    RevisionUnavailable,
    StoreUnavailable,
    Subscription,
    WatchClosed,
)

log = logging.getLogger(__name__)

REPLICAS = "slmesh_registry_replicas"
CHANGES = "slmesh_registry_changes"
REVISION = "slmesh_registry_revision"
CHANNEL = "slmesh_registry"
APPLICATION_NAME = "slmesh-registry"
_SCHEMA_LOCK = 0x534C4D20

_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {REPLICAS} (replica_id TEXT PRIMARY KEY, agent TEXT NOT NULL, "
    "skills TEXT[] NOT NULL, replica BYTEA NOT NULL, last_heartbeat TIMESTAMPTZ NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS {REPLICAS}_heartbeat ON {REPLICAS} (last_heartbeat)",
    f"CREATE TABLE IF NOT EXISTS {CHANGES} (revision BIGINT PRIMARY KEY, type SMALLINT NOT NULL, "
    "replica BYTEA NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT now())",
    # One row: the last revision given out, and the revision after which the log is whole.
    # Revisions start at the creation time in microseconds: a revision from a registry
    # that kept its state elsewhere is below this log and a watcher resuming with it resyncs.
    f"CREATE TABLE IF NOT EXISTS {REVISION} (only_row BOOLEAN PRIMARY KEY DEFAULT true "
    "CHECK (only_row), revision BIGINT NOT NULL, floor BIGINT NOT NULL)",
    f"INSERT INTO {REVISION} (revision, floor) SELECT r, r FROM (SELECT (extract(epoch FROM "
    "clock_timestamp()) * 1000000)::bigint AS r) AS start ON CONFLICT DO NOTHING",
)
_LIVE = "last_heartbeat >= now() - make_interval(secs => $1)"
_LIST = (
    f"SELECT replica, last_heartbeat FROM {REPLICAS} WHERE {_LIVE} AND ($2 = '' OR agent = $2) "
    "AND ($3 = '' OR $3 = ANY(skills)) ORDER BY agent, replica_id"
)
_COUNTS = f"SELECT agent, count(*) AS n FROM {REPLICAS} WHERE {_LIVE} GROUP BY agent"
_CURRENT = f"SELECT revision, floor FROM {REVISION}"
_TAKE_REVISIONS = f"UPDATE {REVISION} SET revision = revision + $1 RETURNING revision"
_LOG = f"INSERT INTO {CHANGES} (revision, type, replica) VALUES ($1, $2, $3)"
_CHANGES_AFTER = (
    f"SELECT revision, type, replica FROM {CHANGES} WHERE revision > $1 AND revision <= $2 "
    "ORDER BY revision"
)
_LOCK_ONE = (
    f"SELECT agent, replica, last_heartbeat, {_LIVE} AS live, now() AS now FROM {REPLICAS} "
    "WHERE replica_id = $2 FOR UPDATE"
)
_UPSERT = (
    f"INSERT INTO {REPLICAS} (replica_id, agent, skills, replica, last_heartbeat) "
    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (replica_id) DO UPDATE SET agent = EXCLUDED.agent, "
    "skills = EXCLUDED.skills, replica = EXCLUDED.replica, last_heartbeat = EXCLUDED.last_heartbeat"
)
_TOUCH = f"UPDATE {REPLICAS} SET last_heartbeat = $2 WHERE replica_id = $1"
_DELETE_ONE = (
    f"DELETE FROM {REPLICAS} WHERE replica_id = $2 "
    f"RETURNING replica, last_heartbeat, {_LIVE} AS live"
)
_DELETE_EXPIRED = (
    f"DELETE FROM {REPLICAS} WHERE NOT ({_LIVE}) RETURNING replica, last_heartbeat, agent, "
    "replica_id"
)
_PRUNE = (
    f"WITH gone AS (DELETE FROM {CHANGES} WHERE revision <= (SELECT revision FROM {REVISION}) - $1 "
    "OR at < now() - make_interval(secs => $2) RETURNING revision) "
    f"UPDATE {REVISION} SET floor = greatest(floor, (SELECT max(revision) FROM gone)) "
    "WHERE EXISTS (SELECT 1 FROM gone)"
)

T = TypeVar("T")

_DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


class PostgresRegistryStore(RegistryStore):
    """Replicas and their change log in PostgreSQL, shared by every registry replica."""

    def __init__(
        self,
        url: str,
        ttl_s: float,
        *,
        pool_size: int = 5,
        watch_queue_size: int = 1024,
        change_log_size: int = 100_000,
        change_log_s: float = 600.0,
        connect_timeout_s: float = 5.0,
        lease_s: float = 3.0,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        if lease_s <= 0:
            raise ValueError(f"lease_s must be positive, got {lease_s}")
        self.url = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self._ttl_s = ttl_s
        self._pool_size = pool_size
        self._watch_queue_size = watch_queue_size
        self._change_log_size = change_log_size
        self._change_log_s = change_log_s
        self._connect_timeout_s = connect_timeout_s
        self._lease_s = lease_s
        self._contact = -float("inf")
        """``time.monotonic()`` when the last read the database answered was sent."""
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._watches: set[Subscription] = set()
        self._dispatched = 0
        """Highest revision handed to the watchers of this process."""
        self._wake = asyncio.Event()
        self._feed: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._sweeps = 0

    def __str__(self) -> str:
        return _without_password(self.url)

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    @property
    def watcher_count(self) -> int:
        return len(self._watches)

    @property
    def lease_s(self) -> float:
        return self._lease_s

    @property
    def available(self) -> bool:
        """Whether the database answered within the lease (and the change feed is whole)."""
        return (
            self._pool is not None
            and not self._lost.is_set()
            and time.monotonic() - self._contact < self._lease_s
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Opens the pool, creates the tables once, and starts following the change feed."""
        # A transaction cut off before its COMMIT holds the revision row's lock, which every
        # registry's writes wait for: the server ends such a session instead of keeping it
        # until TCP notices (hours). The registry's transactions never idle for this long.
        idle = max(1, round(self._lease_s * 1000))
        settings = {
            "application_name": APPLICATION_NAME,
            "idle_in_transaction_session_timeout": str(idle),
        }
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._connect_timeout_s,
                command_timeout=self._connect_timeout_s,
                server_settings=settings,
            )
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                for statement in _SCHEMA:
                    await conn.execute(statement)
            await self._listen()
        except _DATABASE_ERRORS as exc:
            await self.aclose()
            raise StoreUnavailable(f"registry database {self} is unreachable: {exc}") from exc
        self._feed = asyncio.create_task(self._follow(), name="registry-change-feed")

    async def aclose(self) -> None:
        if self._feed is not None:
            self._feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feed
            self._feed = None
        self._end_watches("registry store closed; reconnect to resync")
        if self._listener is not None:
            with contextlib.suppress(*_DATABASE_ERRORS):
                await self._listener.close(timeout=1)
            self._listener = None
        if self._pool is not None:
            with contextlib.suppress(*_DATABASE_ERRORS):
                await asyncio.wait_for(self._pool.close(), 2)
            self._pool = None

    async def _listen(self) -> None:
        """A connection of its own that LISTENs; dispatch starts after what is committed now."""
        self._listener = await asyncpg.connect(
            self.url,
            timeout=self._connect_timeout_s,
            server_settings={"application_name": APPLICATION_NAME},
        )
        self._listener.add_termination_listener(lambda _conn: self._lost.set())
        await self._listener.add_listener(CHANNEL, lambda *_args: self._wake.set())
        asked = time.monotonic()
        self._dispatched = (await self._listener.fetchrow(_CURRENT))["revision"]
        self._contact = asked
        self._lost.clear()

    async def _follow(self) -> None:
        """Dispatches the log to watchers whenever a NOTIFY wakes it, and at least every third
        of the lease (a read that renews the lease and catches a NOTIFY that never came)."""
        while True:
            wake = asyncio.create_task(self._wake.wait())
            lost = asyncio.create_task(self._lost.wait())
            await asyncio.wait(
                (wake, lost), timeout=self._lease_s / 3, return_when=asyncio.FIRST_COMPLETED
            )
            wake.cancel()
            lost.cancel()
            if self._lost.is_set():
                await self._reconnect()
                continue
            self._wake.clear()
            asked = time.monotonic()
            try:
                # No later than the lease's end: a watch must not outlive it.
                await asyncio.wait_for(self._dispatch(), self._contact + self._lease_s - asked)
            except _DATABASE_ERRORS as exc:
                log.warning("registry change feed: %s", exc or "no answer within the lease")
                self._lost.set()
            else:
                self._contact = max(self._contact, asked)

    async def _reconnect(self) -> None:
        self._end_watches("registry lost its database; reconnect to resume")
        if self._listener is not None:
            with contextlib.suppress(*_DATABASE_ERRORS):
                self._listener.terminate()
            self._listener = None
        delay = 0.1
        while True:
            try:
                await self._listen()
                log.info("registry change feed reconnected at revision %d", self._dispatched)
                return
            except _DATABASE_ERRORS as exc:
                log.warning("registry change feed: cannot reconnect (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _dispatch(self) -> None:
        assert self._listener is not None
        rows = await self._listener.fetch(_CHANGES_AFTER, self._dispatched, 2**62)
        for row in rows:
            event = _event(row)
            self._dispatched = event.revision
            for watch in list(self._watches):
                if watch.matches(event.replica):
                    watch.offer(event)

    def _end_watches(self, reason: str) -> None:
        for watch in list(self._watches):
            watch.close(WatchClosed(reason))

    # -- calls -------------------------------------------------------------------------

    async def _run(
        self, work: Callable[[asyncpg.Connection], Awaitable[T]], *, read: bool = False
    ) -> T:
        """``work`` in one transaction; database failures become :class:`StoreUnavailable`,
        and so does a ``read`` whose answer took longer than the lease to arrive."""
        if self._pool is None or not self.available:
            raise StoreUnavailable(
                f"registry database {self} is unreachable (no answer within the "
                f"{self._lease_s:g} s lease)"
            )
        asked = time.monotonic()
        try:
            async with (
                self._pool.acquire(timeout=self._connect_timeout_s) as conn,
                conn.transaction(),
            ):
                result = await work(conn)
        except _DATABASE_ERRORS as exc:
            raise StoreUnavailable(f"registry database {self} failed: {exc}") from exc
        if read and time.monotonic() - asked >= self._lease_s:
            raise StoreUnavailable(
                f"registry database {self} answered a read after more than the "
                f"{self._lease_s:g} s lease; not serving what may be out of date"
            )
        return result

    async def _log(self, conn: asyncpg.Connection, events: list[pb.WatchEvent]) -> None:
        """Numbers ``events`` with the next revisions (row lock until commit) and notifies."""
        if not events:
            return
        last = await conn.fetchval(_TAKE_REVISIONS, len(events))
        first = last - len(events) + 1
        for offset, event in enumerate(events):
            event.revision = first + offset
        await conn.executemany(
            _LOG, [(e.revision, e.type, e.replica.SerializeToString()) for e in events]
        )
        await conn.execute(f"NOTIFY {CHANNEL}")

    async def register(self, replica: pb.Replica) -> pb.Replica:
        if not replica.replica_id:
            raise ValueError("replica_id is required")

        async def work(conn: asyncpg.Connection) -> pb.Replica:
            old = await conn.fetchrow(_LOCK_ONE, self._ttl_s, replica.replica_id)
            now = old["now"] if old else await conn.fetchval("SELECT now()")
            stored = pb.Replica()
            stored.CopyFrom(replica)
            stored.registered_at.FromDatetime(now)
            stored.last_heartbeat.FromDatetime(now)
            await conn.execute(
                _UPSERT,
                stored.replica_id,
                stored.agent,
                list(stored.skills),
                stored.SerializeToString(),
                now,
            )
            events = []
            if old is None:
                events.append(pb.WatchEvent(type=EventType.ADDED, replica=stored))
            else:
                previous = _replica(old["replica"], old["last_heartbeat"])
                if not old["live"] or previous.agent != stored.agent:
                    events.append(pb.WatchEvent(type=EventType.REMOVED, replica=previous))
                    events.append(pb.WatchEvent(type=EventType.ADDED, replica=stored))
                else:
                    events.append(pb.WatchEvent(type=EventType.UPDATED, replica=stored))
            await self._log(conn, events)
            return stored

        return await self._run(work)

    async def heartbeat(self, replica_id: str, load: pb.Load | None, draining: bool) -> bool:
        async def work(conn: asyncpg.Connection) -> bool:
            row = await conn.fetchrow(_LOCK_ONE, self._ttl_s, replica_id)
            if row is None or not row["live"]:
                return False
            current = _replica(row["replica"], row["last_heartbeat"])
            updated = pb.Replica()
            updated.CopyFrom(current)
            updated.last_heartbeat.FromDatetime(row["now"])
            if load is not None:
                updated.load.CopyFrom(load)
            updated.draining = draining
            if updated.load == current.load and updated.draining == current.draining:
                await conn.execute(_TOUCH, replica_id, row["now"])
                return True
            await conn.execute(
                _UPSERT,
                replica_id,
                updated.agent,
                list(updated.skills),
                updated.SerializeToString(),
                row["now"],
            )
            await self._log(conn, [pb.WatchEvent(type=EventType.UPDATED, replica=updated)])
            return True

        return await self._run(work)

    async def deregister(self, replica_id: str) -> bool:
        async def work(conn: asyncpg.Connection) -> bool:
            row = await conn.fetchrow(_DELETE_ONE, self._ttl_s, replica_id)
            if row is None:
                return False
            removed = _replica(row["replica"], row["last_heartbeat"])
            await self._log(conn, [pb.WatchEvent(type=EventType.REMOVED, replica=removed)])
            return bool(row["live"])

        return await self._run(work)

    async def list(self, agent: str = "", skill: str = "") -> builtins.list[pb.Replica]:
        async def work(conn: asyncpg.Connection) -> builtins.list[pb.Replica]:
            rows = await conn.fetch(_LIST, self._ttl_s, agent, skill)
            return [_replica(row["replica"], row["last_heartbeat"]) for row in rows]

        return await self._run(work, read=True)

    async def counts(self) -> dict[str, int]:
        async def work(conn: asyncpg.Connection) -> dict[str, int]:
            return {row["agent"]: row["n"] for row in await conn.fetch(_COUNTS, self._ttl_s)}

        return await self._run(work)

    async def expire(self) -> builtins.list[pb.Replica]:
        """Removes expired replicas (each by exactly one registry replica: the DELETE's row
        locks decide) and, now and then, prunes the change log."""

        async def work(conn: asyncpg.Connection) -> builtins.list[pb.Replica]:
            rows = await conn.fetch(_DELETE_EXPIRED, self._ttl_s)
            rows = sorted(rows, key=lambda r: (r["agent"], r["replica_id"]))
            removed = [_replica(row["replica"], row["last_heartbeat"]) for row in rows]
            await self._log(
                conn, [pb.WatchEvent(type=EventType.REMOVED, replica=r) for r in removed]
            )
            return removed

        try:
            removed = await self._run(work)
        except StoreUnavailable:
            # Cut off (or the database is gone): end the watches now and reconnect the
            # feed, rather than serve watchers a stream that may have stopped.
            self._lost.set()
            raise
        self._sweeps += 1
        if self._sweeps % 30 == 1:

            async def prune(conn: asyncpg.Connection) -> None:
                await conn.execute(_PRUNE, self._change_log_size, self._change_log_s)

            await self._run(prune)
        return removed

    async def watch(self, agent: str = "", since_revision: int = 0) -> Subscription:
        """The snapshot (or the log after ``since_revision``) as of one transaction, then the
        changes this process dispatches after it; nothing missed or repeated in between."""

        async def read(
            conn: asyncpg.Connection,
        ) -> tuple[int, builtins.list[pb.Replica], builtins.list[pb.WatchEvent]]:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            current = await conn.fetchrow(_CURRENT)
            revision, floor = current["revision"], current["floor"]
            if since_revision:
                if not floor <= since_revision <= revision:
                    raise RevisionUnavailable(
                        f"cannot resume after revision {since_revision}: the registry holds "
                        f"changes after {floor} up to {revision}; watch again without a revision"
                    )
                changes = await conn.fetch(_CHANGES_AFTER, since_revision, revision)
                return revision, [], [_event(row) for row in changes]
            rows = await conn.fetch(_LIST, self._ttl_s, agent, "")
            return revision, [_replica(r["replica"], r["last_heartbeat"]) for r in rows], []

        revision, snapshot, backlog = await self._run(read, read=True)
        # From here on this process's dispatches reach the watch; what it dispatched already
        # past the snapshot's revision is read back from the log.
        dispatched = self._dispatched
        watch = Subscription(
            agent, self._watch_queue_size, self._watches.discard, after=max(revision, dispatched)
        )
        self._watches.add(watch)
        if dispatched > revision:

            async def catch_up(conn: asyncpg.Connection) -> builtins.list[pb.WatchEvent]:
                return [_event(r) for r in await conn.fetch(_CHANGES_AFTER, revision, dispatched)]

            try:
                backlog += await self._run(catch_up, read=True)
            except StoreUnavailable:
                watch.close()
                raise
        watch.prime(snapshot, backlog, max(revision, dispatched))
        return watch


def _replica(raw: bytes, last_heartbeat: datetime) -> pb.Replica:
    replica = pb.Replica.FromString(raw)
    replica.last_heartbeat.FromDatetime(last_heartbeat)
    return replica


def _event(row: Any) -> pb.WatchEvent:
    return pb.WatchEvent(
        type=row["type"], replica=pb.Replica.FromString(row["replica"]), revision=row["revision"]
    )


def _without_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
