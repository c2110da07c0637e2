"""Durable push delivery. Across replicas: two echo replicas share a PostgreSQL task store with
the event log (a database of this test's own), whose trigger writes each event's outbox rows
in the event's transaction. The receiver hangs while replica A holds deliveries; A is killed
with SIGKILL; the receiver recovers; B delivers every event A had not, and the receiver sees
each event (by idempotency id) with nothing lost. On the default SQLite store: the same
agent, killed and started again on its data directory, delivers what its outbox held."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from mesh.a2a.outbox import outbox_table
from tests.conftest import ECHO_SERVICE
from tests.support.postgres import own_database, postgres_up
from tests.support.procs import ServiceProcess

pytestmark = pytest.mark.integration

HEADERS = {"A2A-Version": "1.0"}
OUTBOX = outbox_table("echo")


@pytest.fixture
async def database() -> AsyncIterator[str]:
    if not postgres_up():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    async with own_database("push_outbox") as url:
        yield url


def _hits(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line]


async def _query(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def _until(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_a_replica_killed_mid_delivery_leaves_its_outbox_to_another(
    database: str,
    spawn: Callable[..., ServiceProcess],
    receiver: tuple[int, Path, Path, Path],
) -> None:
    port, log, ca, key_file = receiver
    gate = log.with_name(log.name + ".closed")
    gate.touch()  # the receiver hangs until this goes
    env = {
        "SLMESH_TASK_STORE": database,
        "SLMESH_TASK_EVENTS": "database",
        "SLMESH_PUSH_NOTIFICATIONS": "true",
        "SLMESH_PUSH_ALLOW": "127.0.0.1",
        "SLMESH_PUSH_CA_FILE": str(ca),
        "SLMESH_PUSH_TIMEOUT_S": "1",  # a lease of 3 s
        "SLMESH_PUSH_MAX_ATTEMPTS": "50",
        "SLMESH_PUSH_BACKOFF_S": "0.1",
        "SLMESH_PUSH_POLL_S": "0.2",
        "SLMESH_SIGNING_KEYS": str(key_file),
    }
    a, b = spawn(ECHO_SERVICE, env=env), spawn(ECHO_SERVICE, env=env)
    hook = f"https://127.0.0.1:{port}/gated"
    tasks: list[str] = []
    async with httpx.AsyncClient(timeout=10) as http:
        for i in range(4):
            params = {
                "message": {
                    "role": "ROLE_USER",
                    "messageId": uuid.uuid4().hex,
                    "parts": [{"text": f"task {i}"}],
                },
                "configuration": {"taskPushNotificationConfig": {"url": hook, "token": f"t{i}"}},
            }
            body = {"jsonrpc": "2.0", "id": i, "method": "SendMessage", "params": params}
            reply = (await http.post(a.http_url + "/", json=body, headers=HEADERS)).json()
            assert reply["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED", reply
            tasks.append(reply["result"]["task"]["id"])

        # Every event of the four tasks, as the event log has it: what must arrive.
        events = await _query(database, "SELECT task_id, seq FROM task_events ORDER BY seq")
        expected = {f"{r['task_id']}.{r['seq']}" for r in events}
        assert {r["task_id"] for r in events} == set(tasks)
        assert len(expected) >= 3 * len(tasks)

        held_by_a: set[str] = set()

        async def a_holds_deliveries() -> bool:
            rows = await _query(
                database,
                f"SELECT event_key FROM {OUTBOX} WHERE lease_owner LIKE $1",
                f"%-{a.popen.pid}",
            )
            held_by_a.update(r["event_key"] for r in rows)
            return bool(rows) and any(h["path"] == "/gated" for h in _hits(log))

        await _until(a_holds_deliveries, 20, "replica A to hold deliveries")
        a.kill()  # SIGKILL, mid-delivery: its leased rows stay leased until the lease ends
        killed = time.time()
        gate.unlink()

        async def outbox_empty() -> bool:
            return (await _query(database, f"SELECT count(*) AS n FROM {OUTBOX}"))[0]["n"] == 0

        await _until(outbox_empty, 60, "the outbox to drain")
        delivered = [h for h in _hits(log) if h["status"] == 204]
        assert {h["id"] for h in delivered} == expected  # nothing lost
        assert all(h["verified"] for h in delivered)
        # Everything A held when it died was delivered afterwards, so by B.
        assert held_by_a <= {h["id"] for h in delivered if h["at"] > killed}
        # Each task's receiver saw its events in order (the first delivery of each).
        first: dict[str, str] = {}
        for hit in delivered:
            first.setdefault(hit["id"], hit["token"])
        for task in tasks:
            seqs = [int(k.rsplit(".", 1)[1]) for k in first if k.startswith(task + ".")]
            assert seqs == sorted(seqs), (task, seqs)
        assert {h["token"] for h in delivered} == {f"t{i}" for i in range(4)}
        duplicates = len(delivered) - len({h["id"] for h in delivered})
        print(
            f"\noutbox takeover: {len(expected)} events, A held {len(held_by_a)} when killed, "
            f"all delivered {time.time() - killed:.1f} s after the kill, {duplicates} repeats"
        )
        # B still serves.
        again = {
            "jsonrpc": "2.0",
            "id": 9,
            "method": "GetTask",
            "params": {"id": tasks[0]},
        }
        got = (await http.post(b.http_url + "/", json=again, headers=HEADERS)).json()
        assert got["result"]["status"]["state"] == "TASK_STATE_COMPLETED"


async def test_the_sqlite_outbox_outlives_a_killed_agent(
    spawn: Callable[..., ServiceProcess], receiver: tuple[int, Path, Path, Path], tmp_path: Path
) -> None:
    """The single-process default: the agent is killed with SIGKILL while the receiver hangs;
    started again on the same data directory, it delivers every notification its outbox
    held."""
    port, log, ca, key_file = receiver
    gate = log.with_name(log.name + ".closed")
    gate.touch()
    data = tmp_path / "agent-data"
    env = {
        "SLMESH_DATA_DIR": str(data),
        "SLMESH_PUSH_NOTIFICATIONS": "true",
        "SLMESH_PUSH_ALLOW": "127.0.0.1",
        "SLMESH_PUSH_CA_FILE": str(ca),
        "SLMESH_PUSH_TIMEOUT_S": "1",
        "SLMESH_PUSH_MAX_ATTEMPTS": "50",
        "SLMESH_PUSH_BACKOFF_S": "0.1",
        "SLMESH_PUSH_POLL_S": "0.2",
        "SLMESH_SIGNING_KEYS": str(key_file),
    }
    first = spawn(ECHO_SERVICE, env=env)
    async with httpx.AsyncClient(timeout=10) as http:
        for i in range(2):
            params = {
                "message": {
                    "role": "ROLE_USER",
                    "messageId": uuid.uuid4().hex,
                    "parts": [{"text": f"task {i}"}],
                },
                "configuration": {
                    "taskPushNotificationConfig": {"url": f"https://127.0.0.1:{port}/gated"}
                },
            }
            body = {"jsonrpc": "2.0", "id": i, "method": "SendMessage", "params": params}
            reply = (await http.post(first.http_url + "/", json=body, headers=HEADERS)).json()
            assert reply["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED", reply

    def outbox() -> list[str]:
        with contextlib.closing(sqlite3.connect(data / "tasks-echo.sqlite")) as db:
            return [r[0] for r in db.execute("SELECT event_key FROM a2a_push_outbox")]

    async def attempted() -> bool:
        return any(h["path"] == "/gated" for h in _hits(log))

    await _until(attempted, 20, "a delivery to start")
    held = set(outbox())
    assert len(held) >= 6  # two tasks' events, none delivered
    first.kill()
    gate.unlink()
    spawn(ECHO_SERVICE, env=env)

    async def drained() -> bool:
        return not outbox()

    await _until(drained, 30, "the restarted agent to drain its outbox")
    delivered = [h for h in _hits(log) if h["status"] == 204]
    assert {h["id"] for h in delivered} == held
    assert all(h["verified"] for h in delivered)
