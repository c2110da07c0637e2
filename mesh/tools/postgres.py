"""The order database on PostgreSQL: one database that every tools replica shares.

The tool handlers and the SQL of :mod:`mesh.tools.orders` are the SQLite ones: they are
synchronous, so each call runs inside SQLAlchemy's ``AsyncConnection.run_sync`` (asyncpg
underneath, the driver the task store already uses) through :class:`PgConnection`, which
speaks the part of ``sqlite3.Connection`` they use. What SQLite's single write lock gave
for free is taken explicitly here: a side-effecting call's transaction first takes an
advisory lock on its idempotency key (two replicas never run the same key at once) and
then ``SELECT ... FOR UPDATE`` on its order row (two refunds of one order are decided one
after the other, each seeing what the other committed). The key lock always comes before
the row lock, and a transaction takes one of each, so these locks cannot deadlock.

The schema is not created here: ``slmesh db upgrade`` applies the migrations
(:mod:`mesh.tools.migrate`), and a replica refuses to start on a database whose schema is
older than :data:`REVISION` (or was contracted past what this code reads).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection as SyncConnection
from sqlalchemy import CursorResult
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import Pool

from mesh.errors import MeshError
from mesh.migrations import Schema, SchemaError, async_url
from mesh.tools import orders
from mesh.tools.catalog import Execution, Policy, ToolCall, execute_on

log = logging.getLogger(__name__)

REVISION = "0001"
"""The migration this code reads and writes (the head of ``mesh/tools/migrations``).

Revision ids are zero-padded numbers, so code can tell an older schema from a newer one
that it has never seen (a rolling upgrade runs old replicas on a newer, expanded schema).
"""

VERSION_TABLE = "orders_alembic_version"
"""Where alembic records the applied revision (named for the order database, so other
alembic-managed tables can share the PostgreSQL database)."""

COMPATIBLE_FROM_KEY = "compatible_from"
"""``meta`` key: the oldest code revision that can still run on this schema (a contract
migration raises it)."""

APPLICATION_NAME = "slmesh-tools"
"""``application_name`` of every connection a tools replica opens (pg_stat_activity)."""

ORDERS = Schema(
    name="order",
    image="tools",
    directory=Path(__file__).with_name("migrations"),
    version_table=VERSION_TABLE,
    lock=0x534C4D03,
    revision=REVISION,
)
"""The order tables as ``slmesh db upgrade`` migrates them (:mod:`mesh.tools.migrate`)."""

LOCK_TIMEOUT = "15s"
"""How long a replica's call waits for another transaction's lock on its key or order (or
for the seeding lock) before it fails retryable: a transaction stuck on a half-dead
connection then blocks callers for this long, not until TCP notices."""

_KEY_LOCKS = 0x534C4D01
"""Advisory-lock class of idempotency keys (the second key is ``hashtext(key)``)."""
_SEED_LOCK = 0x534C4D02
"""Advisory-lock class of demo seeding."""


class OrderDatabaseError(MeshError):
    """The order database could not run a call (connection lost, server gone, pool
    exhausted); nothing of the call was committed and a retry with its key is safe."""


def describe(url: str) -> str:
    """``url`` without its password, for logs and error messages."""
    return make_url(url).render_as_string(hide_password=True)


def create_engine(
    url: str,
    *,
    pool_size: int = 5,
    poolclass: type[Pool] | None = None,
    lock_timeout: str = LOCK_TIMEOUT,
) -> AsyncEngine:
    """An engine of at most ``pool_size`` connections (no overflow: the bound is exact, so
    replicas x pool_size can be sized against the server's max_connections); ``poolclass``
    NullPool for a one-off command."""
    server_settings = {"application_name": APPLICATION_NAME}
    pooling: dict[str, Any] = {"poolclass": poolclass}
    if poolclass is None:  # a replica's pool; a one-off command (a migration) waits its turn
        pooling = {"pool_size": pool_size, "max_overflow": 0, "pool_pre_ping": True}
        server_settings["lock_timeout"] = lock_timeout
    return create_async_engine(
        async_url(url), connect_args={"server_settings": server_settings}, **pooling
    )


@lru_cache(maxsize=256)
def _numbered(sql: str) -> str:
    """``?`` placeholders as asyncpg's ``$1, $2, ...`` (the module's SQL has no ``?`` in
    string literals)."""
    parts = sql.split("?")
    return "".join(f"{part}${n}" for n, part in enumerate(parts[:-1], start=1)) + parts[-1]


class _Row(tuple[Any, ...]):
    """A result row read by index or by column name, as ``sqlite3.Row``."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> _Row:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


