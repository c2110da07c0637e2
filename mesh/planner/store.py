"""Durable runs: each accepted plan and every finished step, so another planner resumes.

A run is written before its first step is dispatched; each step's outcome as it arrives.
After a crash, :meth:`PlanStore.unfinished` lists the runs to resume and
:meth:`PlanStore.outcomes` the steps not to run again.

Two stores, chosen by :func:`open_plan_store`:

- :class:`SqlitePlanStore`, one file (WAL) per planner under the data dir: the embedded
  default, where only a planner restarted on the same data dir resumes its runs.
- :class:`PostgresPlanStore`, in the task store's PostgreSQL database when tasks are shared
  (``SLMESH_TASK_EVENTS=database``): every planner replica reads every run, so the replica
  that takes a task over (its lease, :mod:`mesh.a2a.leases`) resumes the run from its
  recorded steps instead of running the request again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mesh.migrations import SchemaError
from mesh.planner.schema import REVISION, RUNS_SCHEMA, RUNS_TABLE, STEPS_TABLE, shared_runs
from mesh.planner.steps import Outcome

__all__ = [
    "REVISION",
    "RUNS_SCHEMA",
    "RUNS_TABLE",
    "STEPS_TABLE",
    "PlanStore",
    "PostgresPlanStore",
    "SqlitePlanStore",
    "open_plan_store",
    "shared_runs",
]

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from mesh.config import Settings


@dataclass
class RunRecord:
    task_id: str
    context_id: str
    source: str
    plan: dict[str, Any]
    input: Any
    state: str
    error: str | None


class PlanStore(ABC):
    """Runs and their step outcomes.

    - :meth:`create_run` replaces a run of the same task (an answer on a waiting task starts
      a new run) and forgets nothing else: steps are keyed by node, and a new run's nodes
      overwrite the old ones as they finish.
    - Only ``ok`` and ``skipped`` outcomes count as finished (:meth:`outcomes`): a failed
      step runs again on resume.
    - A step's outcome is durable when :meth:`save_step` returns.
    """

    @abstractmethod
    async def open(self) -> None:
        """Makes the store ready (tables); called once before any other method."""

    @abstractmethod
    async def create_run(
        self, task_id: str, context_id: str, source: str, plan: dict[str, Any], input_: Any
    ) -> None: ...

    @abstractmethod
    async def finish_run(self, task_id: str, state: str, error: str | None = None) -> None: ...

    @abstractmethod
    async def save_step(self, task_id: str, node: str, outcome: Outcome) -> None: ...

    @abstractmethod
    async def outcomes(self, task_id: str) -> dict[str, Outcome]:
        """Finished (ok or skipped) steps of a run; failed ones are run again on resume."""

    @abstractmethod
    async def run(self, task_id: str) -> RunRecord | None: ...

    @abstractmethod
    async def unfinished(self) -> list[RunRecord]:
        """Runs accepted but not finished, oldest first."""

    @abstractmethod
    async def aclose(self) -> None: ...


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    task_id    TEXT PRIMARY KEY,
    context_id TEXT NOT NULL,
    source     TEXT NOT NULL,
    plan       TEXT NOT NULL,
    input      TEXT NOT NULL,
    state      TEXT NOT NULL,
    error      TEXT,
    created    REAL NOT NULL,
    updated    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    task_id TEXT NOT NULL,
    node    TEXT NOT NULL,
    status  TEXT NOT NULL,
    outcome TEXT NOT NULL,
    PRIMARY KEY (task_id, node)
);
"""


