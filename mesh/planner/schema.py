"""The planner's shared run tables as a versioned schema (``slmesh db upgrade``), apart from
the store so the migration command imports nothing else of the planner."""

from __future__ import annotations

from pathlib import Path

from mesh.config import Settings
from mesh.migrations import Schema

RUNS_TABLE = "slmesh_planner_runs"
STEPS_TABLE = "slmesh_planner_steps"

REVISION = "0001"
"""The run store's migration this code reads (the head of ``mesh/planner/migrations``)."""

RUNS_SCHEMA = Schema(
    name="planner run",
    image="planner",
    directory=Path(__file__).with_name("migrations"),
    version_table="planner_alembic_version",
    lock=0x534C4D10,
    revision=REVISION,
)
"""The shared run tables as ``slmesh db upgrade`` migrates them."""


def shared_runs(settings: Settings) -> bool:
    """Whether runs go to the task store's PostgreSQL database: tasks are shared there
    (``task_events='database'``), so any planner replica may take a task over."""
    url = settings.task_store
    return settings.task_events == "database" and url.split("+", 1)[0].split(":", 1)[0] in (
        "postgresql",
        "postgres",
    )
