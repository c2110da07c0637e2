"""``slmesh db upgrade``: applies the order database's alembic migrations on PostgreSQL.

All pending revisions run in one transaction (PostgreSQL's DDL is transactional) under an
advisory lock, so two upgrades started at once (a Job retried, two deploys) run one after
the other and the second finds nothing left to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.pool import NullPool

from mesh.tools.postgres import VERSION_TABLE, create_engine

MIGRATIONS = Path(__file__).with_name("migrations")
_MIGRATE_LOCK = 0x534C4D03

_running = False

__all__ = ["MIGRATIONS", "VERSION_TABLE", "Upgrade", "current", "head", "running", "upgrade"]


def running() -> bool:
    """Whether alembic is running the migrations for :func:`upgrade` right now (env.py)."""
    return _running


@dataclass(frozen=True)
class Upgrade:
    """What ``slmesh db upgrade`` did: the revision before (None: an empty database) and after."""

    before: str | None
    after: str | None


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision of the migrations shipped with this code."""
    found = ScriptDirectory.from_config(_config()).get_current_head()
    assert found is not None, "mesh/tools/migrations has no revision"
    return found


def _current(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def _upgrade(connection: Connection, revision: str) -> None:
    global _running
    _running = True
    try:
        command.upgrade(_config(connection), revision)
    finally:
        _running = False


async def upgrade(url: str, revision: str = "head") -> Upgrade:
    """Migrates the database at ``url`` to ``revision`` (default: the newest)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("SELECT pg_advisory_xact_lock($1)", (_MIGRATE_LOCK,))
            before = await conn.run_sync(_current)
            await conn.run_sync(_upgrade, revision)
            after = await conn.run_sync(_current)
    finally:
        await engine.dispose()
    return Upgrade(before=before, after=after)


async def current(url: str) -> str | None:
    """The revision the database at ``url`` is at; None when it has no order schema."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_current)
    finally:
        await engine.dispose()
