"""The order database on PostgreSQL, shared by real tools replicas (processes on 127.0.0.1).

Each test gets a database of its own on the machine's PostgreSQL, migrated by the real
`slmesh db upgrade`, and drops it after. What is checked is the shared ledger: every
idempotency key applied once whichever replica ran it, refunds never above what the order
allows, seeding once, a dropped connection failing the call cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from a2a.types import a2a_pb2 as pb
from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict, ParseDict

from mesh.a2a.client import MeshClient, StaticReplicas
from mesh.tools.catalog import Policy, execute_call, parse_call
from mesh.tools.orders import create_demo_database
from mesh.tools.postgres import (
    APPLICATION_NAME,
    OrderDatabaseError,
    PgConnection,
    PostgresOrders,
    create_engine,
)
from tests.support.postgres import scratch_database
from tests.support.procs import ROOT, ServiceProcess, wait_ready

pytestmark = pytest.mark.integration

TOOLS = ROOT / "services" / "tools"


@pytest.fixture
def database() -> Iterator[str]:
    """A database of this test's own (URL), dropped after with whatever is connected to it."""
    with scratch_database("orders") as url:
        yield url


def db_upgrade(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mesh", "db", "upgrade", "--url", url],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def migrated(database: str) -> str:
    done = db_upgrade(database)
    assert done.returncode == 0, done.stderr
    assert "revision 0001" in done.stdout
    return database


@contextlib.asynccontextmanager
async def connected(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


def wait_warm(proc: ServiceProcess, timeout: float = 60.0) -> None:
    """Until the replica has readied its order database (its warm-up, after /readyz)."""
    wait_ready(proc, timeout)
    deadline = time.monotonic() + timeout
    while "warmed up" not in proc.output():
        assert proc.popen.poll() is None, proc.output()
        assert time.monotonic() < deadline, proc.output()
        time.sleep(0.05)


def replica_env(url: str) -> dict[str, str]:
    return {"SLMESH_ORDERS_DATABASE": url, "SLMESH_ORDERS_POOL_SIZE": "4"}


def call_request(call: dict[str, Any]) -> pb.SendMessageRequest:
    part = pb.Part(data=ParseDict(call, struct_pb2.Value()), media_type="application/json")
    return pb.SendMessageRequest(
        message=pb.Message(role=pb.Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=[part])
    )


def outcome(response: pb.SendMessageResponse) -> tuple[str, dict[str, Any]]:
    """("completed", tool result) or (state name, the error object of the status message)."""
    task = response.task
    state = pb.TaskState.Name(task.status.state).removeprefix("TASK_STATE_").lower()
    if task.status.state == pb.TaskState.TASK_STATE_COMPLETED:
        return state, MessageToDict(task.artifacts[0].parts[0].data)
    data = [MessageToDict(p.data) for p in task.status.message.parts if p.HasField("data")]
    return state, data[0]["error"] if data else {}


@contextlib.asynccontextmanager
async def clients(procs: list[ServiceProcess]) -> AsyncIterator[list[MeshClient]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                MeshClient(StaticReplicas.from_urls("tools", p.http_url, f"grpc://{p.grpc_target}"))
            )
            for p in procs
        ]


def test_a_replica_refuses_to_start_on_a_schema_it_cannot_use(
    spawn: Callable[..., ServiceProcess], database: str
) -> None:
    def refusal() -> str:
        proc = spawn(TOOLS, env=replica_env(database), wait=False)
        assert proc.popen.wait(60) != 0
        return proc.output()

    assert "no order schema yet: run `slmesh db upgrade` first" in refusal()

    assert db_upgrade(database).returncode == 0

    async def age(statement: str) -> None:
        async with connected(database) as conn:
            await conn.execute(statement)

    # An older revision (as before a rolling upgrade's migration Job ran).
    asyncio.run(age("UPDATE orders_alembic_version SET version_num = '0000'"))
    assert "at revision 0000 and this replica needs 0001: run `slmesh db upgrade`" in refusal()
    # A schema a newer release contracted past what this code reads.
    asyncio.run(age("UPDATE orders_alembic_version SET version_num = '0003'"))
    asyncio.run(age("UPDATE meta SET value = '0002' WHERE key = 'compatible_from'"))
    assert "run the newer tools image" in refusal()
    # A newer schema that is still compatible (expanded only): old replicas keep serving.
    asyncio.run(age("UPDATE meta SET value = '0001' WHERE key = 'compatible_from'"))
    wait_warm(spawn(TOOLS, env=replica_env(database), wait=False))


def test_postgres_answers_as_the_sqlite_database_does(migrated: str, tmp_path: Path) -> None:
    sqlite_file = tmp_path / "orders.sqlite"
    create_demo_database(sqlite_file)
    calls = [
        {"name": "get_order", "arguments": {"order_id": "ORD-621221"}},
        {"name": "find_orders", "arguments": {"email": "kofi.haddad@example.net"}},
        {"name": "track_shipment", "arguments": {"order_id": "ORD-317970"}},
        {"name": "search_faq", "arguments": {"query": "Can I pay with PayPal?"}},
        {"name": "search_faq", "arguments": {"query": "Is the French Press dishwasher safe?"}},
        {
            "name": "get_order",
            "arguments": {"order_id": "ORD-317970"},
            "principal": {"anonymous": True},
        },
    ]

    async def on_postgres() -> list[dict[str, Any]]:
        db = PostgresOrders(migrated)
        try:
            assert await db.prepare()
            return [(await db.run(parse_call(c), policy=Policy())).result for c in calls]
        finally:
            await db.aclose()

    expected = [execute_call(sqlite_file, parse_call(c)).result for c in calls]
    assert asyncio.run(on_postgres()) == expected
    assert expected[0]["ok"]
    assert [expected[3]["count"], expected[4]["count"]] == [1, 0]


def _plan_calls(
    refundable: list[tuple[str, int]], placed: list[str]
) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """200 calls: refunds that together ask for more than each order holds and cancels that
    race for each placed order, every key sent twice as is and once with other arguments."""
    calls: list[tuple[str, dict[str, Any]]] = []
    variants: dict[str, list[dict[str, Any]]] = {}
    for order_id, amount_cents in refundable:
        for n in range(12):
            key = f"refund-{order_id}-{n}"
            cents = amount_cents * (10 + 3 * n) // 100  # 10% .. 43%: 12 of them ask ~3x
            same = {
                "name": "refund_order",
                "arguments": {
                    "order_id": order_id,
                    "amount": cents / 100,
                    "reason": f"refund number {n}",
                },
                "idempotency_key": key,
            }
            other = {**same, "arguments": {**same["arguments"], "amount": (cents + 1) / 100}}
            variants[key] = [same, other]
            calls += [(key, same), (key, same), (key, other)]
    for order_id in placed:
        for n in range(4):
            key = f"cancel-{order_id}-{n}"
            same = {
                "name": "cancel_order",
                "arguments": {"order_id": order_id, "reason": f"changed my mind {n}"},
                "idempotency_key": key,
            }
            other = {**same, "arguments": {**same["arguments"], "reason": "other reason"}}
            variants[key] = [same, other]
            calls += [(key, same), (key, same), (key, other)]
        for n in range(2):
            key = f"early-refund-{order_id}-{n}"
            refund = {
                "name": "refund_order",
                "arguments": {"order_id": order_id, "amount": 1.0, "reason": "early"},
                "idempotency_key": key,
            }
            variants[key] = [refund]
            calls.append((key, refund))
    assert len(calls) == 200
    return calls, variants


async def test_three_replicas_apply_each_key_once_and_never_refund_too_much(
    spawn: Callable[..., ServiceProcess], migrated: str
) -> None:
    # Started together: exactly one of them seeds the demo shop.
    procs = [spawn(TOOLS, env=replica_env(migrated), wait=False) for _ in range(3)]
    for proc in procs:
        await asyncio.to_thread(wait_warm, proc)
    assert sum("seeded the demo order database" in p.output() for p in procs) == 1

    async with connected(migrated) as conn:
        assert await conn.fetchval("SELECT count(*) FROM orders") == 600
        assert await conn.fetchval("SELECT count(*) FROM customers") == 200
        assert await conn.fetchval("SELECT count(*) FROM meta WHERE key = 'seed'") == 1
        refundable = [
            (r["order_id"], r["amount_cents"])
            for r in await conn.fetch(
                "SELECT order_id, amount_cents FROM orders WHERE status = 'delivered' "
                "ORDER BY order_id LIMIT 4"
            )
        ]
        placed = [
            r["order_id"]
            for r in await conn.fetch(
                "SELECT order_id FROM orders WHERE status = 'placed' ORDER BY order_id LIMIT 4"
            )
        ]
        seeded_refunds = await conn.fetchval("SELECT count(*) FROM refunds")

    calls, variants = _plan_calls(refundable, placed)
    async with clients(procs) as replicas:
        responses = await asyncio.gather(
            *(
                replicas[n % 3].send_message("tools", call_request(call), timeout=60)
                for n, (_, call) in enumerate(calls)
            )
        )
    outcomes = [outcome(r) for r in responses]
    assert {state for state, _ in outcomes} <= {"completed", "rejected"}, outcomes

    async with connected(migrated) as conn:
        recorded = {r["idempotency_key"]: r for r in await conn.fetch("SELECT * FROM tool_calls")}
        refunds = await conn.fetch(
            "SELECT order_id, amount_cents FROM refunds ORDER BY id OFFSET $1", seeded_refunds
        )
        final = {
            r["order_id"]: r
            for r in await conn.fetch(
                "SELECT order_id, status, amount_cents FROM orders WHERE order_id = ANY($1)",
                [o for o, _ in refundable] + placed,
            )
        }

    # Each key applied once: one record, and every call of it replayed that record (same
    # arguments) or was refused as a conflict (other arguments).
    assert set(recorded) == set(variants)
    for (key, call), (state, result) in zip(calls, outcomes, strict=True):
        stored = recorded[key]
        same_arguments = call["arguments"] == json.loads(stored["arguments"])
        if state == "completed":
            assert same_arguments, key
            assert json.loads(stored["result"]) == result, key
        else:
            assert result["code"] == "idempotency_conflict", key
            assert not same_arguments, key

    # The ledger adds up: the refunds rows are exactly the applied refunds, never above.
    applied: dict[str, int] = defaultdict(int)
    for row in recorded.values():
        result = json.loads(row["result"])
        if row["tool"] == "refund_order" and result["ok"]:
            applied[result["order_id"]] += int(Decimal(result["amount"]) * 100)
    ledger: dict[str, int] = defaultdict(int)
    for row in refunds:
        ledger[row["order_id"]] += row["amount_cents"]
    assert ledger == applied
    assert len(refunds) == sum(
        1
        for row in recorded.values()
        if row["tool"] == "refund_order" and json.loads(row["result"])["ok"]
    )
    for order_id, amount_cents in refundable:
        assert 0 < ledger[order_id] <= amount_cents
        # Refused refunds were refused for the cap, each against what was left then.
        refusals = [
            json.loads(r["result"])["error"]["code"]
            for r in recorded.values()
            if r["tool"] == "refund_order"
            and json.loads(r["arguments"])["order_id"] == order_id
            and not json.loads(r["result"])["ok"]
        ]
        assert refusals
        assert set(refusals) <= {"amount_exceeds_refundable", "not_refundable"}
        fully = ledger[order_id] == amount_cents
        assert final[order_id]["status"] == ("refunded" if fully else "delivered")
    for order_id in placed:
        assert order_id not in ledger
        assert final[order_id]["status"] == "cancelled"
        cancels = [
            json.loads(r["result"])
            for r in recorded.values()
            if r["tool"] == "cancel_order" and json.loads(r["arguments"])["order_id"] == order_id
        ]
        assert sum(c["ok"] for c in cancels) == 1, cancels


async def test_a_connection_dropped_mid_transaction_fails_the_call_and_applies_nothing(
    spawn: Callable[..., ServiceProcess], migrated: str
) -> None:
    proc = spawn(TOOLS, env=replica_env(migrated), wait=False)
    wait_warm(proc)
    async with connected(migrated) as conn:
        order_id, refunded_before, refunds_before = await _delivered_order(conn)
    key = "dropped-mid-transaction"
    call = {
        "name": "refund_order",
        "arguments": {"order_id": order_id, "amount": 5.0, "reason": "connection dropped"},
        "idempotency_key": key,
    }
    async with clients([proc]) as (client,), connected(migrated) as blocker:
        # The replica's transaction inserts the refund, updates the order and then blocks
        # recording its key behind this uncommitted row: it is terminated right there.
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute(
            "INSERT INTO tool_calls (idempotency_key, tool, arguments, result, created_at) "
            "VALUES ($1, 'refund_order', '{}', '{}', '')",
            key,
        )
        sent = asyncio.create_task(client.send_message("tools", call_request(call), timeout=60))
        backend = None
        async with asyncio.timeout(30):
            while backend is None:
                assert not sent.done(), outcome(sent.result())
                backend = await blocker.fetchval(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = $1 AND wait_event_type = 'Lock'",
                    APPLICATION_NAME,
                )
                await asyncio.sleep(0.02)
        assert await blocker.fetchval("SELECT pg_terminate_backend($1)", backend)
        state, error = outcome(await sent)
        await holding.rollback()

        assert state == "failed"
        assert error["code"] == "database_error"
        assert error["retryable"] is True
        assert "retried" in error["message"]
        # Nothing of it was applied: no refund, no key, the order as it was.
        assert await _refund_state(blocker, order_id) == (refunded_before, refunds_before)
        assert (
            await blocker.fetchval(
                "SELECT count(*) FROM tool_calls WHERE idempotency_key = $1", key
            )
            == 0
        )

        # The replica stays up, and the retry with the same key applies the refund once.
        state, result = outcome(await client.send_message("tools", call_request(call)))
        assert state == "completed"
        assert result["ok"], result
        again = await client.send_message("tools", call_request(call))
        assert outcome(again) == ("completed", result)
        assert again.task.artifacts[0].metadata["replayed"] is True
        assert await _refund_state(blocker, order_id) == (
            refunded_before + 500,
            refunds_before + 1,
        )
    assert proc.popen.poll() is None


async def _delivered_order(conn: asyncpg.Connection) -> tuple[str, int, int]:
    order_id = await conn.fetchval(
        "SELECT order_id FROM orders WHERE status = 'delivered' AND amount_cents > 1000 "
        "ORDER BY order_id LIMIT 1"
    )
    return (order_id, *(await _refund_state(conn, order_id)))


async def _refund_state(conn: asyncpg.Connection, order_id: str) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT COALESCE(SUM(amount_cents), 0) AS total, count(*) AS n FROM refunds "
        "WHERE order_id = $1",
        order_id,
    )
    return int(row["total"]), int(row["n"])


