"""Replica sources for the mesh client, fed by the registry.

One code path for every environment: the client asks a :class:`ReplicaSource`; locally and
in compose that is the registry (a one-shot ``List`` for CLI commands, a live ``Watch`` view
for long-running callers such as the planner).
"""

from __future__ import annotations

from mesh.a2a.client import MeshClient, Replica, StaticReplicas
from mesh.config import Settings
from mesh.proto.slmesh.registry.v1 import registry_pb2 as rpb
from mesh.registry import RegistryClient, RegistryView
from mesh.tls import TlsFiles


def replica_from_registry(entry: rpb.Replica) -> Replica:
    """The client's view of one registry entry."""
    return Replica(
        agent=entry.agent,
        replica_id=entry.replica_id,
        urls={e.transport: e.url for e in entry.endpoints},
        draining=entry.draining,
        card_json=entry.card_json,
    )


async def snapshot(
    registry: str, agent: str = "", token: str | None = None, tls: TlsFiles | None = None
) -> StaticReplicas:
    """A one-shot view of the registry (``List``), for short-lived callers like the CLI."""
    async with RegistryClient(registry, token=token, tls=tls) as client:
        entries = await client.list(agent=agent)
    return StaticReplicas([replica_from_registry(e) for e in entries])


class RegistryReplicas:
    """A live view (``Watch``) of the registry; keeps the last view while it is down."""

    def __init__(self, view: RegistryView) -> None:
        self.view = view

    def replicas(self, agent: str) -> list[Replica]:
        return [replica_from_registry(e) for e in self.view.replicas(agent)]


async def watched_client(settings: Settings) -> tuple[MeshClient, RegistryView]:
    """A mesh client fed by a live, synced view of ``settings.registry`` (long-running callers)."""
    view = RegistryView(RegistryClient.from_settings(settings))
    view.start()
    await view.wait_synced(timeout=10.0)  # unsynced after that: replicas show up as they come
    return MeshClient(RegistryReplicas(view), settings), view
