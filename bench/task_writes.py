"""``slmesh bench tasks``: what one A2A task costs the shared PostgreSQL task store.

One replica of the echo agent (``tests.support.echo``, answers at once) keeps its tasks in a
PostgreSQL database of the run's own (created on the local server, dropped after) with shared
tasks (``SLMESH_TASK_EVENTS=database``: versioned task rows, the event log, leases, the NOTIFY
feed). ``--tasks`` unary ``SendMessage`` calls run ``--concurrency`` at a time; the server's
own statistics (``pg_stat_user_tables``, ``pg_stat_database``) are read before and after,
once the replica's backends have flushed them, and divided by the task count: rows written
per table and transactions per task. CPU is ``/proc`` user+system time of the replica and of
its PostgreSQL backends over the run. A planner ticket is one such task per agent step plus
the planner's own task and run rows: with ``--plans``, a registry, an echo agent and a planner
on the same database run that many plans of ``--steps`` chained echo steps, and the rows they
write are set against that model. docs/scaling.md turns these figures into its capacity
formula.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.registry_load import _cpu_s  # noqa: E402 - after the sys.path entry above
from mesh.reports import machine_facts, write_section  # noqa: E402 - as above

SECTION = "## Task store writes per task"
ECHO = ROOT / "tests" / "support" / "echo_service"
FLUSH_S = 11.0
"""PostgreSQL 15 flushes an idle backend's table statistics within 10 s."""

_TABLES = (
    "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables ORDER BY relname"
)
_XACTS = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1"
_BACKENDS = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid()"
)


async def _admin(statement: str) -> None:
    from tests.support.postgres import admin_execute

    await admin_execute(statement)


async def _stats(url: str, name: str) -> tuple[dict[str, tuple[int, int, int]], int]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        tables = {r["relname"]: (r[1], r[2], r[3]) for r in await conn.fetch(_TABLES)}
        xacts = await asyncpg.connect("postgresql://127.0.0.1:5432/test")
        try:
            total = await xacts.fetchval(_XACTS, name)
        finally:
            await xacts.close()
        return tables, int(total)
    finally:
        await conn.close()


async def _backends(url: str) -> list[int]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return [r["pid"] for r in await conn.fetch(_BACKENDS)]
    finally:
        await conn.close()