class _Cursor:
    def __init__(self, result: CursorResult[Any] | None) -> None:
        self._result = result if result is not None and result.returns_rows else None
        self._index = (
            {name: n for n, name in enumerate(self._result.keys())} if self._result else {}
        )

    def fetchone(self) -> Any:
        row = self._result.fetchone() if self._result else None
        return None if row is None else _Row(tuple(row), self._index)

    def fetchall(self) -> list[Any]:
        rows = self._result.fetchall() if self._result else []
        return [_Row(tuple(row), self._index) for row in rows]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class PgConnection:
    """A SQLAlchemy connection (inside ``run_sync``) as :mod:`mesh.tools.orders` uses one."""

    def __init__(self, conn: SyncConnection) -> None:
        self.conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> _Cursor:
        return _Cursor(self.conn.exec_driver_sql(_numbered(sql), tuple(parameters)))

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> _Cursor:
        rows = [tuple(row) for row in parameters]
        if not rows:
            return _Cursor(None)  # as sqlite3: no rows, nothing executed
        return _Cursor(self.conn.exec_driver_sql(_numbered(sql), rows))

    @contextmanager
    def transaction(
        self, *, idempotency_key: str | None = None, order_id: str | None = None
    ) -> Iterator[None]:
        """A transaction holding the key's advisory lock, then the order's row lock."""
        with self.conn.begin():
            if idempotency_key is not None:
                self.execute(
                    "SELECT pg_advisory_xact_lock(?, hashtext(?))", (_KEY_LOCKS, idempotency_key)
                )
            if order_id is not None:
                self.execute("SELECT 1 FROM orders WHERE order_id = ? FOR UPDATE", (order_id,))
            yield


def seed_demo(
    conn: PgConnection, *, seed: int = 7, customers: int = 200, order_count: int = 600
) -> bool:
    """Fills an empty order database with the demo shop; returns whether this call did.

    Under a transaction-scoped advisory lock, so of many replicas starting at once exactly
    one fills it and the others, waiting, then find it filled. A database that already
    holds orders (seeded before, or real ones) is left as it is; only its ``faq`` table is
    refreshed when the packaged FAQ entries changed.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(?, 0)", (_SEED_LOCK,))
        seeded = orders.meta(conn, "seed") is not None
        has_orders = conn.execute("SELECT EXISTS (SELECT 1 FROM orders)").fetchone()[0]
        filled = not seeded and not has_orders
        if filled:
            orders.fill_demo(conn, seed=seed, customers=customers, orders=order_count)
        else:
            orders.refresh_faq(conn)
    return bool(filled)


async def schema_problem(conn: AsyncConnection) -> str | None:
    """Why this code must not run on the database, or None when it may."""

    def read(sync: SyncConnection) -> tuple[str | None, str | None]:
        pg = PgConnection(sync)
        if pg.execute("SELECT to_regclass(?)", (VERSION_TABLE,)).fetchone()[0] is None:
            return None, None
        row = pg.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()
        return (row[0] if row else None), orders.meta(pg, COMPATIBLE_FROM_KEY)

    revision, compatible_from = await conn.run_sync(read)
    await conn.rollback()
    return ORDERS.problem(revision, compatible_from)


class PostgresOrders:
    """The order database of a tools replica on PostgreSQL: a bounded pool and the calls."""

    def __init__(self, url: str, *, pool_size: int = 5, lock_timeout: str = LOCK_TIMEOUT) -> None:
        self.url = async_url(url)
        self.engine = create_engine(self.url, pool_size=pool_size, lock_timeout=lock_timeout)

    def __str__(self) -> str:
        return describe(self.url)

    async def prepare(self) -> bool:
        """Checks the schema (:class:`SchemaError` names the fix) and seeds the demo data
        once per database; returns whether this replica seeded it."""
        try:
            async with self.engine.connect() as conn:
                problem = await schema_problem(conn)
                if problem is not None:
                    raise SchemaError(f"the order database {self} cannot be used: {problem}")
                return await conn.run_sync(lambda sync: seed_demo(PgConnection(sync)))
        except (DBAPIError, PoolTimeoutError, OSError) as exc:
            raise OrderDatabaseError(f"the order database {self} is unreachable: {exc}") from exc

    async def run(self, call: ToolCall, *, policy: Policy) -> Execution:
        """Runs one call in one transaction; :class:`OrderDatabaseError` when the database
        failed under it (rolled back: nothing applied)."""
        try:
            async with self.engine.connect() as conn:
                return await conn.run_sync(
                    lambda sync: execute_on(PgConnection(sync), call, policy=policy)
                )
        except (DBAPIError, PoolTimeoutError, OSError) as exc:
            log.warning("order database call %s failed: %s", call.name, exc)
            raise OrderDatabaseError(
                f"the order database failed during {call.name}; the transaction was rolled "
                "back or, if it committed, its retry with the same idempotency_key replays it"
            ) from exc

    async def aclose(self) -> None:
        await self.engine.dispose()
