"""Replicas that start together on a fresh PostgreSQL database all come up (mesh.a2a.schema_lock).

a2a-sdk's database stores create their tables (and the shared ``task_versions`` /
``task_events``) without a lock; two start-ups at once failed on PostgreSQL's catalog
(``pg_type_typname_nsp_index``) and one replica exited. These tests start many at once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from a2a.server.cluster import VersionedDatabaseTaskStore
from a2a.server.tasks import DatabasePushNotificationConfigStore
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from mesh.a2a.schema_lock import schema_lock
from tests.support.event_feed import ticker_service
from tests.support.postgres import own_database, postgres_up, scratch_database
from tests.support.procs import ServiceProcess, wait_ready

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not postgres_up(), reason="PostgreSQL is not running on 127.0.0.1:5432"),
]

STARTUPS = 6


async def _start_up(url: str, suffix: str) -> None:
    """What one replica's start creates: its task table, the shared version and event tables,
    its push config table; each replica on an engine (a pool) of its own."""
    engine = create_async_engine(url)
    try:
        async with schema_lock(engine, "slmesh-a2a-tables"):
            await VersionedDatabaseTaskStore(engine, table_name=f"tasks_{suffix}").initialize()
            await DatabasePushNotificationConfigStore(
                engine, table_name=f"push_{suffix}"
            ).initialize()
    finally:
        await engine.dispose()


async def test_six_start_ups_at_once_on_a_fresh_database_all_create_their_tables() -> None:
    async with own_database("schema_lock") as url:
        run = uuid.uuid4().hex[:8]
        await asyncio.gather(*(_start_up(url, f"{run}_{i}") for i in range(STARTUPS)))
        conn = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            tables = {r["tablename"] for r in rows}
        finally:
            await conn.close()
    assert {"task_versions", "task_events"} <= tables
    for i in range(STARTUPS):
        assert {f"tasks_{run}_{i}", f"push_{run}_{i}"} <= tables


async def test_a_second_holder_waits_until_the_first_lets_go() -> None:
    async with own_database("schema_lock") as url:
        first, second = create_async_engine(url), create_async_engine(url)
        try:
            order: list[str] = []

            async def take(engine: AsyncEngine, name: str) -> None:
                async with schema_lock(engine, "slmesh-test-lock"):
                    order.append(f"{name} in")
                    await asyncio.sleep(0.3)
                    order.append(f"{name} out")

            held = asyncio.create_task(take(first, "a"))
            while not order:
                await asyncio.sleep(0.01)
            await asyncio.gather(held, take(second, "b"))
        finally:
            await first.dispose()
            await second.dispose()
    assert order == ["a in", "a out", "b in", "b out"]


def test_four_replicas_started_together_on_a_fresh_database_all_become_ready(
    tmp_path: Path, spawn: Callable[..., ServiceProcess]
) -> None:
    with scratch_database("replicas_start") as url:
        service = ticker_service(tmp_path / "services", f"ticker-{uuid.uuid4().hex[:8]}")
        env = {
            "SLMESH_TASK_STORE": url.replace("postgresql://", "postgresql+asyncpg://", 1),
            "SLMESH_TASK_EVENTS": "database",
            "SLMESH_PUSH_NOTIFICATIONS": "true",
            "SLMESH_PUSH_ALLOW": "127.0.0.1",
        }
        replicas = [
            spawn(service, env={**env, "SLMESH_REPLICA_ID": f"start-{i}"}, wait=False)
            for i in range(4)
        ]
        for proc in replicas:
            wait_ready(proc, timeout=90.0)
        for proc in replicas:
            proc.kill()
