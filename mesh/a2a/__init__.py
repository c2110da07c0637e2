"""The only package that imports a2a-sdk: serve executors on three transports, call agents."""

from mesh.a2a.cards import Endpoints, build_card
from mesh.a2a.client import MeshClient, Replica, ReplicaSource, StaticReplicas
from mesh.a2a.server import AgentServer
from mesh.a2a.tasks import open_task

__all__ = [
    "AgentServer",
    "Endpoints",
    "MeshClient",
    "Replica",
    "ReplicaSource",
    "StaticReplicas",
    "build_card",
    "open_task",
]