class SqlitePlanStore(PlanStore):
    """Runs and step outcomes in one SQLite file, written from the event loop one short
    statement at a time, like the mesh's SQLite task store."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SQLITE_SCHEMA)

    def __str__(self) -> str:
        return str(self.path)

    async def open(self) -> None:
        return None  # the file's tables were created with it

    async def create_run(
        self, task_id: str, context_id: str, source: str, plan: dict[str, Any], input_: Any
    ) -> None:
        now = time.time()
        self._db.execute(
            "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, 'working', NULL, ?, ?)",
            (task_id, context_id, source, json.dumps(plan), json.dumps(input_), now, now),
        )

    async def finish_run(self, task_id: str, state: str, error: str | None = None) -> None:
        self._db.execute(
            "UPDATE runs SET state = ?, error = ?, updated = ? WHERE task_id = ?",
            (state, error, time.time(), task_id),
        )

    async def save_step(self, task_id: str, node: str, outcome: Outcome) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?)",
            (task_id, node, outcome.status, json.dumps(outcome.to_json())),
        )

    async def outcomes(self, task_id: str) -> dict[str, Outcome]:
        rows = self._db.execute(
            "SELECT node, outcome FROM steps WHERE task_id = ? AND status != 'failed'", (task_id,)
        )
        return {node: Outcome.from_json(json.loads(raw)) for node, raw in rows}

    async def run(self, task_id: str) -> RunRecord | None:
        row = self._db.execute(
            "SELECT task_id, context_id, source, plan, input, state, error FROM runs "
            "WHERE task_id = ?",
            (task_id,),
        ).fetchone()
        return _record(row) if row else None

    async def unfinished(self) -> list[RunRecord]:
        rows = self._db.execute(
            "SELECT task_id, context_id, source, plan, input, state, error FROM runs "
            "WHERE state = 'working' ORDER BY created"
        )
        return [_record(row) for row in rows]

    async def aclose(self) -> None:
        self._db.close()


_PG_CREATE_RUN = (
    f"INSERT INTO {RUNS_TABLE} (planner, task_id, context_id, source, plan, input, state) "
    "VALUES (:planner, :task, :context, :source, :plan, :input, 'working') "
    "ON CONFLICT (planner, task_id) DO UPDATE SET context_id = EXCLUDED.context_id, "
    "source = EXCLUDED.source, plan = EXCLUDED.plan, input = EXCLUDED.input, state = 'working', "
    "error = NULL, updated = now()"
)
_PG_FINISH_RUN = (
    f"UPDATE {RUNS_TABLE} SET state = :state, error = :error, updated = now() "
    "WHERE planner = :planner AND task_id = :task"
)
_PG_SAVE_STEP = (
    f"INSERT INTO {STEPS_TABLE} (planner, task_id, node, status, outcome) "
    "VALUES (:planner, :task, :node, :status, :outcome) ON CONFLICT (planner, task_id, node) "
    "DO UPDATE SET status = EXCLUDED.status, outcome = EXCLUDED.outcome"
)
_PG_OUTCOMES = (
    f"SELECT node, outcome FROM {STEPS_TABLE} "
    "WHERE planner = :planner AND task_id = :task AND status != 'failed'"
)
_PG_RUN_COLUMNS = "task_id, context_id, source, plan, input, state, error"
_PG_RUN = f"SELECT {_PG_RUN_COLUMNS} FROM {RUNS_TABLE} WHERE planner = :planner AND task_id = :task"
_PG_UNFINISHED = (
    f"SELECT {_PG_RUN_COLUMNS} FROM {RUNS_TABLE} WHERE planner = :planner AND state = 'working' "
    "ORDER BY created"
)


class PostgresPlanStore(PlanStore):
    """Runs of the planner service ``planner`` in a PostgreSQL database that all its replicas
    share; each call is one short transaction on a small bounded pool."""

    def __init__(self, engine: AsyncEngine, planner: str) -> None:
        self.engine = engine
        self.planner = planner

    def __str__(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    async def open(self) -> None:
        """Checks the run tables' schema: :class:`~mesh.migrations.SchemaError`, naming
        ``slmesh db upgrade``, when this planner must not start on it."""
        async with self.engine.connect() as conn:
            problem = await RUNS_SCHEMA.check(conn)
        if problem is not None:
            raise SchemaError(f"the planner run store {self} cannot be used: {problem}")

    async def _write(self, sql: str, **args: Any) -> None:
        from sqlalchemy import text

        async with self.engine.begin() as conn:
            await conn.execute(text(sql), {"planner": self.planner, **args})

    async def _read(self, sql: str, **args: Any) -> list[tuple[Any, ...]]:
        from sqlalchemy import text

        async with self.engine.connect() as conn:
            result = await conn.execute(text(sql), {"planner": self.planner, **args})
            return [tuple(row) for row in result]

    async def create_run(
        self, task_id: str, context_id: str, source: str, plan: dict[str, Any], input_: Any
    ) -> None:
        await self._write(
            _PG_CREATE_RUN,
            task=task_id,
            context=context_id,
            source=source,
            plan=json.dumps(plan),
            input=json.dumps(input_),
        )

    async def finish_run(self, task_id: str, state: str, error: str | None = None) -> None:
        await self._write(_PG_FINISH_RUN, task=task_id, state=state, error=error)

    async def save_step(self, task_id: str, node: str, outcome: Outcome) -> None:
        await self._write(
            _PG_SAVE_STEP,
            task=task_id,
            node=node,
            status=outcome.status,
            outcome=json.dumps(outcome.to_json()),
        )

    async def outcomes(self, task_id: str) -> dict[str, Outcome]:
        rows = await self._read(_PG_OUTCOMES, task=task_id)
        return {node: Outcome.from_json(json.loads(raw)) for node, raw in rows}

    async def run(self, task_id: str) -> RunRecord | None:
        rows = await self._read(_PG_RUN, task=task_id)
        return _record(rows[0]) if rows else None

    async def unfinished(self) -> list[RunRecord]:
        return [_record(row) for row in await self._read(_PG_UNFINISHED)]

    async def aclose(self) -> None:
        await self.engine.dispose()


def open_plan_store(planner: str, settings: Settings) -> PlanStore:
    """:class:`PostgresPlanStore` on the task store's database when :func:`shared_runs`, else
    ``planner-NAME.sqlite`` under the data dir."""
    if shared_runs(settings):
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(
            settings.task_store,
            pool_size=settings.planner_pool_size,
            max_overflow=0,
            pool_pre_ping=True,
        )
        return PostgresPlanStore(engine, planner)
    return SqlitePlanStore((settings.data_dir / f"planner-{planner}.sqlite").resolve())


def _record(row: tuple[Any, ...]) -> RunRecord:
    task_id, context_id, source, plan, input_, state, error = row
    return RunRecord(
        task_id, context_id, source, json.loads(plan), json.loads(input_), state, error
    )
