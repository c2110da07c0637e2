"""``slmesh db upgrade`` for the order database: its alembic migrations (``migrations/``),
the :class:`~mesh.migrations.Schema` :data:`~mesh.tools.postgres.ORDERS`."""

from __future__ import annotations

from mesh.migrations import Upgrade
from mesh.tools.postgres import ORDERS, VERSION_TABLE

MIGRATIONS = ORDERS.directory

__all__ = ["MIGRATIONS", "ORDERS", "VERSION_TABLE", "Upgrade", "current", "head", "upgrade"]


def head() -> str:
    """The newest revision of the migrations shipped with this code."""
    return ORDERS.head()


async def upgrade(url: str, revision: str = "head") -> Upgrade:
    """Migrates the order database at ``url`` to ``revision`` (default: the newest)."""
    return await ORDERS.upgrade(url, revision)


async def current(url: str) -> str | None:
    """The revision the database at ``url`` is at; None when it has no order schema."""
    return await ORDERS.current(url)
