"""Versioned schemas on a shared PostgreSQL database: alembic, run by ``slmesh db upgrade``.

Each replicated piece that keeps tables in PostgreSQL (the tools agent's order database,
the planner's runs) ships its migrations as a :class:`Schema`: an alembic directory, its own
version table (so several schemas share one database), and the revision its code reads.
All pending revisions of a schema run in one transaction (PostgreSQL's DDL is
transactional) under the schema's advisory lock, so two upgrades started at once (a Job
retried, two deploys) run one after the other and the second finds nothing left to do.

Revision ids are zero-padded numbers, so code can tell an older schema from a newer one it
has never seen: a rolling upgrade runs old replicas on a newer, expanded schema, and a
replica on an older one refuses to start, naming ``slmesh db upgrade``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from mesh.errors import MeshError

UPGRADE_COMMAND = "slmesh db upgrade"


class SchemaError(MeshError):
    """A database's schema is not the one this replica reads; the replica must not start."""


_running: Schema | None = None


@dataclass(frozen=True)
class Upgrade:
    """What an upgrade did: the revision before (None: an empty schema) and after."""

    before: str | None
    after: str | None


@dataclass(frozen=True)
class Schema:
    """One alembic-managed schema: where its migrations are and what its code reads."""

    name: str
    """What the tables are, for messages ("order", "planner run")."""
    image: str
    """The image whose code reads them ("tools", "planner"), for messages."""
    directory: Path
    version_table: str
    lock: int
    """Advisory-lock key its upgrades take."""
    revision: str
    """The revision this code reads and writes (the newest shipped: a test checks)."""

    def _config(self, connection: Connection | None = None) -> Config:
        config = Config()
        config.set_main_option("script_location", str(self.directory))
        config.attributes["connection"] = connection
        return config

    def head(self) -> str:
        """The newest revision of the migrations shipped with this code."""
        found = ScriptDirectory.from_config(self._config()).get_current_head()
        assert found is not None, f"{self.directory} has no revision"
        return found

    def current_on(self, connection: Connection) -> str | None:
        """The revision ``connection``'s database is at; None when it has none of this schema."""
        context = MigrationContext.configure(connection, opts={"version_table": self.version_table})
        return context.get_current_revision()

    def _upgrade(self, connection: Connection, revision: str) -> None:
        global _running
        _running = self
        try:
            command.upgrade(self._config(connection), revision)
        finally:
            _running = None

    async def upgrade(self, url: str, revision: str = "head") -> Upgrade:
        """Migrates the database at ``url`` to ``revision`` (default: the newest)."""
        engine = create_async_engine(async_url(url), poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                await conn.exec_driver_sql("SELECT pg_advisory_xact_lock($1)", (self.lock,))
                before = await conn.run_sync(self.current_on)
                await conn.run_sync(self._upgrade, revision)
                after = await conn.run_sync(self.current_on)
        finally:
            await engine.dispose()
        return Upgrade(before=before, after=after)

    async def current(self, url: str) -> str | None:
        """The revision the database at ``url`` is at; None when it has none of this schema."""
        engine = create_async_engine(async_url(url), poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(self.current_on)
        finally:
            await engine.dispose()

    def behind(self, found: str | None) -> bool:
        """Whether a database at revision ``found`` needs ``slmesh db upgrade`` for this code."""
        return found is None or (found.isdigit() and int(found) < int(self.revision))

    def problem(self, found: str | None, compatible_from: str | None = None) -> str | None:
        """Why this code must not run on a database at revision ``found`` (whose contract
        migrations say ``compatible_from``), or None when it may."""
        if found is None:
            return f"it has no {self.name} schema yet: run `{UPGRADE_COMMAND}` first"
        if not found.isdigit():
            return f"its {self.name} schema is at revision {found!r}, which this code does not know"
        if int(found) < int(self.revision):
            return (
                f"its {self.name} schema is at revision {found} and this replica needs "
                f"{self.revision}: run `{UPGRADE_COMMAND}` first"
            )
        if compatible_from is not None and int(compatible_from) > int(self.revision):
            return (
                f"its {self.name} schema (revision {found}) no longer keeps what revision "
                f"{self.revision} reads: run the newer {self.image} image"
            )
        return None

    async def check(self, conn: AsyncConnection) -> str | None:
        """:meth:`problem` of the database ``conn`` is on (its transaction is rolled back)."""
        found = await conn.run_sync(self.current_on)
        await conn.rollback()
        return self.problem(found)


def async_url(url: str) -> str:
    """``url`` with the asyncpg driver: ``postgresql://`` and ``postgres://`` become
    ``postgresql+asyncpg://``; anything but PostgreSQL is refused."""
    try:
        parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {exc}") from exc
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"the database URL must be postgresql://..., got {parsed.drivername}://")
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def run_env(context: Any) -> None:
    """The body of each migration directory's ``env.py``: migrates the connection
    :meth:`Schema.upgrade` hands over, inside its transaction (which holds the lock).
    Imported any other way (a packaging check imports every module) it does nothing."""
    schema = _running
    if schema is None:
        return
    context.configure(
        connection=context.config.attributes["connection"],
        version_table=schema.version_table,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()
