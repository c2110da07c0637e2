"""The only package that imports a2a-sdk's machinery: serve executors on three transports, call
agents.

Importing it patches nothing: entry points call :func:`install` first (mesh.a2a.sdk_spans).
The names below are imported on first use, so that importing this package imports none of
a2a-sdk's server or client modules before :func:`install` runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mesh.a2a.sdk_spans import InstallOrderError, install, installed

if TYPE_CHECKING:
    from mesh.a2a.cards import Endpoints, build_card
    from mesh.a2a.client import MeshClient, Replica, ReplicaSource, StaticReplicas
    from mesh.a2a.executor import Executor, Reporter, Request, StoredTasks
    from mesh.a2a.server import AgentServer

_LAZY = {
    "AgentServer": "mesh.a2a.server",
    "Endpoints": "mesh.a2a.cards",
    "Executor": "mesh.a2a.executor",
    "MeshClient": "mesh.a2a.client",
    "Replica": "mesh.a2a.client",
    "ReplicaSource": "mesh.a2a.client",
    "Reporter": "mesh.a2a.executor",
    "Request": "mesh.a2a.executor",
    "StaticReplicas": "mesh.a2a.client",
    "StoredTasks": "mesh.a2a.executor",
    "build_card": "mesh.a2a.cards",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mesh.a2a' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AgentServer",
    "Endpoints",
    "Executor",
    "InstallOrderError",
    "MeshClient",
    "Replica",
    "ReplicaSource",
    "Reporter",
    "Request",
    "StaticReplicas",
    "StoredTasks",
    "build_card",
    "install",
    "installed",
]
