"""Alembic migrations of the order database on PostgreSQL (``slmesh db upgrade`` runs them).

Expand/contract: a revision either *expands* (adds tables, nullable columns, indexes: code
of the previous revision keeps working on it, so old and new replicas run side by side
during a rolling upgrade) or *contracts* (drops what no running code reads any more, once
every replica runs the new code), and a contract raises ``meta.compatible_from`` so older
code refuses to start instead of failing per call. Revision ids are zero-padded numbers.
"""
