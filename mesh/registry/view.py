"""A live, local copy of the registry, fed by Watch.

Routers read replicas from memory instead of asking the registry per request. When the
registry is unreachable the view keeps what it last knew, so agents keep serving the peers
they know. It reconnects resuming after the last revision it applied (the changes it
missed, nothing twice), or, when the registry cannot resume from there (another registry's
revisions, a pruned change log), swaps in a fresh snapshot once a new Watch has synced.
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

EventType = pb.WatchEvent.Type

ChangeCallback = Callable[[pb.WatchEvent], None]
"""Told of every change to the view; after a resync it gets the differences, then SYNCED."""


class RegistryView:
    """Replicas of ``agent`` (all agents when empty) as last seen through ``client``.

    Replicas handed out are the view's own messages: read them, do not modify them.
    """

    def __init__(
        self,
        client: RegistryClient,
        agent: str = "",
        *,
        on_change: ChangeCallback | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._client = client
        self._agent = agent
        self._on_change = on_change
        self._backoff = backoff or Backoff()
        self._replicas: dict[str, pb.Replica] = {}
        self._revision = 0
        """The registry revision the view reflects; 0 until a stream told it one."""
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def synced(self) -> bool:
        """True while the watch is connected and its snapshot applied, i.e. the view is live.

        False before the first snapshot and while reconnecting; the last view is kept then.
        """
        return self._synced.is_set()

    def replicas(self, agent: str = "") -> list[pb.Replica]:
        """Known replicas of ``agent`` (all when empty), by agent then replica_id."""
        return sorted(
            (r for r in self._replicas.values() if not agent or r.agent == agent),
            key=lambda r: (r.agent, r.replica_id),
        )

    @property
    def revision(self) -> int:
        """The registry revision the view reflects (0 before the first snapshot)."""
        return self._revision

    def agents(self) -> list[str]:
        """Names of the agents with at least one known replica, sorted."""
        return sorted({r.agent for r in self._replicas.values()})

    async def wait_synced(self, timeout: float | None = None) -> bool:
        """Waits until the view is live; False if ``timeout`` seconds pass first."""
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def start(self) -> None:
        """Starts watching in the background; returns at once."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"registry-view-{self._agent}")

    async def stop(self) -> None:
        """Stops watching; the last view stays readable."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self._synced.clear()

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._follow()
                reason = "stream ended"
            except grpc.aio.AioRpcError as exc:
                reason = f"{exc.code().name}: {exc.details()}"
                if exc.code() == grpc.StatusCode.OUT_OF_RANGE:
                    self._revision = 0  # cannot resume there: a snapshot next, at once
                    self._synced.clear()
                    continue
            except Exception as exc:
                log.exception("registry view failed while applying a watch stream")
                reason = f"{type(exc).__name__}: {exc}"
            if self._synced.is_set():
                attempt = 0
            self._synced.clear()
            delay = self._backoff.delay(attempt)
            attempt += 1
            log.log(
                logging.WARNING if attempt == 1 else logging.DEBUG,
                "registry watch at %s lost (%s); keeping %d known replicas, retrying in %.2fs",
                self._client.address,
                reason,
                len(self._replicas),
                delay,
            )
            await asyncio.sleep(delay)

    async def _follow(self) -> None:
        """Applies one Watch stream: collects the snapshot, swaps it in at SYNCED, then
        applies changes until the stream ends; resuming, applies the missed changes at once
        and is live again at SYNCED."""
        resume = self._revision
        snapshot: dict[str, pb.Replica] | None = None if resume else {}
        stream = self._client.watch(self._agent, since_revision=resume)
        async with contextlib.aclosing(stream) as events:
            async for event in events:
                if event.type == EventType.SYNCED:
                    if snapshot is not None:
                        self._replace(snapshot)
                        snapshot = None
                    else:
                        self._synced.set()
                        self._notify(event)
                    self._revision = max(self._revision, event.revision)
                elif snapshot is None:
                    self._apply(event)
                    self._revision = max(self._revision, event.revision)
                elif event.type == EventType.REMOVED:
                    snapshot.pop(event.replica.replica_id, None)
                else:
                    snapshot[event.replica.replica_id] = event.replica

    def _apply(self, event: pb.WatchEvent) -> None:
        replica_id = event.replica.replica_id
        if event.type == EventType.REMOVED:
            if self._replicas.pop(replica_id, None) is None:
                return
        elif event.type in (EventType.ADDED, EventType.UPDATED):
            self._replicas[replica_id] = event.replica
        else:
            return
        self._notify(event)

    def _replace(self, snapshot: dict[str, pb.Replica]) -> None:
        """Swaps in a fresh snapshot and reports how it differs from the old view."""
        old, self._replicas = self._replicas, snapshot
        changes = [
            pb.WatchEvent(type=EventType.REMOVED, replica=r)
            for rid, r in old.items()
            if rid not in snapshot
        ]
        for rid, replica in snapshot.items():
            if rid not in old:
                changes.append(pb.WatchEvent(type=EventType.ADDED, replica=replica))
            elif old[rid] != replica:
                changes.append(pb.WatchEvent(type=EventType.UPDATED, replica=replica))
        self._synced.set()
        log.debug("registry view synced: %d replicas", len(snapshot))
        for change in changes:
            self._notify(change)
        self._notify(pb.WatchEvent(type=EventType.SYNCED))

    def _notify(self, event: pb.WatchEvent) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(event)
        except Exception:
            log.exception("registry view on_change callback failed")
