"""Durable runs: each accepted plan and every finished step, so a restarted planner resumes.

One SQLite file (WAL) per planner, written from the event loop one short statement at a
time, like the mesh's task store. A run is written before its first step is dispatched;
each step's outcome as it arrives. After a crash, :meth:`PlanStore.unfinished` lists the
runs to resume and :meth:`PlanStore.outcomes` the steps not to run again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh.planner.steps import Outcome

_SCHEMA = """
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


@dataclass
class RunRecord:
    task_id: str
    context_id: str
    source: str
    plan: dict[str, Any]
    input: Any
    state: str
    error: str | None


class PlanStore:
    """Runs and step outcomes in one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def create_run(
        self, task_id: str, context_id: str, source: str, plan: dict[str, Any], input_: Any
    ) -> None:
        now = time.time()
        self._db.execute(
            "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, 'working', NULL, ?, ?)",
            (task_id, context_id, source, json.dumps(plan), json.dumps(input_), now, now),
        )

    def finish_run(self, task_id: str, state: str, error: str | None = None) -> None:
        self._db.execute(
            "UPDATE runs SET state = ?, error = ?, updated = ? WHERE task_id = ?",
            (state, error, time.time(), task_id),
        )

    def save_step(self, task_id: str, node: str, outcome: Outcome) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?)",
            (task_id, node, outcome.status, json.dumps(outcome.to_json())),
        )

    def outcomes(self, task_id: str) -> dict[str, Outcome]:
        """Finished (ok or skipped) steps of a run; failed ones are run again on resume."""
        rows = self._db.execute(
            "SELECT node, outcome FROM steps WHERE task_id = ? AND status != 'failed'", (task_id,)
        )
        return {node: Outcome.from_json(json.loads(raw)) for node, raw in rows}

    def run(self, task_id: str) -> RunRecord | None:
        row = self._db.execute(
            "SELECT task_id, context_id, source, plan, input, state, error FROM runs "
            "WHERE task_id = ?",
            (task_id,),
        ).fetchone()
        return _record(row) if row else None

    def unfinished(self) -> list[RunRecord]:
        """Runs accepted but not finished, oldest first."""
        rows = self._db.execute(
            "SELECT task_id, context_id, source, plan, input, state, error FROM runs "
            "WHERE state = 'working' ORDER BY created"
        )
        return [_record(row) for row in rows]

    def close(self) -> None:
        self._db.close()


def _record(row: tuple[Any, ...]) -> RunRecord:
    task_id, context_id, source, plan, input_, state, error = row
    return RunRecord(
        task_id, context_id, source, json.loads(plan), json.loads(input_), state, error
    )
