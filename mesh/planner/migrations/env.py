"""Alembic's environment: migrates the connection that :mod:`mesh.migrations` hands over
(``slmesh db upgrade``), inside its transaction; imported any other way it does nothing."""

from __future__ import annotations

from alembic import context

from mesh.migrations import run_env

run_env(context)
