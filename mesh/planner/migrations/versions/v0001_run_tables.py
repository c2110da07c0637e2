"""The planner's runs and finished steps, shared by its replicas (mesh/planner/store.py).

Expand: creates both tables, or adopts them where a planner before migrations created them
at start (the same definitions, IF NOT EXISTS).
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_STATEMENTS = (
    "CREATE TABLE IF NOT EXISTS slmesh_planner_runs (planner TEXT NOT NULL, "
    "task_id TEXT NOT NULL, context_id TEXT NOT NULL, source TEXT NOT NULL, plan TEXT NOT NULL, "
    "input TEXT NOT NULL, state TEXT NOT NULL, error TEXT, "
    "created TIMESTAMPTZ NOT NULL DEFAULT now(), updated TIMESTAMPTZ NOT NULL DEFAULT now(), "
    "PRIMARY KEY (planner, task_id))",
    "CREATE INDEX IF NOT EXISTS slmesh_planner_runs_unfinished ON slmesh_planner_runs "
    "(planner, created) WHERE state = 'working'",
    "CREATE TABLE IF NOT EXISTS slmesh_planner_steps (planner TEXT NOT NULL, "
    "task_id TEXT NOT NULL, node TEXT NOT NULL, status TEXT NOT NULL, outcome TEXT NOT NULL, "
    "PRIMARY KEY (planner, task_id, node))",
)


def upgrade() -> None:
    for statement in _STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE slmesh_planner_steps")
    op.execute("DROP TABLE slmesh_planner_runs")
