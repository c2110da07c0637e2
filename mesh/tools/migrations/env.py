"""Alembic's environment: migrates the connection that :mod:`mesh.tools.migrate` hands over.

It runs only when that module invokes alembic (``slmesh db upgrade``), inside the caller's
transaction, which holds the migration advisory lock; imported any other way (a packaging
check imports every module) it does nothing.
"""

from __future__ import annotations

from alembic import context

from mesh.tools import migrate

if migrate.running():
    context.configure(
        connection=context.config.attributes["connection"],
        version_table=migrate.VERSION_TABLE,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()
