"""Two planner replicas on one PostgreSQL database: a run survives the replica running it.

The database is the test's own (created, migrated by the real `slmesh db upgrade` for the
tools agent's orders, dropped after). The planners share tasks (``SLMESH_TASK_EVENTS=
database``) and therefore runs (:class:`mesh.planner.store.PostgresPlanStore`); the replica
running a chain of refunds and slow steps is killed with its Ray processes, and the other
one, taking the task's lease over, resumes the run from its recorded steps.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from a2a.types import a2a_pb2 as pb
from google.protobuf.json_format import MessageToDict

from mesh.a2a.client import MeshClient, StaticReplicas, parts_value
from mesh.planner.store import STEPS_TABLE
from tests.conftest import ECHO_SERVICE
from tests.integration.planner.test_planner import FAST, PLANNER, data_request, error_of
from tests.support.postgres import scratch_database
from tests.support.procs import ROOT, ServiceProcess, start_registry, start_service, wait_ready

pytestmark = pytest.mark.integration

TOOLS = ROOT / "services" / "tools"
REFUNDS = 3


@pytest.fixture
def database() -> Iterator[str]:
    """A database of this test's own, migrated for the order tables and the planner's runs
    (`slmesh db upgrade` as the migration Job runs it: each schema whose database is set);
    dropped after."""
    with scratch_database("runs") as url:
        done = subprocess.run(
            [sys.executable, "-m", "mesh", "db", "upgrade"],
            cwd=ROOT,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "SLMESH_ORDERS_DATABASE": url,
                "SLMESH_TASK_STORE": url.replace("postgresql://", "postgresql+asyncpg://", 1),
                "SLMESH_TASK_EVENTS": "database",
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        yield url


async def _fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def _calls(url: str, agent: str) -> list[str]:
    """The request of every task ``agent`` ran, as text (its message's parts)."""
    async with MeshClient(StaticReplicas.from_urls(agent, url)) as client:
        listed = await client.list_tasks(
            agent, pb.ListTasksRequest(page_size=100, history_length=1)
        )
    return [json.dumps(MessageToDict(task.history[0])) for task in listed.tasks if task.history]


def _chain(orders: list[str], marker: str) -> dict[str, Any]:
    """Refund, wait, refund, wait, ...: one step at a time (``when``), each refund keyed."""
    steps: list[dict[str, Any]] = []
    for i, order in enumerate(orders):
        steps.append(
            {
                "id": f"r{i}",
                "skill": "execute_tool",
                "idempotency_key": True,
                "input": {
                    "name": "refund_order",
                    "arguments": {"order_id": order, "amount": 1.0, "reason": f"{marker} r{i}"},
                },
            }
        )
        steps.append({"id": f"w{i}", "skill": "echo", "input": f"sleep:0.8 {marker} w{i}"})
    for previous, step in itertools.pairwise(steps):
        step["when"] = f"${previous['id']}"
    return {"plan": {"steps": steps, "output": {"last": f"${steps[-1]['id']}"}}}


async def test_a_killed_planners_run_is_resumed_by_the_other_from_its_recorded_steps(
    tmp_path: Path, database: str
) -> None:
    task_store = database.replace("postgresql://", "postgresql+asyncpg://", 1)
    shared = {
        **FAST,
        "SLMESH_TASK_STORE": task_store,
        "SLMESH_TASK_EVENTS": "database",
        "SLMESH_TASK_LEASE_S": "2",
        "SLMESH_TASK_LEASE_RENEW_S": "0.4",
    }
    procs: list[ServiceProcess] = []
    try:
        registry = start_registry(tmp_path, env=FAST)
        procs.append(registry)
        mesh = {**FAST, "SLMESH_REGISTRY": registry.grpc_target}

        def start(service: Path, name: str, **env: str) -> ServiceProcess:
            proc = start_service(
                service,
                tmp_path,
                env={**mesh, "SLMESH_DATA_DIR": str(tmp_path / name), **env},
                wait=False,
            )
            procs.append(proc)
            return proc

        # Started together (each planner starts its own Ray), then awaited.
        tools = start(TOOLS, "tools", SLMESH_ORDERS_DATABASE=database)
        echo = start(ECHO_SERVICE, "echo")
        first = start(PLANNER, "planner-0", **shared)
        second = start(PLANNER, "planner-1", **shared)
        for proc in procs[1:]:
            wait_ready(proc, timeout=120.0)

        rows = await _fetch(
            database,
            "SELECT order_id FROM orders WHERE status = 'delivered' AND amount_cents >= 1000 "
            "ORDER BY order_id LIMIT $1",
            REFUNDS,
        )
        orders = [row["order_id"] for row in rows]
        marker = uuid.uuid4().hex[:8]
        async with MeshClient(StaticReplicas.from_urls("planner", first.http_url)) as client:
            task_id = (
                await client.send_message(
                    "planner",
                    pb.SendMessageRequest(
                        message=data_request(_chain(orders, marker)).message,
                        configuration=pb.SendMessageConfiguration(return_immediately=True),
                    ),
                    timeout=30,
                )
            ).task.id

        done_sql = f"SELECT node FROM {STEPS_TABLE} WHERE task_id = $1 AND status = 'ok'"
        deadline = time.monotonic() + 60
        while len(await _fetch(database, done_sql, task_id)) < 3:  # r0, w0, r1
            assert time.monotonic() < deadline, "the plan made no progress"
            await asyncio.sleep(0.05)
        ray = first.kill_tree()
        recorded = {row["node"] for row in await _fetch(database, done_sql, task_id)}
        assert ray, "the planner's Ray processes were not found"

        async with MeshClient(StaticReplicas.from_urls("planner", second.http_url)) as client:
            deadline = time.monotonic() + 90
            while True:
                task = await client.get_task("planner", task_id)
                if task.status.state in (
                    pb.TaskState.TASK_STATE_COMPLETED,
                    pb.TaskState.TASK_STATE_FAILED,
                ):
                    break
                assert time.monotonic() < deadline, pb.TaskState.Name(task.status.state)
                await asyncio.sleep(0.2)
        assert task.status.state == pb.TaskState.TASK_STATE_COMPLETED, error_of(task)
        assert parts_value(task.artifacts[-1].parts) == {
            "last": f"SLEEP:0.8 {marker} W{REFUNDS - 1}".upper()
        }
        assert MessageToDict(task.metadata)["slmesh.takeover"]["count"] == 1
        # The second replica resumed: it logged the steps it did not run again.
        assert f"resuming task {task_id} ({len(recorded)} steps already done)" in second.output()

        # Each refund applied once: one ledger row per step, one recorded key per step.
        refunds = await _fetch(
            database,
            "SELECT reason, count(*) AS n FROM refunds WHERE reason LIKE $1 GROUP BY reason",
            f"{marker} %",
        )
        assert {r["reason"]: r["n"] for r in refunds} == {
            f"{marker} r{i}": 1 for i in range(REFUNDS)
        }
        keys = await _fetch(
            database,
            "SELECT idempotency_key FROM tool_calls WHERE idempotency_key LIKE $1",
            f"{task_id}/%",
        )
        assert sorted(k["idempotency_key"] for k in keys) == [
            f"{task_id}/r{i}" for i in range(REFUNDS)
        ]

        # No step recorded before the kill reached its agent again; only the step in flight
        # at the kill (not yet recorded) may have been sent twice (and replayed by its key).
        calls = await _calls(tools.http_url, "tools") + await _calls(echo.http_url, "echo")
        sent = {
            step: sum(f"{marker} {step}" in call.lower() for call in calls)
            for step in [f"{kind}{i}" for i in range(REFUNDS) for kind in ("r", "w")]
        }
        assert all(sent[step] == 1 for step in recorded), (recorded, sent)
        assert all(1 <= n <= 2 for n in sent.values()), sent
        assert sum(n - 1 for n in sent.values()) <= 1, sent
    finally:
        for proc in reversed(procs):
            proc.kill_tree()
