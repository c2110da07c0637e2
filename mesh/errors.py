"""The mesh's own errors: few, and each message says what to do about it.

They are translated once, at a protocol boundary (an A2A failed task, a gRPC status or a
CLI exit code); code between boundaries lets them travel.
"""

from __future__ import annotations


class MeshError(Exception):
    """Base of every error the mesh raises on purpose."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class NoReplicaError(MeshError):
    """No live replica serves the agent (none registered, all draining, or all failed)."""

    def __init__(self, agent: str, detail: str = "") -> None:
        hint = "is it started and registered? see `slmesh agents`"
        super().__init__(
            f"no replica of agent {agent!r} is available{': ' + detail if detail else ''} ({hint})"
        )
        self.agent = agent


class DeadlineExceededError(MeshError):
    """A call did not finish within its deadline, retries included."""
