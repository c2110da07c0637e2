"""Discovery for the mesh: agents register here, routers watch here.

Server side: :func:`start_registry_server` over a :class:`RegistryStore`. Agent side:
:class:`Registration` keeps a replica listed; :class:`RegistryView` keeps a live local copy of
the replicas; both sit on :class:`RegistryClient`.
"""

from __future__ import annotations

from mesh.proto.slmesh.registry.v1.registry_pb2 import (
    Endpoint,
    Load,
    RegisterResponse,
    Replica,
    WatchEvent,
)
from mesh.registry.backoff import Backoff
from mesh.registry.client import RegistryClient
from mesh.registry.registration import LoadProbe, Registration
from mesh.registry.service import RegistryServer, start_registry_server
from mesh.registry.store import (
    MemoryRegistryStore,
    RegistryStore,
    Subscription,
    WatchClosed,
    WatcherOverflow,
)
from mesh.registry.view import ChangeCallback, RegistryView

__all__ = [
    "Backoff",
    "ChangeCallback",
    "Endpoint",
    "Load",
    "LoadProbe",
    "MemoryRegistryStore",
    "RegisterResponse",
    "Registration",
    "RegistryClient",
    "RegistryServer",
    "RegistryStore",
    "RegistryView",
    "Replica",
    "Subscription",
    "WatchClosed",
    "WatchEvent",
    "WatcherOverflow",
    "start_registry_server",
]
