"""The dataset store of the LLM-to-SLM conversion loop: recorded calls and their clusters.

One SQLite file (WAL) that every recording agent process of a mesh may share
(``SLMESH_RECORD_DB``): each call is one short INSERT, so several writers wait on the
busy timeout instead of failing. Nothing reaches this store unredacted: the recorder
(:mod:`mesh.recording.recorder`) redacts before it calls :meth:`CallStore.add`.

``convert analyze`` writes ``clusters`` and ``members``; ``convert train CLUSTER`` reads a
cluster's calls back with :meth:`CallStore.cluster_calls`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id            TEXT PRIMARY KEY,
    created       REAL NOT NULL,
    task_id       TEXT,
    agent         TEXT NOT NULL,
    skill         TEXT,
    model         TEXT,
    parameters    INTEGER,
    backend       TEXT,
    prompt        TEXT NOT NULL,
    output_spec   TEXT,
    input         TEXT NOT NULL,
    output        TEXT,
    state         TEXT NOT NULL,
    valid         INTEGER NOT NULL,
    accepted      INTEGER,
    error         TEXT,
    latency_ms    REAL,
    input_tokens  INTEGER,
    output_tokens INTEGER,
    mean_logprob  REAL
);
CREATE INDEX IF NOT EXISTS calls_task ON calls (task_id);
CREATE TABLE IF NOT EXISTS verdicts (
    task_id  TEXT PRIMARY KEY,
    accepted INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rejections (
    task_id   TEXT PRIMARY KEY,
    reason    TEXT NOT NULL,
    corrected TEXT
);
CREATE TABLE IF NOT EXISTS clusters (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL,
    size    INTEGER NOT NULL,
    summary TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    call_id    TEXT PRIMARY KEY,
    cluster_id INTEGER NOT NULL
);
"""


@dataclass
class CallRecord:
    """One model call as recorded (already redacted).

    ``prompt`` is the agent's prompt template (``{input}`` marks the input) and
    ``output_spec`` its declared output (``{"labels": [...]}``, ``{"schema": {...}}`` or
    None for free text): together they let a student be trained and served exactly like
    the agent it replaces. ``output`` is the label, the compact JSON text, or the text.
    ``valid``: the output met the declared output; ``accepted``: a downstream consumer
    (the planner) used it, None while unknown.
    """

    id: str
    agent: str
    prompt: str
    input: str
    output: str | None
    state: str
    valid: bool
    skill: str | None = None
    model: str | None = None
    parameters: int | None = None
    backend: str | None = None
    output_spec: dict[str, Any] | None = None
    task_id: str | None = None
    accepted: bool | None = None
    error: str | None = None
    latency_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    mean_logprob: float | None = None
    created: float = field(default_factory=time.time)


@dataclass
class Cluster:
    id: int
    name: str
    size: int
    summary: dict[str, Any]
    """What ``convert analyze`` reports: agents/models serving it, examples, skill."""


_COLUMNS = [f.name for f in CallRecord.__dataclass_fields__.values()]


