"""Where a tools replica keeps its orders: a SQLite file (the embedded default) or PostgreSQL.

Both run the same tool handlers (:func:`mesh.tools.catalog.execute_on`); they differ in how a
call reaches the database and in who creates the schema: the SQLite file is created and
migrated by the replica itself, a PostgreSQL schema by ``slmesh db upgrade``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Protocol

from mesh.config import ServiceSpec, Settings
from mesh.tools.catalog import Execution, Policy, ToolCall, execute_call
from mesh.tools.orders import create_demo_database
from mesh.tools.postgres import PostgresOrders

DEFAULT_DATABASE = "orders.sqlite"


class OrderDatabase(Protocol):
    """The order database of one tools replica."""

    async def prepare(self) -> bool:
        """Makes the database ready for calls (seeding the demo shop into an empty one);
        returns whether this replica seeded it."""
        ...

    async def run(self, call: ToolCall, *, policy: Policy) -> Execution:
        """Runs one parsed call, side effects in one transaction."""
        ...

    async def aclose(self) -> None:
        """Releases connections."""
        ...


class SqliteOrders:
    """A SQLite file, reached from worker threads (``sqlite3`` blocks)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __str__(self) -> str:
        return str(self.path)

    async def prepare(self) -> bool:
        return await asyncio.to_thread(create_demo_database, self.path)

    async def run(self, call: ToolCall, *, policy: Policy) -> Execution:
        return await asyncio.to_thread(execute_call, self.path, call, policy=policy)

    async def aclose(self) -> None:
        return None


def database_path(spec: ServiceSpec, settings: Settings) -> Path:
    """``options.database`` of the spec; a relative path lives under ``settings.data_dir``."""
    option = spec.options.get("database", DEFAULT_DATABASE)
    if not isinstance(option, str) or not option.strip():
        raise ValueError(
            f"service {spec.name!r}: options.database must be a file path, got {option!r}"
        )
    path = Path(option)
    return path if path.is_absolute() else settings.data_dir / path


def open_order_database(spec: ServiceSpec, settings: Settings) -> OrderDatabase:
    """PostgreSQL when ``settings.orders_database`` is set, else the spec's SQLite file."""
    if settings.orders_database is not None:
        return PostgresOrders(
            settings.orders_database.get_secret_value(), pool_size=settings.orders_pool_size
        )
    return SqliteOrders(database_path(spec, settings))
