"""Alembic migrations of the planner's shared run store on PostgreSQL (``slmesh db upgrade``
runs them; version table ``planner_alembic_version``, beside the order database's).

Expand/contract as the order database's (:mod:`mesh.tools.migrations`): an expanding
revision keeps the previous planner working during a rolling upgrade; a planner on an older
schema refuses to start and names the command. Revision ids are zero-padded numbers.
"""
