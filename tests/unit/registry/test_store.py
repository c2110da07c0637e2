"""MemoryRegistryStore: replacement, filters, TTL expiry on a fake clock, and watchers."""

from __future__ import annotations

import asyncio

import pytest

from mesh.proto.slmesh.registry.v1 import registry_pb2 as pb
from mesh.registry.store import MemoryRegistryStore, Subscription, WatchClosed, WatcherOverflow

ADDED, UPDATED, REMOVED, SYNCED = (
    pb.WatchEvent.ADDED,
    pb.WatchEvent.UPDATED,
    pb.WatchEvent.REMOVED,
    pb.WatchEvent.SYNCED,
)


class FakeClock:
    """Time that only moves when a test says so."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def replica(replica_id: str, agent: str = "summarizer", skills: tuple[str, ...] = ()) -> pb.Replica:
    return pb.Replica(
        agent=agent,
        replica_id=replica_id,
        endpoints=[pb.Endpoint(transport="GRPC", url=f"{replica_id}:50051")],
        skills=list(skills),
    )


async def next_event(sub: Subscription) -> pb.WatchEvent:
    return await asyncio.wait_for(anext(sub), 1.0)


async def skip_snapshot(sub: Subscription) -> None:
    while (await next_event(sub)).type != SYNCED:
        pass


def summary(event: pb.WatchEvent) -> tuple[int, str]:
    return event.type, event.replica.replica_id


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> MemoryRegistryStore:
    return MemoryRegistryStore(ttl_s=10.0, clock=clock)


async def test_register_sets_timestamps_and_replaces_by_replica_id(
    store: MemoryRegistryStore, clock: FakeClock
) -> None:
    first = await store.register(replica("a-1"))
    clock.advance(3)
    changed = replica("a-1")
    changed.version = "2.0"
    await store.register(changed)

    [stored] = await store.list()
    assert stored.version == "2.0"
    assert first.registered_at.ToNanoseconds() == 1_000 * 10**9
    assert stored.registered_at.ToNanoseconds() == 1_003 * 10**9
    assert stored.last_heartbeat == stored.registered_at


async def test_returned_replicas_are_copies(store: MemoryRegistryStore) -> None:
    original = replica("a-1")
    await store.register(original)
    original.agent = "mutated-after-register"
    [listed] = await store.list()
    listed.agent = "mutated-after-list"

    assert [r.agent for r in await store.list()] == ["summarizer"]


async def test_list_filters_by_agent_and_skill_and_sorts(store: MemoryRegistryStore) -> None:
    await store.register(replica("s-2", "summarizer", ("summarize",)))
    await store.register(replica("t-1", "translator", ("translate", "detect-language")))
    await store.register(replica("s-1", "summarizer", ("summarize", "detect-language")))

    def ids(replicas: list[pb.Replica]) -> list[str]:
        return [r.replica_id for r in replicas]

    assert ids(await store.list()) == ["s-1", "s-2", "t-1"]
    assert ids(await store.list(agent="summarizer")) == ["s-1", "s-2"]
    assert ids(await store.list(skill="detect-language")) == ["s-1", "t-1"]
    assert ids(await store.list(agent="summarizer", skill="detect-language")) == ["s-1"]
    assert ids(await store.list(agent="nobody")) == []


async def test_heartbeat_updates_load_and_draining_and_reports_unknown(
    store: MemoryRegistryStore, clock: FakeClock
) -> None:
    await store.register(replica("a-1"))
    clock.advance(1)

    assert await store.heartbeat("a-1", pb.Load(in_flight=2, capacity=4), draining=False)
    assert await store.heartbeat("a-1", None, draining=True)
    assert not await store.heartbeat("missing", pb.Load(), draining=False)

    [stored] = await store.list()
    assert stored.load == pb.Load(in_flight=2, capacity=4)
    assert stored.draining
    assert stored.last_heartbeat.ToNanoseconds() == 1_001 * 10**9


async def test_deregister_reports_whether_it_removed(store: MemoryRegistryStore) -> None:
    await store.register(replica("a-1"))

    assert await store.deregister("a-1")
    assert not await store.deregister("a-1")
    assert await store.list() == []


async def test_replica_expires_after_ttl_without_heartbeat(
    store: MemoryRegistryStore, clock: FakeClock
) -> None:
    await store.register(replica("quiet"))
    await store.register(replica("chatty"))

    clock.advance(6)
    assert await store.heartbeat("chatty", None, draining=False)
    clock.advance(4)
    assert await store.expire() == []
    assert len(await store.list()) == 2

    clock.advance(0.5)
    expired = await store.expire()

    assert [r.replica_id for r in expired] == ["quiet"]
    assert [r.replica_id for r in await store.list()] == ["chatty"]
    assert not await store.heartbeat("quiet", None, draining=False)


async def test_expired_replica_is_gone_even_before_a_sweep(
    store: MemoryRegistryStore, clock: FakeClock
) -> None:
    await store.register(replica("a-1"))
    clock.advance(10.01)

    assert await store.list() == []
    assert not await store.heartbeat("a-1", None, draining=False)


async def test_watch_sends_snapshot_then_synced_then_changes(
    store: MemoryRegistryStore, clock: FakeClock
) -> None:
    await store.register(replica("b-1"))
    await store.register(replica("a-1"))
    sub = await store.watch()

    assert [summary(await next_event(sub)) for _ in range(3)] == [
        (ADDED, "a-1"),
        (ADDED, "b-1"),
        (SYNCED, ""),
    ]

    await store.register(replica("c-1"))
    await store.heartbeat("a-1", pb.Load(in_flight=1), draining=False)
    await store.heartbeat("a-1", pb.Load(in_flight=1), draining=False)
    await store.heartbeat("a-1", pb.Load(in_flight=1), draining=True)
    await store.deregister("b-1")
    clock.advance(11)
    await store.expire()

    events = [await next_event(sub) for _ in range(6)]
    assert [summary(e) for e in events] == [
        (ADDED, "c-1"),
        (UPDATED, "a-1"),
        (UPDATED, "a-1"),
        (REMOVED, "b-1"),
        (REMOVED, "a-1"),
        (REMOVED, "c-1"),
    ]
    assert events[1].replica.load.in_flight == 1
    assert not events[1].replica.draining
    assert events[2].replica.draining


async def test_watch_by_agent_only_sees_that_agent(store: MemoryRegistryStore) -> None:
    await store.register(replica("s-1", "summarizer"))
    await store.register(replica("t-1", "translator"))
    sub = await store.watch(agent="translator")

    assert [summary(await next_event(sub)) for _ in range(2)] == [(ADDED, "t-1"), (SYNCED, "")]
    await store.register(replica("s-2", "summarizer"))
    await store.register(replica("t-2", "translator"))
    assert summary(await next_event(sub)) == (ADDED, "t-2")


async def test_moving_a_replica_to_another_agent_removes_it_from_the_old_one(
    store: MemoryRegistryStore,
) -> None:
    await store.register(replica("r-1", "summarizer"))
    old_agent = await store.watch(agent="summarizer")
    new_agent = await store.watch(agent="translator")
    await skip_snapshot(old_agent)
    await skip_snapshot(new_agent)

    await store.register(replica("r-1", "translator"))

    assert summary(await next_event(old_agent)) == (REMOVED, "r-1")
    assert summary(await next_event(new_agent)) == (ADDED, "r-1")


async def test_slow_watcher_is_dropped_without_holding_back_others(clock: FakeClock) -> None:
    store = MemoryRegistryStore(ttl_s=10.0, clock=clock, watch_queue_size=3)
    slow = await store.watch()
    fast = await store.watch()
    assert summary(await next_event(fast)) == (SYNCED, "")

    seen = []
    for i in range(6):
        await store.register(replica(f"r-{i}"))
        seen.append(summary(await next_event(fast)))

    assert seen == [(ADDED, f"r-{i}") for i in range(6)]
    assert slow.closed
    assert not fast.closed
    assert store.watcher_count == 1
    with pytest.raises(WatcherOverflow, match="fell behind: 3 events were pending"):
        async for _ in slow:
            pass


async def test_closing_a_subscription_ends_it_and_releases_it(store: MemoryRegistryStore) -> None:
    sub = await store.watch()
    assert store.watcher_count == 1

    sub.close()

    assert store.watcher_count == 0
    assert [e async for e in sub] == []


async def test_closing_with_an_error_raises_it_to_the_consumer(store: MemoryRegistryStore) -> None:
    sub = await store.watch()
    await store.register(replica("a-1"))

    sub.close(WatchClosed("registry is shutting down"))

    with pytest.raises(WatchClosed, match="shutting down"):
        await next_event(sub)


async def test_waiting_watcher_wakes_on_change(store: MemoryRegistryStore) -> None:
    sub = await store.watch()
    assert summary(await next_event(sub)) == (SYNCED, "")
    waiting = asyncio.create_task(next_event(sub))
    await asyncio.sleep(0)

    await store.register(replica("a-1"))

    assert summary(await waiting) == (ADDED, "a-1")


def test_rejects_nonsense_configuration() -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        MemoryRegistryStore(ttl_s=0)
    with pytest.raises(ValueError, match="watch_queue_size"):
        MemoryRegistryStore(ttl_s=1, watch_queue_size=0)
