"""What the order database's functions need of a connection, whichever database holds it.

``sqlite3.Connection`` satisfies :class:`Connection` as it is (the embedded default);
:class:`mesh.tools.postgres.PgConnection` satisfies :class:`ServerConnection`, so the same
SQL and the same tool handlers run on both.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol


class Cursor(Protocol):
    """What a query returns: rows read by index or column name (``row[0]``, ``row["id"]``)."""

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """The part of ``sqlite3.Connection`` the order database's functions use."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...


class ServerConnection(Connection, Protocol):
    """A connection to a database server that several replicas share (PostgreSQL).

    SQLite serializes writers with one file lock (``BEGIN IMMEDIATE``); a server does not,
    so a write transaction locks exactly what a call reads before deciding.
    """

    def transaction(
        self, *, idempotency_key: str | None, order_id: str | None
    ) -> AbstractContextManager[None]: ...
