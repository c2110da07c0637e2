"""Keeps one replica registered for as long as it runs.

The registry is soft state: it forgets replicas on restart or when heartbeats stop. So the
replica, not the registry, is responsible for being listed: it registers, heartbeats, and
registers again whenever the registry says it does not know it or cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import grpc

from mesh.proto.slmesh.registry.v1 import registry_pb2 as pb
from mesh.registry.backoff import Backoff
from mesh.registry.client import RegistryClient

log = logging.getLogger(__name__)

LoadProbe = Callable[[], pb.Load]
"""Reports the replica's current load; called before every heartbeat."""


class Registration:
    """Registers ``replica`` through ``client`` and keeps it registered in the background.

    ``heartbeat_interval_s`` is used until the registry answers with its own interval.
    Failures never escape the background task: they are logged and retried with ``backoff``.
    """

    def __init__(
        self,
        client: RegistryClient,
        replica: pb.Replica,
        load: LoadProbe | None = None,
        *,
        heartbeat_interval_s: float = 2.0,
        backoff: Backoff | None = None,
        deregister_timeout_s: float = 1.0,
    ) -> None:
        if not replica.replica_id:
            raise ValueError("replica.replica_id is required")
        self._client = client
        self._replica = pb.Replica()
        self._replica.CopyFrom(replica)
        self._load = load
        self._interval_s = heartbeat_interval_s
        self._backoff = backoff or Backoff()
        self._deregister_timeout_s = deregister_timeout_s
        self._registered = asyncio.Event()
        self._may_be_registered = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def replica_id(self) -> str:
        return self._replica.replica_id

    @property
    def registered(self) -> bool:
        """Whether the registry acknowledged the replica and has not disowned it since."""
        return self._registered.is_set()

    @property
    def draining(self) -> bool:
        return self._replica.draining

    async def wait_registered(self, timeout: float | None = None) -> bool:
        """Waits until registered; False if ``timeout`` seconds pass first."""
        try:
            await asyncio.wait_for(self._registered.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def start(self) -> None:
        """Starts registering and heartbeating in the background; returns at once."""
        if self._task is None:
            self._task = asyncio.create_task(
                self._run(), name=f"registration-{self._replica.replica_id}"
            )

    def set_draining(self, draining: bool = True) -> None:
        """Marks the replica as (not) draining and tells the registry right away."""
        self._replica.draining = draining
        self._wake.set()

    async def stop(self) -> None:
        """Stops heartbeating and deregisters, giving up after a short deadline."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self._registered.clear()
        if not self._may_be_registered:
            return
        try:
            await self._client.deregister(
                self._replica.replica_id, timeout_s=self._deregister_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "could not deregister %s (%s); the registry will expire it",
                self._replica.replica_id,
                exc.code().name,
            )

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                delay = await self._step()
                attempt = 0
            except grpc.aio.AioRpcError as exc:
                self._registered.clear()
                delay = self._backoff.delay(attempt)
                level = logging.WARNING if attempt == 0 else logging.DEBUG
                log.log(
                    level,
                    "registry %s: %s %s; retrying in %.2fs",
                    self._client.address,
                    exc.code().name,
                    exc.details(),
                    delay,
                )
                attempt += 1
            except Exception:
                self._registered.clear()
                delay = self._backoff.delay(attempt)
                log.exception("registration of %s failed", self._replica.replica_id)
                attempt += 1
            await self._sleep(delay)

    async def _step(self) -> float:
        """Registers or heartbeats once; returns how long to wait before the next step."""
        if not self._registered.is_set():
            self._may_be_registered = True
            response = await self._client.register(self._current())
            if response.heartbeat_interval_seconds > 0:
                self._interval_s = response.heartbeat_interval_seconds
            self._registered.set()
            log.info("registered %s at %s", self._replica.replica_id, self._client.address)
            return self._interval_s
        known = await self._client.heartbeat(
            self._replica.replica_id, self._probe(), self._replica.draining
        )
        if not known:
            self._registered.clear()
            log.warning("registry forgot %s; registering again", self._replica.replica_id)
            return 0.0
        return self._interval_s

    def _current(self) -> pb.Replica:
        replica = pb.Replica()
        replica.CopyFrom(self._replica)
        load = self._probe()
        if load is not None:
            replica.load.CopyFrom(load)
        return replica

    def _probe(self) -> pb.Load | None:
        """The current load, or None (keep the last one) when there is no probe or it fails."""
        if self._load is None:
            return None
        try:
            return self._load()
        except Exception:
            log.exception("load probe of %s failed; keeping the last load", self.replica_id)
            return None

    async def _sleep(self, delay: float) -> None:
        """Sleeps ``delay`` seconds, or less when :meth:`set_draining` wants a heartbeat now."""
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
        self._wake.clear()