async def _load(proc: Any, tasks: int, concurrency: int) -> float:
    """Sends ``tasks`` messages, ``concurrency`` at a time; returns the wall time."""
    from mesh.a2a.client import MeshClient, StaticReplicas

    replicas = StaticReplicas.from_urls("echo", proc.http_url, f"grpc://{proc.grpc_target}")
    async with MeshClient(replicas) as client:
        for i in range(5):  # warm: connections, prepared statements
            await client.send_text("echo", f"warm {i}")
        queue = list(range(tasks))
        started = time.perf_counter()

        async def worker() -> None:
            while queue:
                i = queue.pop()
                await client.send_text("echo", f"ticket {i}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def _chain(steps: int) -> dict[str, Any]:
    """A ticket-shaped plan: ``steps`` agent steps, each after the one before."""
    chain: list[dict[str, Any]] = []
    for i in range(steps):
        step: dict[str, Any] = {"id": f"s{i}", "skill": "echo", "input": f"step {i}"}
        if i:
            step["when"] = f"$s{i - 1}"
        chain.append(step)
    return {"plan": {"steps": chain, "output": f"$s{steps - 1}"}}


async def _plans(proc: Any, plans: int, steps: int) -> float:
    """Sends ``plans`` plans of ``steps`` chained echo steps to the planner, one at a time."""
    from a2a.types import a2a_pb2 as pb
    from google.protobuf import struct_pb2
    from google.protobuf.json_format import ParseDict

    from mesh.a2a.client import MeshClient, StaticReplicas

    def request() -> Any:
        value = ParseDict(_chain(steps), struct_pb2.Value())
        part = pb.Part(data=value, media_type="application/json")
        message = pb.Message(role=pb.Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=[part])
        return pb.SendMessageRequest(message=message)

    async with MeshClient(StaticReplicas.from_urls("planner", proc.http_url)) as client:
        started = time.perf_counter()
        for _ in range(plans):
            done = await client.send_message("planner", request(), timeout=60)
            if done.task.status.state != pb.TaskState.TASK_STATE_COMPLETED:
                raise RuntimeError(f"a plan did not complete: {done.task.status}")
        return time.perf_counter() - started


def _ticket_check(url: str, name: str, folder: Path, plans: int, steps: int) -> dict[str, Any]:
    """Rows and transactions per plan of a planner on the shared store, measured."""
    from mesh.planner.schema import RUNS_SCHEMA
    from tests.support.procs import start_registry, start_service

    asyncio.run(RUNS_SCHEMA.upgrade(url))
    fast = {"SLMESH_HEARTBEAT_INTERVAL_S": "0.5", "SLMESH_REGISTRY_TTL_S": "3"}
    registry = start_registry(folder, env=fast)
    procs = [registry]
    try:
        env = {
            **fast,
            "SLMESH_REGISTRY": registry.grpc_target,
            "SLMESH_TASK_STORE": url.replace("postgresql://", "postgresql+asyncpg://"),
            "SLMESH_TASK_EVENTS": "database",
            "SLMESH_LOG_LEVEL": "WARNING",
        }
        procs.append(start_service(ECHO, folder, env=env, ready_timeout=90.0))
        planner = start_service(ROOT / "services" / "planner", folder, env=env, ready_timeout=120.0)
        procs.append(planner)
        asyncio.run(_plans(planner, 2, steps))  # warm
        time.sleep(FLUSH_S)
        before, xacts_before = asyncio.run(_stats(url, name))
        wall = asyncio.run(_plans(planner, plans, steps))
        time.sleep(FLUSH_S)
        after, xacts_after = asyncio.run(_stats(url, name))
    finally:
        for proc in reversed(procs):
            proc.terminate(timeout=30)
    return {
        "plans": plans,
        "steps": steps,
        "plans_per_s": plans / wall,
        "rows": _per(after, before, plans),
        "xacts_per_plan": (xacts_after - xacts_before) / plans,
    }


def _per(
    after: dict[str, tuple[int, int, int]], before: dict[str, tuple[int, int, int]], count: int
) -> dict[str, tuple[float, ...]]:
    rows = {}
    for table, now in after.items():
        then = before.get(table, (0, 0, 0))
        if now != then:
            rows[table] = tuple((a - b) / count for a, b in zip(now, then, strict=True))
    return rows


def main(
    tasks: int = 300,
    concurrency: int = 4,
    plans: int = 20,
    steps: int = 5,
    output: Path = ROOT / "docs" / "benchmarks.md",
) -> dict[str, Any]:
    from tests.support.postgres import postgres_up
    from tests.support.procs import start_service

    if not postgres_up():
        raise SystemExit("slmesh bench tasks needs PostgreSQL on 127.0.0.1:5432 (database test)")
    name = f"slmesh_bench_tasks_{uuid.uuid4().hex[:8]}"
    url = f"postgresql://127.0.0.1:5432/{name}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    load = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory(prefix="slmesh-bench-tasks-") as folder:
            env = {
                "SLMESH_TASK_STORE": url.replace("postgresql://", "postgresql+asyncpg://"),
                "SLMESH_TASK_EVENTS": "database",
                "SLMESH_LOG_LEVEL": "WARNING",
            }
            proc = start_service(ECHO, Path(folder), env=env)
            try:
                asyncio.run(_load(proc, 5, 1))  # tables exist, pools are open
                time.sleep(FLUSH_S)
                before, xacts_before = asyncio.run(_stats(url, name))
                pids = asyncio.run(_backends(url))
                cpu_before = {p: _cpu_s(p) or 0.0 for p in [proc.popen.pid, *pids]}
                wall = asyncio.run(_load(proc, tasks, concurrency))
                pids_after = asyncio.run(_backends(url))
                cpu_after = {p: _cpu_s(p) or 0.0 for p in [proc.popen.pid, *pids_after]}
                time.sleep(FLUSH_S)
                after, xacts_after = asyncio.run(_stats(url, name))
            finally:
                proc.terminate(timeout=30)
            ticket = _ticket_check(url, name, Path(folder), plans, steps) if plans else None
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    counted = tasks + 5  # the load's own warm-up calls ran between the snapshots too
    rows = _per(after, before, counted)
    agent_cpu = cpu_after[proc.popen.pid] - cpu_before[proc.popen.pid]
    # Backends open after the calls; one that opened during them counts whole.
    pg_cpu = sum(cpu_after[p] - cpu_before.get(p, 0.0) for p in pids_after)
    result = {
        "tasks": tasks,
        "concurrency": concurrency,
        "wall_s": wall,
        "tasks_per_s": tasks / wall,
        "rows": rows,
        "xacts_per_task": (xacts_after - xacts_before) / counted,
        "agent_cpu_ms": agent_cpu / counted * 1000,
        "pg_cpu_ms": pg_cpu / counted * 1000,
        "load": load,
        "ticket": ticket,
    }
    text = render(result)
    print(text)
    write_section(output, SECTION, text)
    return result


def render(result: dict[str, Any]) -> str:
    machine = machine_facts()
    lines = [
        SECTION,
        "",
        f"`slmesh bench tasks`, {datetime.now():%Y-%m-%d %H:%M}: what one A2A task costs the "
        "shared PostgreSQL task store. One echo replica (answers at once) with shared tasks "
        "(`SLMESH_TASK_EVENTS=database`, the NOTIFY feed) on a database of the run's own; "
        f"{result['tasks']} unary `SendMessage` calls, {result['concurrency']} at a time; rows "
        "from PostgreSQL's own statistics (`pg_stat_user_tables`, `pg_stat_database`) before "
        "and after, per task; CPU is `/proc` user+system time over the calls.",
        "",
        f"- Machine: {machine['cores']} cores ({machine['cpu']}), Python {machine['python']}, "
        f"a2a-sdk {machine['a2a-sdk']}; PostgreSQL on the same host, shared with other work "
        f"(load average {result['load']:.2f} at the start).",
        f"- {result['tasks_per_s']:.0f} tasks/s; per task: {result['xacts_per_task']:.1f} "
        f"transactions (commits and rollbacks, pool pings included), "
        f"{result['agent_cpu_ms']:.1f} ms agent CPU, {result['pg_cpu_ms']:.1f} ms PostgreSQL "
        "CPU (the replica's backends).",
        "",
        "| table | inserted / task | updated / task | deleted / task |",
        "|---|---:|---:|---:|",
    ]
    for table, (ins, upd, dele) in sorted(result["rows"].items()):
        lines.append(f"| `{table}` | {ins:.2f} | {upd:.2f} | {dele:.2f} |")
    ticket = result["ticket"]
    if ticket:
        per_task = sum(sum(v) for v in result["rows"].values())
        steps = ticket["steps"]
        predicted = (steps + 1) * per_task + steps + 2
        measured = sum(sum(v) for v in ticket["rows"].values())
        lines += [
            "",
            f"Checked against a planner: {ticket['plans']} plans of {steps} chained echo steps "
            "(a ticket's agent steps), one at a time, through a planner on the same database "
            f"({ticket['plans_per_s']:.1f} plans/s). Model: `(S + 1)` tasks of "
            f"{per_task:.0f} row writes each plus `S + 2` run-store rows = {predicted:.0f} "
            f"row writes a plan; measured {measured:.1f} "
            f"({(measured - predicted) / predicted:+.0%}), {ticket['xacts_per_plan']:.0f} "
            "transactions a plan:",
            "",
            "| table | inserted / plan | updated / plan | deleted / plan |",
            "|---|---:|---:|---:|",
        ]
        for table, (ins, upd, dele) in sorted(ticket["rows"].items()):
            lines.append(f"| `{table}` | {ins:.2f} | {upd:.2f} | {dele:.2f} |")
    return "\n".join(lines) + "\n"
