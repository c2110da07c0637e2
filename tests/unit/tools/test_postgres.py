"""The PostgreSQL order database's pure parts: URLs, placeholders, revisions, settings.

What needs a server (migrations, locks, seeding, replicas) is in
tests/integration/tools/test_orders_postgres.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mesh.config import ServiceSpec, Settings
from mesh.tools import migrate
from mesh.tools.database import PostgresOrders, SqliteOrders, open_order_database
from mesh.tools.postgres import REVISION, _numbered, async_url, describe

SPEC = ServiceSpec(name="tools", executor="mesh.tools.executor:ToolsExecutor")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@db:5432/orders",
        "postgres://u:p@db:5432/orders",
        "postgresql+asyncpg://u:p@db:5432/orders",
        "postgresql+psycopg://u:p@db:5432/orders",
    ],
)
def test_every_postgresql_url_is_driven_by_asyncpg(url: str) -> None:
    assert async_url(url) == "postgresql+asyncpg://u:p@db:5432/orders"


def test_a_url_of_another_database_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"must be postgresql://\.\.\., got mysql://"):
        async_url("mysql://u@db/orders")
    with pytest.raises(ValueError, match="not a database URL"):
        async_url("not a url")


def test_described_urls_hide_the_password() -> None:
    assert describe("postgresql://u:secret@db/orders") == "postgresql://u:***@db/orders"


def test_question_marks_become_numbered_placeholders() -> None:
    assert _numbered("SELECT a FROM t WHERE b = ? AND c IN (?, ?)") == (
        "SELECT a FROM t WHERE b = $1 AND c IN ($2, $3)"
    )
    assert _numbered("SELECT 1") == "SELECT 1"


def test_the_code_reads_the_newest_shipped_migration() -> None:
    # A new revision bumps REVISION with it, or replicas would start on a schema they
    # do not read (or refuse one they do).
    assert migrate.head() == REVISION
    assert REVISION.isdigit()
    assert len(REVISION) == 4


def test_the_order_database_setting_takes_only_postgresql_urls() -> None:
    url = "postgresql://u:p@db/orders"
    settings = Settings(orders_database=url)
    assert settings.orders_database is not None
    assert settings.orders_database.get_secret_value() == url
    assert url not in repr(settings)
    assert Settings(orders_database="").orders_database is None
    with pytest.raises(ValidationError, match="must be a PostgreSQL URL"):
        Settings(orders_database="sqlite:///orders.db")


def test_the_replica_opens_postgresql_when_configured_else_its_sqlite_file(
    tmp_path: Path,
) -> None:
    sqlite = open_order_database(SPEC, Settings(data_dir=tmp_path))
    assert isinstance(sqlite, SqliteOrders)
    assert sqlite.path == tmp_path / "orders.sqlite"
    postgres = open_order_database(
        SPEC, Settings(orders_database="postgresql://u:p@db/orders", orders_pool_size=3)
    )
    assert isinstance(postgres, PostgresOrders)
    assert postgres.engine.pool.size() == 3  # type: ignore[attr-defined]  # a QueuePool
    assert str(postgres) == "postgresql+asyncpg://u:***@db/orders"
