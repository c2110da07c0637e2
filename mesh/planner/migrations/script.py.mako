"""${message}

Revision ${up_revision} (after ${down_revision | comma,n}); say here whether it expands or
contracts (mesh/planner/migrations/__init__.py) and bump mesh.planner.store.REVISION with it.
"""

from __future__ import annotations

from alembic import op

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
