"""One replica at a time creates a shared database's tables.

PostgreSQL's ``CREATE TABLE IF NOT EXISTS`` (and SQLAlchemy's ``create_all``, which checks
first, then creates) is not safe when two sessions create the same table at once: the second
fails on the catalog's unique index (``pg_type_typname_nsp_index``). Replicas started together
on a fresh database do exactly that, so every start-up that creates tables in a shared
database does it under an advisory lock named for what it creates.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool


def lock_id(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@asynccontextmanager
async def schema_lock(engine: AsyncEngine, name: str) -> AsyncIterator[None]:
    """Holds the session advisory lock ``name`` on PostgreSQL while the body runs (a no-op on
    other databases, whose DDL does not race this way).

    The lock lives on a connection of its own, outside ``engine``'s pool, so code in the body
    that creates tables through ``engine`` (a2a-sdk's stores, in their own transactions) can
    never wait for a pool slot the lock holds.
    """
    if engine.dialect.name != "postgresql":
        yield
        return
    locker = create_async_engine(engine.url, poolclass=NullPool)
    try:
        async with locker.connect() as conn:
            key = {"key": lock_id(name)}
            await conn.execute(text("SELECT pg_advisory_lock(:key)"), key)
            try:
                yield
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:key)"), key)
    finally:
        await locker.dispose()
