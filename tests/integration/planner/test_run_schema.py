"""The planner's shared run tables under alembic, on a PostgreSQL database of the test's own:
`slmesh db upgrade` creates them (or adopts the ones an earlier planner created itself), and a
planner whose run store is on an older schema, or none, refuses to start naming the command."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from mesh.migrations import SchemaError
from mesh.planner.store import REVISION, RUNS_SCHEMA, RUNS_TABLE, PostgresPlanStore
from tests.support.postgres import scratch_database
from tests.support.procs import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture
def database() -> Iterator[str]:
    with scratch_database("runschema") as url:
        yield url


def slmesh_db(command: str, url: str) -> subprocess.CompletedProcess[str]:
    """``slmesh db COMMAND`` with the planner's settings (shared tasks on ``url``), no --url."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SLMESH_TASK_STORE": url.replace("postgresql://", "postgresql+asyncpg://", 1),
        "SLMESH_TASK_EVENTS": "database",
    }
    env.pop("SLMESH_ORDERS_DATABASE", None)
    return subprocess.run(
        [sys.executable, "-m", "mesh", "db", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _opened(url: str) -> str | None:
    """None when a planner's run store opens on ``url``, else its refusal."""
    store = PostgresPlanStore(
        create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1)), "planner"
    )
    try:
        await store.open()
    except SchemaError as exc:
        return str(exc)
    finally:
        await store.aclose()
    return None


async def test_a_planner_runs_only_on_the_run_schema_it_reads(database: str) -> None:
    refusal = await _opened(database)
    assert refusal is not None
    assert "no planner run schema yet: run `slmesh db upgrade` first" in refusal
    current = slmesh_db("current", database)
    assert current.returncode == 1
    assert "planner run schema" in current.stdout

    done = slmesh_db("upgrade", database)
    assert done.returncode == 0, done.stderr
    assert f"migrated from an empty schema to revision {REVISION}" in done.stdout
    assert await _opened(database) is None
    assert slmesh_db("current", database).returncode == 0
    again = slmesh_db("upgrade", database)
    assert f"already at revision {REVISION}" in again.stdout

    # An older revision (a rolling upgrade whose migration Job has not run yet).
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("UPDATE planner_alembic_version SET version_num = '0000'")
        refusal = await _opened(database)
        assert refusal is not None
        assert f"at revision 0000 and this replica needs {REVISION}" in refusal
        assert "run `slmesh db upgrade`" in refusal
        # A newer, expanded schema: this planner keeps running during the roll.
        await conn.execute("UPDATE planner_alembic_version SET version_num = '0002'")
        assert await _opened(database) is None
    finally:
        await conn.close()


async def test_the_first_migration_adopts_run_tables_an_earlier_planner_created(
    database: str,
) -> None:
    """Planners before migrations created the tables at start: the upgrade keeps their runs."""
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(
            f"CREATE TABLE {RUNS_TABLE} (planner TEXT NOT NULL, task_id TEXT NOT NULL, "
            "context_id TEXT NOT NULL, source TEXT NOT NULL, plan TEXT NOT NULL, "
            "input TEXT NOT NULL, state TEXT NOT NULL, error TEXT, "
            "created TIMESTAMPTZ NOT NULL DEFAULT now(), "
            "updated TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (planner, task_id))"
        )
        await conn.execute(
            f"INSERT INTO {RUNS_TABLE} (planner, task_id, context_id, source, plan, input, state) "
            "VALUES ('planner', 't1', 'c1', 'plan', '{}', 'null', 'working')"
        )
        done = await RUNS_SCHEMA.upgrade(database)
        assert (done.before, done.after) == (None, REVISION)
        assert await conn.fetchval(f"SELECT task_id FROM {RUNS_TABLE}") == "t1"
    finally:
        await conn.close()
    assert await _opened(database) is None


def test_the_planner_reads_the_newest_shipped_run_migration() -> None:
    # A new revision bumps REVISION with it, or planners would start on a schema they do not
    # read (or refuse one they do).
    assert RUNS_SCHEMA.head() == REVISION
    assert REVISION.isdigit()
    assert len(REVISION) == 4
