"""SqliteTaskStore: round trips, owner scoping, shared files, and ListTasks exactly as a2a-sdk's
InMemoryTaskStore answers it (same pages, same totals, same page tokens) over random task sets."""

from __future__ import annotations

import base64
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from a2a.auth.user import User
from a2a.server.context import ServerCallContext
from a2a.server.tasks import InMemoryTaskStore
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import InvalidParamsError
from a2a.utils.task import ListTasksCursor, encode_list_tasks_cursor, encode_page_token

from mesh.a2a.store import SqliteTaskStore

S = pb.TaskState
STATES = (
    S.TASK_STATE_SUBMITTED,
    S.TASK_STATE_WORKING,
    S.TASK_STATE_COMPLETED,
    S.TASK_STATE_FAILED,
    S.TASK_STATE_INPUT_REQUIRED,
)
CONTEXTS = ("ctx-a", "ctx-b", "ctx-c")
BASE_NS = 1_700_000_000_000_000_000
TIMESTAMPS: tuple[int | None, ...] = (
    None,
    None,  # tasks without a status timestamp sort last
    0,
    -86_400_000_000_123,  # the epoch itself and a time before it still count as "has a timestamp"
    BASE_NS,
    BASE_NS,
    BASE_NS + 1,
    BASE_NS + 999,
    BASE_NS + 1_000_000_000,
    BASE_NS + 7_000_000_000,
)
"""Few distinct values on purpose: many ties, so the id tie-break and nanosecond order both
matter."""
INT64_MAX = 2**63 - 1


class Named(User):
    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def user_name(self) -> str:
        return self._name


def as_user(name: str) -> ServerCallContext:
    """A call context whose owner scope is ``name`` ("" is the unauthenticated scope)."""
    return ServerCallContext() if name == "" else ServerCallContext(user=Named(name))


ANON, ALICE, BOB = as_user(""), as_user("alice"), as_user("bob")


def make_task(
    task_id: str,
    context_id: str = "ctx-a",
    state: int = S.TASK_STATE_WORKING,
    ts_ns: int | None = BASE_NS,
    text: str = "hi",
) -> pb.Task:
    task = pb.Task(id=task_id, context_id=context_id, status=pb.TaskStatus(state=state))
    if ts_ns is not None:
        task.status.timestamp.FromNanoseconds(ts_ns)
    message = task.history.add(
        message_id=f"m-{task_id}", role=pb.Role.ROLE_USER, task_id=task_id, context_id=context_id
    )
    message.parts.add(text=text)
    task.artifacts.add(artifact_id=f"a-{task_id}", name="out").parts.add(text=text.upper())
    task.metadata.update({"n": len(text)})
    return task


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteTaskStore]:
    s = SqliteTaskStore(tmp_path / "tasks.sqlite")
    yield s
    s.close()


