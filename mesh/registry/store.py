"""Where the registry keeps replicas, and how watchers learn about changes.

The gRPC service is a thin shell over a :class:`RegistryStore`, so the storage changes
without touching the wire protocol. :class:`MemoryRegistryStore` is the embedded default: the
registry is soft state that agents rebuild by re-registering, so losing it on restart is
acceptable. :class:`mesh.registry.postgres.PostgresRegistryStore` keeps it in PostgreSQL,
so several registry replicas serve one truth.

Every change gets a *revision*, one more than the change before, so a watcher that lost its
stream resumes after the last revision it received instead of starting over.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from mesh.proto.slmesh.registry.v1 import registry_pb2 as pb

Clock = Callable[[], float]
"""Seconds since the epoch; injectable so tests can move time by hand."""

EventType = pb.WatchEvent.Type


class WatchClosed(Exception):
    """The store ended a watch early; the message says why and the watcher should resync."""


class WatcherOverflow(WatchClosed):
    """A watcher fell so far behind that its queue filled; it was dropped to protect the others."""


class RevisionUnavailable(Exception):
    """A watch cannot resume after this revision (pruned from the change log, newer than the
    store, or another store's): watch again from a snapshot."""


class StoreUnavailable(Exception):
    """The store's database cannot be reached; nothing was changed, and the call may be
    retried (on another registry replica)."""


@dataclass(frozen=True)
class _End:
    """Queue marker: the stream is over, normally (``error is None``) or with an error."""

    error: WatchClosed | None


class Subscription:
    """One watcher's event stream: the snapshot (or the changes since the revision it resumes
    after), SYNCED, then changes, in order.

    Iterate it with ``async for``. Each watcher has its own bounded queue, so a slow consumer
    only ever hurts itself: when its queue is full it is closed with :class:`WatcherOverflow`.
    Events are shared between watchers; treat them as read-only. Live changes at or below
    ``after`` are dropped: the store put them in the backlog already (:meth:`prime`).
    """

    def __init__(
        self,
        agent: str,
        max_pending: int,
        on_close: Callable[[Subscription], None],
        *,
        after: int = 0,
    ) -> None:
        self.agent = agent
        self._max_pending = max_pending
        self._on_close = on_close
        self._after = after
        self._snapshot: deque[pb.WatchEvent] = deque()
        self._queue: asyncio.Queue[pb.WatchEvent | _End] = asyncio.Queue()
        self._closed = False

    def prime(
        self, snapshot: list[pb.Replica], backlog: list[pb.WatchEvent], revision: int
    ) -> None:
        """What the stream yields before live changes: ADDED per ``snapshot`` replica, the
        ``backlog`` changes, then SYNCED at ``revision``."""
        self._snapshot.extend(
            pb.WatchEvent(type=EventType.ADDED, replica=r, revision=revision) for r in snapshot
        )
        self._snapshot.extend(e for e in backlog if self.matches(e.replica))
        self._snapshot.append(pb.WatchEvent(type=EventType.SYNCED, revision=revision))

    @property
    def closed(self) -> bool:
        """True once the stream was closed, by the consumer or by the store."""
        return self._closed

    def matches(self, replica: pb.Replica) -> bool:
        """Whether this watcher wants events about ``replica``."""
        return not self.agent or replica.agent == self.agent

    def offer(self, event: pb.WatchEvent) -> bool:
        """Queues a change without ever waiting; False (and closed) when the watcher is full."""
        if self._closed:
            return False
        if event.revision and event.revision <= self._after:
            return True
        if self._queue.qsize() >= self._max_pending:
            self.close(
                WatcherOverflow(
                    f"watcher fell behind: {self._max_pending} events were pending; "
                    "watch again to resync"
                )
            )
            return False
        self._queue.put_nowait(event)
        return True

    def close(self, error: WatchClosed | None = None) -> None:
        """Ends the stream; pending events are dropped, and ``error`` is raised to the consumer."""
        if self._closed:
            return
        self._closed = True
        self._snapshot.clear()
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_End(error))
        self._on_close(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> pb.WatchEvent:
        if self._snapshot:
            return self._snapshot.popleft()
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item


class RegistryStore(ABC):
    """Storage contract of the registry.

    - Replicas are keyed by ``replica_id``; registering an id again replaces the entry.
    - The store owns ``registered_at`` and ``last_heartbeat``, and hands out copies: callers
      never hold the store's own messages.
    - A replica whose last heartbeat is more than :attr:`ttl_s` old no longer exists: it is not
      listed and its heartbeat answers unknown. :meth:`expire` removes such replicas and tells
      watchers (REMOVED); the server calls it periodically so watchers hear promptly.
    - :meth:`watch` returns a :class:`Subscription` yielding one ADDED per current replica,
      one SYNCED, then every change (ADDED, UPDATED when a replica re-registers or its load
      or draining flag changes, REMOVED on deregistration or expiry), with nothing lost or
      repeated between snapshot and changes. Publishing never waits on a watcher; one that
      falls behind is closed with :class:`WatcherOverflow`.
    - Every change carries a revision one above the change before it. ``watch(since_revision=N)``
      yields no snapshot but every change after N, SYNCED, then live changes; a revision the
      store cannot resume after raises :class:`RevisionUnavailable`.
    - A store on a database raises :class:`StoreUnavailable` when it cannot reach it, and is
      not :attr:`available` while cut off from it.
    - Methods are called from one asyncio event loop; implementations need not be thread-safe.
    """

    async def start(self) -> None:
        """Connects and prepares the store; called once before any other method."""
        return None

    async def aclose(self) -> None:
        """Releases connections and ends open watches."""
        return None

    @property
    def available(self) -> bool:
        """Whether the store can serve what is true now; a registry whose store is not
        reports NOT_SERVING (always True for a store in the process's own memory)."""
        return True

    @property
    @abstractmethod
    def ttl_s(self) -> float:
        """Seconds without a heartbeat after which a replica is expired."""

    @abstractmethod
    async def register(self, replica: pb.Replica) -> pb.Replica:
        """Adds or replaces ``replica``; returns it as stored, timestamps set."""

    @abstractmethod
    async def heartbeat(self, replica_id: str, load: pb.Load | None, draining: bool) -> bool:
        """Refreshes a replica (``load=None`` keeps the last load); False when it is unknown."""

    @abstractmethod
    async def deregister(self, replica_id: str) -> bool:
        """Removes a replica; False when it was not registered."""

    @abstractmethod
    async def list(self, agent: str = "", skill: str = "") -> builtins.list[pb.Replica]:
        """Live replicas matching both filters (empty matches all), by agent then replica_id."""

    @abstractmethod
    async def expire(self) -> builtins.list[pb.Replica]:
        """Removes replicas whose TTL has passed and returns them."""

    async def counts(self) -> dict[str, int]:
        """Live replicas per agent (the registry's replicas gauge)."""
        return dict(Counter(r.agent for r in await self.list()))

    @abstractmethod
    async def watch(self, agent: str = "", since_revision: int = 0) -> Subscription:
        """Subscribes to replicas of ``agent`` (all when empty), from a snapshot or after
        ``since_revision``; close it when done."""


class MemoryRegistryStore(RegistryStore):
    """Replicas in a dict; the default store of a single registry process."""

    def __init__(
        self,
        ttl_s: float,
        *,
        clock: Clock = time.time,
        watch_queue_size: int = 1024,
        change_log_size: int = 10_000,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        if watch_queue_size <= 0:
            raise ValueError(f"watch_queue_size must be positive, got {watch_queue_size}")
        self._ttl_s = ttl_s
        self._clock = clock
        self._watch_queue_size = watch_queue_size
        self._replicas: dict[str, pb.Replica] = {}
        self._last_seen: dict[str, float] = {}
        self._watches: set[Subscription] = set()
        # Revisions start at the creation time in microseconds, so a revision from an earlier
        # registry process is below this one's log and resuming after it resyncs.
        self._revision = round(clock() * 1_000_000)
        self._floor = self._revision
        self._log: deque[pb.WatchEvent] = deque(maxlen=change_log_size)

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    @property
    def watcher_count(self) -> int:
        """Open watches; lets tests and metrics see that closed watchers are released."""
        return len(self._watches)

    async def register(self, replica: pb.Replica) -> pb.Replica:
        if not replica.replica_id:
            raise ValueError("replica_id is required")
        self._sweep()
        now = self._clock()
        stored = _copy(replica)
        stored.registered_at.FromNanoseconds(_nanos(now))
        stored.last_heartbeat.FromNanoseconds(_nanos(now))
        previous = self._replicas.get(stored.replica_id)
        self._replicas[stored.replica_id] = stored
        self._last_seen[stored.replica_id] = now
        if previous is None:
            self._publish(EventType.ADDED, stored)
        elif previous.agent != stored.agent:
            self._publish(EventType.REMOVED, previous)
            self._publish(EventType.ADDED, stored)
        else:
            self._publish(EventType.UPDATED, stored)
        return _copy(stored)

    async def heartbeat(self, replica_id: str, load: pb.Load | None, draining: bool) -> bool:
        self._sweep()
        current = self._replicas.get(replica_id)
        if current is None:
            return False
        now = self._clock()
        updated = _copy(current)
        updated.last_heartbeat.FromNanoseconds(_nanos(now))
        if load is not None:
            updated.load.CopyFrom(load)
        updated.draining = draining
        self._replicas[replica_id] = updated
        self._last_seen[replica_id] = now
        if updated.load != current.load or updated.draining != current.draining:
            self._publish(EventType.UPDATED, updated)
        return True

    async def deregister(self, replica_id: str) -> bool:
        self._sweep()
        removed = self._remove(replica_id)
        if removed is None:
            return False
        self._publish(EventType.REMOVED, removed)
        return True

    async def list(self, agent: str = "", skill: str = "") -> builtins.list[pb.Replica]:
        self._sweep()
        return [
            _copy(r)
            for r in self._sorted()
            if (not agent or r.agent == agent) and (not skill or skill in r.skills)
        ]

    async def expire(self) -> builtins.list[pb.Replica]:
        return self._sweep()

    async def watch(self, agent: str = "", since_revision: int = 0) -> Subscription:
        self._sweep()
        if since_revision and not self._floor <= since_revision <= self._revision:
            raise RevisionUnavailable(
                f"cannot resume after revision {since_revision}: this registry holds changes "
                f"after {self._floor} up to {self._revision}; watch again without a revision"
            )
        watch = Subscription(
            agent, self._watch_queue_size, self._watches.discard, after=self._revision
        )
        if since_revision:
            backlog = [e for e in self._log if e.revision > since_revision]
            watch.prime([], backlog, self._revision)
        else:
            snapshot = [_copy(r) for r in self._sorted() if not agent or r.agent == agent]
            watch.prime(snapshot, [], self._revision)
        self._watches.add(watch)
        return watch

    def _sweep(self) -> builtins.list[pb.Replica]:
        """Removes expired replicas; every operation sweeps first, so none outlives its TTL."""
        deadline = self._clock() - self._ttl_s
        expired = [rid for rid, seen in self._last_seen.items() if seen < deadline]
        removed = [r for r in map(self._remove, expired) if r is not None]
        for replica in removed:
            self._publish(EventType.REMOVED, replica)
        return [_copy(r) for r in removed]

    def _remove(self, replica_id: str) -> pb.Replica | None:
        self._last_seen.pop(replica_id, None)
        return self._replicas.pop(replica_id, None)

    def _sorted(self) -> builtins.list[pb.Replica]:
        return sorted(self._replicas.values(), key=lambda r: (r.agent, r.replica_id))

    def _publish(self, type_: pb.WatchEvent.Type, replica: pb.Replica) -> None:
        self._revision += 1
        event = pb.WatchEvent(type=type_, replica=replica, revision=self._revision)
        if len(self._log) == self._log.maxlen:
            self._floor = self._log[0].revision
        self._log.append(event)
        for watch in list(self._watches):
            if watch.matches(replica):
                watch.offer(event)


def _copy(replica: pb.Replica) -> pb.Replica:
    copy = pb.Replica()
    copy.CopyFrom(replica)
    return copy


def _nanos(seconds: float) -> int:
    return round(seconds * 1_000_000_000)