async def test_a_call_waiting_too_long_for_a_lock_fails_retryable_and_applies_nothing(
    migrated: str,
) -> None:
    db = PostgresOrders(migrated, lock_timeout="300ms")
    try:
        await db.prepare()
        async with connected(migrated) as blocker:
            order_id, refunded, count = await _delivered_order(blocker)
            holding = blocker.transaction()
            await holding.start()
            await blocker.execute("SELECT 1 FROM orders WHERE order_id = $1 FOR UPDATE", order_id)
            call = parse_call(
                {
                    "name": "refund_order",
                    "arguments": {"order_id": order_id, "amount": 1.0, "reason": "lock timeout"},
                    "idempotency_key": "waits-for-a-lock",
                }
            )
            with pytest.raises(OrderDatabaseError, match="retry with the same idempotency_key"):
                await db.run(call, policy=Policy())
            await holding.rollback()
            assert await _refund_state(blocker, order_id) == (refunded, count)
            assert (await db.run(call, policy=Policy())).result["ok"]
            assert await _refund_state(blocker, order_id) == (refunded + 100, count + 1)
    finally:
        await db.aclose()


async def test_the_connection_adapter_reads_rows_as_sqlite3_does(database: str) -> None:
    engine = create_engine(database)

    def exercise(sync: Any) -> list[Any]:
        pg = PgConnection(sync)
        pg.execute("CREATE TABLE t (a INTEGER, b TEXT)")
        assert pg.executemany("INSERT INTO t (a, b) VALUES (?, ?)", []).fetchall() == []
        pg.executemany("INSERT INTO t (a, b) VALUES (?, ?)", [(1, "x"), (2, None)])
        assert pg.execute("UPDATE t SET b = ? WHERE a = ?", ("y", 2)).fetchone() is None
        rows = pg.execute("SELECT a, b FROM t WHERE a >= ? ORDER BY a", (1,)).fetchall()
        return [(dict(row), row[0], row["b"]) for row in rows]

    try:
        async with engine.begin() as conn:
            rows = await conn.run_sync(exercise)
    finally:
        await engine.dispose()
    assert rows == [({"a": 1, "b": "x"}, 1, "x"), ({"a": 2, "b": "y"}, 2, "y")]