async def test_save_get_delete_round_trip(store: SqliteTaskStore, tmp_path: Path) -> None:
    await store.initialize()
    task = make_task("t1", text="round trip é ✓")
    await store.save(task, ANON)
    got = await store.get("t1", ANON)
    assert got == task
    assert got is not task
    assert got.SerializeToString(deterministic=True) == task.SerializeToString(deterministic=True)

    updated = make_task("t1", context_id="ctx-b", state=S.TASK_STATE_COMPLETED, ts_ns=BASE_NS + 5)
    await store.save(updated, ANON)  # same id: replaced, not duplicated
    assert await store.get("t1", ANON) == updated
    assert (await store.list(pb.ListTasksRequest(), ANON)).total_size == 1

    await store.delete("t1", ANON)
    assert await store.get("t1", ANON) is None
    await store.delete("t1", ANON)  # deleting what is gone is not an error
    assert await store.get("never-saved", ANON) is None
    assert (tmp_path / "tasks.sqlite").is_file()
    with sqlite3.connect(tmp_path / "tasks.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_task_without_status_or_timestamp_round_trips(store: SqliteTaskStore) -> None:
    bare = pb.Task(id="bare", context_id="c")
    await store.save(bare, ANON)
    assert await store.get("bare", ANON) == bare
    listed = await store.list(pb.ListTasksRequest(), ANON)
    assert list(listed.tasks) == [bare]


async def test_two_stores_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "tasks.sqlite"
    a, b = SqliteTaskStore(path), SqliteTaskStore(path)
    try:
        await a.save(make_task("from-a", ts_ns=BASE_NS), ANON)
        assert await b.get("from-a", ANON) == make_task("from-a", ts_ns=BASE_NS)
        await b.save(make_task("from-b", ts_ns=BASE_NS + 1), ANON)
        await b.save(make_task("from-a", state=S.TASK_STATE_COMPLETED, ts_ns=BASE_NS + 2), ANON)
        for s in (a, b):
            listed = await s.list(pb.ListTasksRequest(), ANON)
            assert [t.id for t in listed.tasks] == ["from-a", "from-b"]
            assert listed.tasks[0].status.state == S.TASK_STATE_COMPLETED
        await a.delete("from-b", ANON)
        assert await b.get("from-b", ANON) is None
        # A store opened after the writes (a replica restart) reads them from the file.
        c = SqliteTaskStore(path)
        assert [t.id for t in (await c.list(pb.ListTasksRequest(), ANON)).tasks] == ["from-a"]
        c.close()
    finally:
        a.close()
        b.close()


async def test_tasks_are_scoped_to_their_owner(store: SqliteTaskStore) -> None:
    await store.save(make_task("alice-1", ts_ns=BASE_NS), ALICE)
    await store.save(make_task("alice-2", ts_ns=BASE_NS + 1), ALICE)
    await store.save(make_task("bob-1"), BOB)
    await store.save(make_task("anon-1"), ANON)

    assert await store.get("alice-1", BOB) is None
    assert await store.get("alice-1", ANON) is None
    assert [t.id for t in (await store.list(pb.ListTasksRequest(), ALICE)).tasks] == [
        "alice-2",
        "alice-1",
    ]
    assert [t.id for t in (await store.list(pb.ListTasksRequest(), BOB)).tasks] == ["bob-1"]
    assert (await store.list(pb.ListTasksRequest(), as_user("carol"))).total_size == 0

    await store.delete("alice-1", BOB)  # bob cannot delete alice's task
    assert await store.get("alice-1", ALICE) is not None
    # A page token naming another owner's task is not a way into that owner's list.
    with pytest.raises(InvalidParamsError, match="Invalid page token"):
        await store.list(pb.ListTasksRequest(page_token=encode_page_token("alice-1")), BOB)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("not base64 at all!!", id="not-base64"),
        pytest.param(encode_page_token("no-such-task"), id="unknown-task-id"),
        pytest.param(base64.b64encode(b"\xff\xfe\xfd").decode(), id="not-utf8"),
        pytest.param(
            base64.urlsafe_b64encode(b'{"ts": "x", "id": "t1"}').decode(), id="cursor-wrong-types"
        ),
        pytest.param(base64.urlsafe_b64encode(b'{"id": "t1"}').decode(), id="cursor-missing-ts"),
    ],
)
async def test_a_bad_page_token_is_invalid_params_like_the_sdk_store(
    store: SqliteTaskStore, token: str
) -> None:
    reference = InMemoryTaskStore()
    for s in (store, reference):
        await s.save(make_task("t1"), ANON)
    with pytest.raises(InvalidParamsError) as ours:
        await store.list(pb.ListTasksRequest(page_token=token), ANON)
    with pytest.raises(InvalidParamsError) as theirs:
        await reference.list(pb.ListTasksRequest(page_token=token), ANON)
    assert ours.value.message == theirs.value.message
    # The store is still usable afterwards.
    assert (await store.list(pb.ListTasksRequest(), ANON)).total_size == 1


async def test_a_cursor_outside_the_64_bit_range_is_invalid_params(store: SqliteTaskStore) -> None:
    """A forged cursor must be a clear client error (as DatabaseTaskStore says), not an
    OverflowError from sqlite3 that reaches the client as an internal error."""
    await store.save(make_task("t1"), ANON)
    for ts in (2**63, -(2**63) - 1, 10**30):
        token = encode_list_tasks_cursor(ListTasksCursor(timestamp_ns=ts, task_id="t1"))
        with pytest.raises(InvalidParamsError, match="Invalid page token"):
            await store.list(pb.ListTasksRequest(page_token=token), ANON)


async def test_status_timestamp_after_far_from_now_filters_like_the_sdk_store(
    store: SqliteTaskStore,
) -> None:
    """``statusTimestampAfter`` is client input; any valid Timestamp (years 1..9999) must work,
    including ones whose nanoseconds do not fit SQLite's 64-bit integers."""
    reference = InMemoryTaskStore()
    for s in (store, reference):
        await s.save(make_task("old", ts_ns=-(10**18)), ANON)
        await s.save(make_task("now", ts_ns=BASE_NS), ANON)
        await s.save(make_task("untimed", ts_ns=None), ANON)
    for when in (
        "9999-12-31T23:59:59Z",
        "2262-04-12T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "1677-09-21T00:00:00Z",
        "2000-01-01T00:00:00Z",
    ):
        request = pb.ListTasksRequest()
        request.status_timestamp_after.FromJsonString(when)
        assert await store.list(request, ANON) == await reference.list(request, ANON), when


async def test_a_status_timestamp_beyond_2262_can_be_saved_and_listed(
    store: SqliteTaskStore,
) -> None:
    """Nanoseconds since the epoch overflow 64 bits after 2262-04-11; a Timestamp goes to 9999."""
    far = make_task("far")
    far.status.timestamp.FromJsonString("3000-01-01T00:00:00Z")
    await store.save(far, ANON)
    await store.save(make_task("now", ts_ns=BASE_NS), ANON)
    assert await store.get("far", ANON) == far
    listed = await store.list(pb.ListTasksRequest(), ANON)
    assert [t.id for t in listed.tasks] == ["far", "now"]  # newest first, as the SDK orders it
    first = await store.list(pb.ListTasksRequest(page_size=1), ANON)
    second = await store.list(
        pb.ListTasksRequest(page_size=1, page_token=first.next_page_token), ANON
    )
    assert [t.id for t in first.tasks] == ["far"]
    assert [t.id for t in second.tasks] == ["now"]


