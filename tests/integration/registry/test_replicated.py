"""Two registry processes on one PostgreSQL database (the test's own, dropped after): one
truth through either, a change feed that reaches watchers of both, watches that resume by
revision, and a registry replica killed -9 under load costing nothing."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.proto.slmesh.registry.v1 import registry_pb2 as pb
from mesh.registry import Backoff, Registration, RegistryClient, RegistryView
from tests.integration.registry.test_service import replica
from tests.support.postgres import scratch_database
from tests.support.procs import ServiceProcess, start_registry
from tests.support.proxy import Proxy

pytestmark = pytest.mark.integration

TTL_S = 3.0
FAST = {"SLMESH_REGISTRY_TTL_S": str(TTL_S), "SLMESH_HEARTBEAT_INTERVAL_S": "0.5"}
RETRY = Backoff(initial_s=0.05, max_s=0.3)
ADDED, UPDATED, REMOVED, SYNCED = (
    pb.WatchEvent.ADDED,
    pb.WatchEvent.UPDATED,
    pb.WatchEvent.REMOVED,
    pb.WatchEvent.SYNCED,
)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def database() -> Iterator[str]:
    with scratch_database("registry") as url:
        yield url


@pytest.fixture
def registries(tmp_path: Path, database: str) -> Iterator[list[ServiceProcess]]:
    env = {**FAST, "SLMESH_REGISTRY_DATABASE": database}
    procs: list[ServiceProcess] = []
    try:
        for i in range(2):
            procs.append(start_registry(_tmp(tmp_path / f"r{i}"), env=env))
        yield procs
    finally:
        for proc in procs:
            proc.kill()


def _tmp(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


async def eventually(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        await asyncio.sleep(0.05)


class Recorder:
    """Every event of one raw Watch stream, in arrival order."""

    def __init__(self, client: RegistryClient, since_revision: int = 0) -> None:
        self.events: list[pb.WatchEvent] = []
        self.error: grpc.aio.AioRpcError | None = None
        self._stream = client.watch(since_revision=since_revision)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for event in self._stream:
                self.events.append(event)
        except grpc.aio.AioRpcError as exc:
            self.error = exc

    def changes(self) -> list[pb.WatchEvent]:
        """The events after SYNCED."""
        types = [e.type for e in self.events]
        return self.events[types.index(SYNCED) + 1 :] if SYNCED in types else []

    def synced(self) -> bool:
        return any(e.type == SYNCED for e in self.events)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._stream.aclose()


@contextlib.asynccontextmanager
async def client(*procs: ServiceProcess) -> AsyncIterator[RegistryClient]:
    async with RegistryClient(",".join(p.grpc_target for p in procs), timeout_s=2.0) as made:
        yield made


def _ids(replicas: list[pb.Replica]) -> set[str]:
    return {r.replica_id for r in replicas}


async def test_two_registries_share_one_truth_and_one_change_feed(
    registries: list[ServiceProcess],
) -> None:
    a, b = registries
    async with client(a) as on_a, client(b) as on_b:
        feed_b = Recorder(on_b)
        await eventually(feed_b.synced, what="watch on B synced")
        await on_a.register(replica("x-1", agent="x"))
        await on_a.heartbeat("x-1", pb.Load(in_flight=3))
        assert _ids(await on_b.list(agent="x")) == {"x-1"}
        assert (await on_b.list(agent="x"))[0].load.in_flight == 3
        assert await on_b.deregister("x-1")
        assert await on_a.list(agent="x") == []
        await eventually(lambda: len(feed_b.changes()) == 3, what="B's watcher hears A's changes")
        changes = feed_b.changes()
        assert [e.type for e in changes] == [ADDED, UPDATED, REMOVED]
        revisions = [e.revision for e in changes]
        assert revisions == list(range(revisions[0], revisions[0] + 3))  # gapless, in order
        # Resuming on A after the first change gives exactly the two after it, then SYNCED.
        resumed = Recorder(on_a, since_revision=revisions[0])
        await eventually(resumed.synced, what="resumed watch synced")
        assert [(e.type, e.revision) for e in resumed.events] == [
            (UPDATED, revisions[1]),
            (REMOVED, revisions[2]),
            (SYNCED, revisions[2]),
        ]
        stale = Recorder(on_a, since_revision=12345)  # not a revision of this registry
        await eventually(lambda: stale.error is not None, what="OUT_OF_RANGE")
        assert stale.error is not None
        assert stale.error.code() == grpc.StatusCode.OUT_OF_RANGE
        for recorder in (feed_b, resumed, stale):
            await recorder.close()


async def test_killing_one_registry_under_load_loses_no_registration_drain_or_watch_event(
    registries: list[ServiceProcess],
) -> None:
    a, b = registries
    async with client(a, b) as both, client(b) as on_b, client(a) as on_a:
        # Load: 20 replicas heartbeating every 0.5 s with a changing load, through A first.
        beats = itertools.count()
        registrations = [
            Registration(
                both,
                replica(f"busy-{i}", agent="busy"),
                lambda: pb.Load(in_flight=next(beats) % 7),
                heartbeat_interval_s=0.5,
                backoff=RETRY,
            )
            for i in range(20)
        ]
        for registration in registrations:
            registration.start()
        view = RegistryView(both, backoff=RETRY)
        view.start()
        feed_b = Recorder(on_b)  # connected to B throughout: the full log
        feed_a = Recorder(on_a)
        await eventually(lambda: all(r.registered for r in registrations), what="registered")
        await eventually(lambda: len(view.replicas("busy")) == 20, what="view has all 20")
        # A replica that will go silent without deregistering: it must expire by TTL.
        await both.register(replica("silent-1", agent="silent"))
        await eventually(lambda: view.replicas("silent"), what="view sees the silent one")
        await asyncio.sleep(1.0)
        revision_at_kill = max(e.revision for e in feed_a.events)

        a.kill()  # kill -9 under load
        killed_at = time.monotonic()

        # Writes continue through B: a drain, a new registration, a deregistration.
        registrations[0].set_draining()
        late = Registration(both, replica("late-1", agent="late"), backoff=RETRY)
        late.start()
        await registrations[1].stop()  # deregisters
        await eventually(
            lambda: any(r.replica_id == "busy-0" and r.draining for r in view.replicas("busy")),
            what="the drain reaches the view",
        )
        await eventually(lambda: view.replicas("late"), what="the late registration in the view")
        await eventually(
            lambda: "busy-1" not in _ids(view.replicas("busy")), what="the deregistration"
        )
        # Nothing stale stays listed past its TTL (B's sweep; the view hears it from B).
        await eventually(
            lambda: not view.replicas("silent"), timeout=TTL_S + 3, what="silent one expired"
        )
        assert time.monotonic() - killed_at < TTL_S + 3
        assert await on_b.list(agent="silent") == []
        assert all(r.registered for r in registrations[2:])
        await asyncio.sleep(1.0)  # more heartbeats through B only

        # The view followed B: it holds exactly what B lists.
        listed = {r.replica_id: (r.draining, r.load.in_flight) for r in await on_b.list()}
        await eventually(
            lambda: (
                {r.replica_id: (r.draining, r.load.in_flight) for r in view.replicas()} == listed
            ),
            what="view equal to B's list",
        )
        assert view.revision > revision_at_kill

        # B's watcher saw every change, A's and B's, each revision once and in order; a
        # watch resuming on B after A's last event gets exactly the rest of that log.
        resumed = Recorder(on_b, since_revision=revision_at_kill)
        await eventually(resumed.synced, what="resumed on B")
        at_sync = [e.type for e in resumed.events].index(SYNCED)
        upto = resumed.events[at_sync].revision
        await eventually(lambda: feed_b.events[-1].revision >= upto, what="B's feed")
        log = feed_b.changes()
        revisions = [e.revision for e in log]
        assert revisions == list(range(revisions[0], revisions[0] + len(revisions)))
        expected = [e for e in log if revision_at_kill < e.revision <= upto]
        assert len(expected) > 20  # the drain, the late one, the removals, load changes
        assert [e.SerializeToString() for e in resumed.events[:at_sync]] == [
            e.SerializeToString() for e in expected
        ]
        assert feed_a.error is not None  # its registry died under it

        await late.stop()
        for registration in registrations:
            await registration.stop()
        await view.stop()
        for recorder in (feed_a, feed_b, resumed):
            await recorder.close()


async def _health(proc: ServiceProcess) -> int:
    """The registry's gRPC health status (NOT_SERVING also when it does not answer)."""
    async with grpc.aio.insecure_channel(proc.grpc_target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            return health_pb2.HealthCheckResponse.NOT_SERVING
        return int(reply.status)


async def _reports(proc: ServiceProcess, status: int) -> bool:
    return await _health(proc) == status


async def test_a_registry_cut_off_from_postgres_stops_serving_after_its_lease_then_recovers(
    tmp_path: Path, database: str
) -> None:
    """A partition between registry A and PostgreSQL (a proxy that holds every byte, closing
    nothing): past its lease A ends its watches, refuses reads and reports NOT_SERVING while
    B goes on serving the truth; A never serves its old picture, and once the path is back
    it serves the truth again and a watch resumes on it with what it missed."""
    proxy = await Proxy(5432).start()
    # A TTL long enough that nothing expires during the test: every change is B's doing.
    env = {**FAST, "SLMESH_REGISTRY_TTL_S": "30", "SLMESH_REGISTRY_LEASE_S": "1"}
    procs: list[ServiceProcess] = []
    try:
        for name, url in (("a", database.replace(":5432/", f":{proxy.port}/")), ("b", database)):
            env_one = {**env, "SLMESH_REGISTRY_DATABASE": url}
            # In a thread: the proxy runs on this loop and A needs it to start.
            procs.append(await asyncio.to_thread(start_registry, _tmp(tmp_path / name), env_one))
        a, b = procs
        async with client(a) as on_a, client(b) as on_b:
            await on_b.register(replica("old-1", agent="x"))
            feed_a = Recorder(on_a)
            await eventually(feed_a.synced, what="watch on A synced")
            assert [e.replica.replica_id for e in feed_a.events[:-1]] == ["old-1"]
            seen = feed_a.events[-1].revision

            proxy.cut()
            await eventually(lambda: feed_a.error is not None, what="A ends its watch")
            assert feed_a.error is not None
            assert feed_a.error.code() == grpc.StatusCode.UNAVAILABLE
            await eventually(lambda: _reports(a, NOT_SERVING), what="A reports NOT_SERVING")
            # The truth moves on through B.
            assert await on_b.deregister("old-1")
            await on_b.register(replica("new-1", agent="x"))
            assert _ids(await on_b.list()) == {"new-1"}
            assert await _health(b) == SERVING
            # A serves nothing, rather than its old picture.
            refused_watch = Recorder(on_a)
            await eventually(lambda: refused_watch.error is not None, what="A refuses a watch")
            assert refused_watch.error is not None
            assert refused_watch.error.code() == grpc.StatusCode.UNAVAILABLE
            assert not refused_watch.events
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await on_a.list()
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert await _health(a) == NOT_SERVING

            proxy.heal()
            await eventually(lambda: _reports(a, SERVING), what="A SERVING again")
            assert _ids(await on_a.list()) == {"new-1"}
            resumed = Recorder(on_a, since_revision=seen)
            await eventually(resumed.synced, what="resumed on A")
            assert [(e.type, e.replica.replica_id) for e in resumed.events[:-1]] == [
                (REMOVED, "old-1"),
                (ADDED, "new-1"),
            ]
            for recorder in (feed_a, refused_watch, resumed):
                await recorder.close()
    finally:
        for proc in procs:
            proc.kill()
        proxy.heal()
        await proxy.stop()
