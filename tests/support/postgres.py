"""The real PostgreSQL of integration tests (database ``test`` on 127.0.0.1): reachability and
removal of one agent's rows, so tests sharing the database do not see each other's tasks."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg

from mesh.a2a.leases import TABLE as LEASES
from mesh.planner.store import RUNS_TABLE, STEPS_TABLE

POSTGRES_URL = "postgresql+asyncpg://127.0.0.1:5432/test"
SHARED = {"SLMESH_TASK_STORE": POSTGRES_URL, "SLMESH_TASK_EVENTS": "database"}
"""Replica-agnostic tasks on the test database."""
FAST_LEASES = {**SHARED, "SLMESH_TASK_LEASE_S": "2", "SLMESH_TASK_LEASE_RENEW_S": "0.4"}
"""...with leases short enough that a killed replica's task is taken over within seconds."""


def postgres_up() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 5432), timeout=1):
        return True
    return False


async def connect() -> asyncpg.Connection:
    return await asyncpg.connect("postgresql://127.0.0.1:5432/test")


async def drop_agent_tasks(agent: str) -> None:
    """Drops the agent's task table and removes its rows from the tables all agents share."""
    table = f"tasks_{agent.replace('-', '_')}"
    conn = await connect()
    try:
        if await conn.fetchval("SELECT to_regclass($1)", table) is not None:
            # a2a-sdk's version and event tables are shared by all agents: only our rows go.
            for shared in ("task_events", "task_versions"):
                await conn.execute(
                    f'DELETE FROM {shared} WHERE task_id IN (SELECT id FROM "{table}")'
                )
            await conn.execute(f'DROP TABLE "{table}"')
        if await conn.fetchval("SELECT to_regclass($1)", LEASES) is not None:
            await conn.execute(f"DELETE FROM {LEASES} WHERE agent = $1", agent)
        for runs in (RUNS_TABLE, STEPS_TABLE):  # a planner's shared run store
            if await conn.fetchval("SELECT to_regclass($1)", runs) is not None:
                await conn.execute(f"DELETE FROM {runs} WHERE planner = $1", agent)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def own_database(prefix: str = "slmesh_test") -> AsyncIterator[str]:
    """A database of the caller's own on the test server, dropped after (its sessions cut);
    yields its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = await connect()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+asyncpg://127.0.0.1:5432/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def admin_execute(statement: str) -> None:
    """Runs one statement (CREATE/DROP DATABASE) on the machine's PostgreSQL as its admin."""
    conn = await connect()
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A database of the caller's own on the machine's PostgreSQL (its ``postgresql://`` URL),
    dropped after with whatever is still connected to it; skips the test when PostgreSQL is
    not running."""
    import pytest

    if not postgres_up():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    asyncio.run(admin_execute(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://127.0.0.1:5432/{name}"
    finally:
        asyncio.run(admin_execute(f'DROP DATABASE "{name}" WITH (FORCE)'))