# -- ListTasks against a2a-sdk's InMemoryTaskStore on random task sets -------------------------


def _random_id(rnd: random.Random, n: int) -> str:
    # Mixed prefixes and some non-ASCII ids: the id tie-break must order code points the same
    # way in Python and in SQLite (UTF-8 bytes compare in code-point order).
    return rnd.choice(["t", "T", "task-", "z", "é", "任务"]) + f"{n:03d}"


async def _populate(
    rnd: random.Random,
    ours: SqliteTaskStore,
    reference: InMemoryTaskStore,
    owners: dict[str, ServerCallContext],
) -> list[str]:
    ids = [_random_id(rnd, n) for n in range(rnd.randint(0, 60))]
    owner_of = {task_id: rnd.choice(list(owners)) for task_id in ids}
    for step in range(len(ids) * 3):
        if not ids:
            break
        task_id = rnd.choice(ids)
        context = owners[
            owner_of[task_id]
        ]  # an id belongs to one owner (ids are server-made uuids)
        if rnd.random() < 0.1:
            await ours.delete(task_id, context)
            await reference.delete(task_id, context)
            continue
        ts = rnd.choice(TIMESTAMPS)
        task = make_task(task_id, rnd.choice(CONTEXTS), rnd.choice(STATES), ts, text=f"s{step}")
        await ours.save(task, context)
        await reference.save(task, context)
    return ids


def _random_request(rnd: random.Random) -> pb.ListTasksRequest:
    request = pb.ListTasksRequest()
    if rnd.random() < 0.35:
        request.context_id = rnd.choice(CONTEXTS)
    if rnd.random() < 0.35:
        request.status = rnd.choice(STATES)
    if rnd.random() < 0.3:
        after = rnd.choice([t for t in TIMESTAMPS if t is not None]) + rnd.choice([-1, 0, 1])
        request.status_timestamp_after.FromNanoseconds(after)
    if rnd.random() < 0.85:
        request.page_size = rnd.choice([1, 2, 3, 5, 7, 100])
    return request


@pytest.mark.parametrize("seed", range(12))
async def test_list_tasks_matches_the_in_memory_store(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    ours = SqliteTaskStore(tmp_path / f"tasks-{seed}.sqlite")
    reference = InMemoryTaskStore()
    owners = {"": ANON, "alice": ALICE, "bob": BOB}
    try:
        await _populate(rnd, ours, reference, owners)
        compared = 0
        for context in owners.values():
            for _ in range(8):
                request = _random_request(rnd)
                listed: list[str] = []
                expected_ids = None
                while True:
                    page, expected = (
                        await ours.list(request, context),
                        await reference.list(request, context),
                    )
                    assert page == expected, (request, page, expected)
                    compared += 1
                    listed += [t.id for t in page.tasks]
                    if expected_ids is None:
                        expected_ids = expected.total_size
                    if not page.next_page_token:
                        break
                    request.page_token = page.next_page_token
                # Walking every page returns each matching task exactly once.
                assert len(listed) == len(set(listed)) == expected_ids
                if listed:
                    # A legacy page token (base64 task id) for a task on the list starts the
                    # page there.
                    legacy = pb.ListTasksRequest()
                    legacy.CopyFrom(request)
                    legacy.page_token = encode_page_token(rnd.choice(listed))
                    assert await ours.list(legacy, context) == await reference.list(legacy, context)
                    compared += 1
        assert compared >= 24
    finally:
        ours.close()


async def test_a_page_token_stays_valid_after_its_task_changes(store: SqliteTaskStore) -> None:
    """The token carries the cursor position, so it survives the update or deletion of the task
    it names, exactly as in the SDK's store."""
    reference = InMemoryTaskStore()
    for s in (store, reference):
        for i in range(6):
            await s.save(make_task(f"t{i}", ts_ns=BASE_NS + i), ANON)
    first = await store.list(pb.ListTasksRequest(page_size=2), ANON)
    assert first == await reference.list(pb.ListTasksRequest(page_size=2), ANON)
    assert [t.id for t in first.tasks] == ["t5", "t4"]
    for s in (store, reference):
        await s.delete("t4", ANON)  # the task the token names
        await s.save(make_task("t3", ts_ns=BASE_NS + 100), ANON)  # moves above the cursor
    request = pb.ListTasksRequest(page_size=2, page_token=first.next_page_token)
    second = await store.list(request, ANON)
    assert second == await reference.list(request, ANON)
    assert [t.id for t in second.tasks] == ["t2", "t1"]
    assert second.total_size == 5


async def test_default_page_size_and_total(store: SqliteTaskStore) -> None:
    reference = InMemoryTaskStore()
    for s in (store, reference):
        for i in range(120):
            await s.save(make_task(f"t{i:03d}", ts_ns=BASE_NS + i % 7), ANON)
    page = await store.list(pb.ListTasksRequest(), ANON)
    assert page == await reference.list(pb.ListTasksRequest(), ANON)
    assert page.total_size == 120
    assert len(page.tasks) == page.page_size == 50
    assert page.next_page_token
