"""The registry's own metrics: live replicas per agent, registrations, expiries, watch clients.

Recorded on the mesh's meter (:mod:`mesh.telemetry`), so they are in the process's Prometheus
exposition (the registry serves it on ``SLMESH_METRICS_PORT``) and pushed over OTLP where
``OTEL_METRICS_EXPORTER`` asks. Each registry replica counts the registrations it accepted and
the replicas its own sweep expired; the replica gauge is the store's (shared) truth, read at
each sweep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from mesh.telemetry import names


class RegistryMetrics:
    """The registry's instruments; ``watch_clients`` reads the number of open Watch streams."""

    def __init__(self, meter: Meter, watch_clients: Callable[[], int]) -> None:
        self._replicas: dict[str, int] = {}
        self._watch_clients = watch_clients
        self.registrations = meter.create_counter(
            names.M_REGISTRY_REGISTRATIONS,
            unit="{registration}",
            description="Registrations accepted by this registry replica, by agent.",
        )
        self.expiries = meter.create_counter(
            names.M_REGISTRY_EXPIRIES,
            unit="{replica}",
            description="Replicas this registry replica expired (no heartbeat within the TTL).",
        )
        meter.create_observable_gauge(
            names.M_REGISTRY_REPLICAS,
            callbacks=[self._observe_replicas],
            unit="{replica}",
            description="Live replicas by agent, as of the last expiry sweep.",
        )
        meter.create_observable_gauge(
            names.M_REGISTRY_WATCH_CLIENTS,
            callbacks=[self._observe_watch_clients],
            unit="{stream}",
            description="Open Watch streams on this registry replica.",
        )

    def registered(self, agent: str) -> None:
        self.registrations.add(1, {names.AGENT_NAME: agent})

    def expired(self, agent: str) -> None:
        self.expiries.add(1, {names.AGENT_NAME: agent})

    def set_replicas(self, counts: dict[str, int]) -> None:
        """The store's live replicas per agent; an agent seen before and now gone reads 0."""
        self._replicas = {**dict.fromkeys(self._replicas, 0), **counts}

    def _observe_replicas(self, _: CallbackOptions) -> Iterable[Observation]:
        for agent, count in self._replicas.items():
            yield Observation(count, {names.AGENT_NAME: agent})

    def _observe_watch_clients(self, _: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self._watch_clients())