class CallStore:
    """Recorded calls and clusters in one SQLite file, safe to share between processes."""

    def __init__(self, path: Path | str) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> CallStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls -----------------------------------------------------------------------------

    def add(self, record: CallRecord) -> None:
        self.add_many([record])

    def add_many(self, records: Iterable[CallRecord]) -> int:
        """Writes calls in one transaction (the recorder's batches: one fsync, not one a call)."""
        rows = [_row(record) for record in records]
        if not rows:
            return 0
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(_INSERT, rows)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return len(rows)

    def mark_accepted(self, task_ids: Iterable[str], accepted: bool = True) -> int:
        """Marks the calls of these A2A task ids as used (or rejected) downstream.

        The verdict is kept by task id too, so a call its agent records after the verdict
        (recording happens off the agent's reply path) still gets it. Returns the calls marked.
        """
        ids = list(task_ids)
        if not ids:
            return 0
        marks = ", ".join("?" for _ in ids)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT OR REPLACE INTO verdicts (task_id, accepted) VALUES (?, ?)",
                [(task_id, int(accepted)) for task_id in ids],
            )
            cursor = self._db.execute(
                f"UPDATE calls SET accepted = ? WHERE task_id IN ({marks})", [int(accepted), *ids]
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return cursor.rowcount

    def reject(self, task_id: str, reason: str, corrected: str | None = None) -> None:
        """Marks one answer as rejected downstream, with why and what was sent instead.

        A negative example for the conversion loop: ``convert analyze`` filters it out of
        the training data (``not_accepted``), and the reason says what was wrong with it.
        """
        self.mark_accepted([task_id], False)
        self._db.execute(
            "INSERT OR REPLACE INTO rejections (task_id, reason, corrected) VALUES (?, ?, ?)",
            (task_id, reason, corrected),
        )

    def rejections(self) -> dict[str, tuple[str, str | None]]:
        """A2A task id -> (reason, the value sent instead) of every rejected answer."""
        rows = self._db.execute("SELECT task_id, reason, corrected FROM rejections")
        return {task_id: (reason, corrected) for task_id, reason, corrected in rows}

    def verdicts(self) -> dict[str, bool]:
        """A2A task id -> whether the planner used that answer (False: escalated past it)."""
        return {t: bool(a) for t, a in self._db.execute("SELECT task_id, accepted FROM verdicts")}

    def calls(self, *, agent: str | None = None, only_valid: bool = False) -> Iterator[CallRecord]:
        """Recorded calls, oldest first."""
        where, args = [], []
        if agent is not None:
            where.append("agent = ?")
            args.append(agent)
        if only_valid:
            where.append("valid = 1 AND state = 'completed' AND (accepted IS NULL OR accepted = 1)")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        cursor = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM calls{clause} ORDER BY created, id", args
        )
        for row in cursor:
            yield _record(row)

    def counts_by_agent(self) -> dict[str, int]:
        return {
            agent: int(n)
            for agent, n in self._db.execute("SELECT agent, count(*) FROM calls GROUP BY agent")
        }

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM calls").fetchone()[0])

    # -- clusters --------------------------------------------------------------------------

    def replace_clusters(
        self, clusters: list[tuple[str, dict[str, Any], list[str]]]
    ) -> list[Cluster]:
        """Replaces every cluster with ``(name, summary, call ids)``; ids are 1, 2, ... by order."""
        now = time.time()
        out: list[Cluster] = []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("DELETE FROM members")
            self._db.execute("DELETE FROM clusters")
            for number, (name, summary, call_ids) in enumerate(clusters, start=1):
                self._db.execute(
                    "INSERT INTO clusters (id, name, size, summary, created) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (number, name, len(call_ids), json.dumps(summary), now),
                )
                self._db.executemany(
                    "INSERT INTO members (call_id, cluster_id) VALUES (?, ?)",
                    [(call_id, number) for call_id in call_ids],
                )
                out.append(Cluster(number, name, len(call_ids), summary))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return out

    def clusters(self) -> list[Cluster]:
        rows = self._db.execute("SELECT id, name, size, summary FROM clusters ORDER BY id")
        return [Cluster(i, n, s, json.loads(m)) for i, n, s, m in rows]

    def cluster(self, key: int | str) -> Cluster | None:
        """A cluster by id (``3`` or ``"3"``) or by name."""
        for cluster in self.clusters():
            if str(cluster.id) == str(key) or cluster.name == key:
                return cluster
        return None

    def cluster_calls(self, cluster_id: int) -> list[CallRecord]:
        cursor = self._db.execute(
            f"SELECT {', '.join('c.' + c for c in _COLUMNS)} FROM calls c "
            "JOIN members m ON m.call_id = c.id WHERE m.cluster_id = ? ORDER BY c.created, c.id",
            (cluster_id,),
        )
        return [_record(row) for row in cursor]


_INSERT = (
    f"INSERT OR REPLACE INTO calls ({', '.join(_COLUMNS)}) VALUES ("
    + ", ".join(
        f":{c}"
        if c != "accepted"
        # a verdict the planner gave before the call was recorded
        else "COALESCE(:accepted, (SELECT accepted FROM verdicts WHERE task_id = :task_id))"
        for c in _COLUMNS
    )
    + ")"
)


def _row(record: CallRecord) -> dict[str, Any]:
    row = asdict(record)
    row["output_spec"] = json.dumps(record.output_spec) if record.output_spec is not None else None
    row["valid"] = int(record.valid)
    row["accepted"] = None if record.accepted is None else int(record.accepted)
    return row


def _record(row: tuple[Any, ...]) -> CallRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["output_spec"] = json.loads(values["output_spec"]) if values["output_spec"] else None
    values["valid"] = bool(values["valid"])
    values["accepted"] = None if values["accepted"] is None else bool(values["accepted"])
    return CallRecord(**values)
