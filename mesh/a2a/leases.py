"""Task takeover: a task whose replica dies mid-run is finished by another replica.

With replica-agnostic tasks (``SLMESH_TASK_EVENTS=database`` on PostgreSQL) any replica
answers ``GetTask``/``ListTasks``/``CancelTask``/``SubscribeToTask`` for any task, but only
the replica executing a task can finish it. So that executing replica holds a *lease* on
the task in a table next to a2a-sdk's task table (``slmesh_task_leases``: agent, task, owner
scope, holding replica, expiry, takeover count, and the request message the task was
started from), renewed by one heartbeat per replica while the task runs.

Every replica, at each heartbeat and whenever a caller subscribes to a task, claims leases
that have expired (one ``UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``,
so exactly one replica wins each) and decides by the task as stored:

* submitted or working: re-executed from its request message through this replica's own
  executor (:meth:`TaskRunner.resume`), appending events to the same task, so subscribers
  on any replica see them; at most ``task_max_takeovers`` times, after that the task fails
  with a reason that names the limit;
* finished, waiting for input, or absent: never re-run; the lease is dropped.

Time is the database's clock on every comparison, so replicas' clocks may disagree. A
replica that only stalled (GC pause, network partition) past its lease is fenced twice:
its next heartbeat finds the lease gone and cancels its run, and its next write to the task
fails a2a-sdk's version check (the new holder's writes moved the version on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.owner_resolver import resolve_user_scope
from a2a.types.a2a_pb2 import Message, Part, Role, TaskState, TaskStatus, TaskStatusUpdateEvent
from google.protobuf.struct_pb2 import Struct
from sqlalchemy import bindparam, text

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from mesh.config import Settings

log = logging.getLogger(__name__)

TABLE = "slmesh_task_leases"
TAKEOVER_METADATA = "slmesh.takeover"
"""Task metadata key a takeover writes: ``{"count", "replica", "from"}``."""

RERUN_STATES = frozenset({TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING})
"""States in which a task whose lease expired is re-executed; any other state is left as it is."""

_CLAIM_BATCH = 16
_SCHEMA_LOCK = (
    0x51_6D_65_73_68  # pg_advisory_xact_lock key: replicas starting together create the table once
)

_CREATE = [
    f"CREATE TABLE IF NOT EXISTS {TABLE} ( agent TEXT NOT NULL, task_id TEXT NOT NULL, owner TEXT "
    "NOT NULL, replica TEXT NOT NULL, expires_at TIMESTAMPTZ NOT NULL, takeovers INTEGER NOT NULL "
    "DEFAULT 0, request BYTEA NOT NULL, PRIMARY KEY (agent, task_id))",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_expiry ON {TABLE} (agent, expires_at)",
]
_ACQUIRE = text(
    f"INSERT INTO {TABLE} (agent, task_id, owner, replica, expires_at, request) VALUES (:agent, "
    ":task, :owner, :me, now() + make_interval(secs => :lease), :request) ON CONFLICT (agent, "
    "task_id) DO UPDATE SET replica = EXCLUDED.replica, owner = EXCLUDED.owner, expires_at = "
    f"EXCLUDED.expires_at, request = EXCLUDED.request WHERE {TABLE}.replica = EXCLUDED.replica OR "
    f"{TABLE}.expires_at < now() RETURNING task_id"
)
_RENEW = text(
    f"UPDATE {TABLE} SET expires_at = now() + make_interval(secs => :lease)"
    " WHERE agent = :agent AND replica = :me AND task_id IN :tasks RETURNING task_id",
).bindparams(bindparam("tasks", expanding=True))
_CLAIM = (
    f"UPDATE {TABLE} AS l SET replica = :me, expires_at = now() + make_interval(secs => :lease), "
    f"takeovers = l.takeovers + 1 FROM (SELECT agent, task_id, replica FROM {TABLE} WHERE agent = "
    f":agent AND expires_at < now() {{only}}       ORDER BY expires_at LIMIT :batch FOR UPDATE "
    "SKIP LOCKED) AS old WHERE l.agent = old.agent AND l.task_id = old.task_id RETURNING "
    "l.task_id, l.owner, l.request, l.takeovers, old.replica"
)
_CLAIM_ANY = text(_CLAIM.format(only=""))
_CLAIM_ONE = text(_CLAIM.format(only="AND task_id = :task"))
_RELEASE = text(f"DELETE FROM {TABLE} WHERE agent = :agent AND task_id = :task AND replica = :me")
_HOLDER = text(
    f"SELECT replica FROM {TABLE} WHERE agent = :agent AND task_id = :task AND expires_at >= now()"
)
_EXPIRE_MINE = text(
    f"UPDATE {TABLE} SET expires_at = now() - interval '1 microsecond'"
    " WHERE agent = :agent AND replica = :me"
)


@dataclass(frozen=True)
class Claim:
    """An expired lease this replica won: the task to finish and the request it started from."""

    task_id: str
    owner: str
    request: Message
    takeovers: int
    previous_replica: str


class TaskHeldError(Exception):
    """The task is being executed under a live lease of another replica."""

    def __init__(self, task_id: str, replica: str) -> None:
        super().__init__(
            f"task {task_id} is being executed by replica {replica}; send the follow-up "
            "message once the task is no longer working"
        )
        self.task_id = task_id
        self.replica = replica


class LeaseTable:
    """The lease rows of one agent in the shared PostgreSQL database."""

    def __init__(self, engine: AsyncEngine, agent: str, replica: str, lease_s: float) -> None:
        self.engine = engine
        self.agent = agent
        self.replica = replica
        self.lease_s = lease_s

    def _args(self, **extra: Any) -> dict[str, Any]:
        return {"agent": self.agent, "me": self.replica, "lease": self.lease_s, **extra}

    async def initialize(self) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            for statement in _CREATE:
                await conn.execute(text(statement))

    async def acquire(self, task_id: str, owner: str, request: Message) -> bool:
        """Takes (or refreshes) the lease for a run starting here; False if another replica holds it
        live."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    _ACQUIRE,
                    self._args(task=task_id, owner=owner, request=request.SerializeToString()),
                )
            ).first()
        return row is not None

    async def renew(self, task_ids: Iterable[str]) -> set[str]:
        """Extends the leases this replica still holds; returns those ids (the rest were lost)."""
        tasks = list(task_ids)
        if not tasks:
            return set()
        async with self.engine.begin() as conn:
            rows = (await conn.execute(_RENEW, self._args(tasks=tasks))).all()
        return {row[0] for row in rows}

    async def claim_expired(self, task_id: str | None = None) -> list[Claim]:
        """Wins expired leases (all of this agent's, up to a batch, or one task's) for this
        replica."""
        statement = _CLAIM_ANY if task_id is None else _CLAIM_ONE
        args = (
            self._args(batch=_CLAIM_BATCH) if task_id is None else self._args(batch=1, task=task_id)
        )
        async with self.engine.begin() as conn:
            rows = (await conn.execute(statement, args)).all()
        return [
            Claim(
                task_id=r[0],
                owner=r[1],
                request=Message.FromString(bytes(r[2])),
                takeovers=r[3],
                previous_replica=r[4],
            )
            for r in rows
        ]

    async def release(self, task_id: str) -> None:
        """Drops the lease if this replica still holds it (a lost lease belongs to its new
        holder)."""
        async with self.engine.begin() as conn:
            await conn.execute(_RELEASE, self._args(task=task_id))

    async def holder(self, task_id: str) -> str | None:
        """The replica holding a live lease on the task, if any."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(_HOLDER, self._args(task=task_id))).first()
        return row[0] if row else None

    async def expire_mine(self) -> None:
        """Hands this replica's leases over at once (it is stopping): the next heartbeat elsewhere
        claims them."""
        async with self.engine.begin() as conn:
            await conn.execute(_EXPIRE_MINE, self._args())


class TaskRunner(Protocol):
    """What a takeover needs from the request handler that owns the task store and executor."""

    async def stored_state(self, task_id: str, owner: str) -> TaskState | None:
        """The task's state in the shared store, None when there is no such task."""

    async def resume(self, claim: Claim) -> None:
        """Re-executes the claimed task's request through this replica's executor, until it ends."""

    async def fail(self, claim: Claim, reason: str) -> None:
        """Ends the claimed task as FAILED with ``reason`` as its status message."""


class TaskTakeover:
    """One per replica: renews the leases of its runs, fences runs whose lease was lost, and
    takes over tasks whose lease expired."""

    def __init__(self, table: LeaseTable, renew_s: float, max_takeovers: int) -> None:
        self.table = table
        self.renew_s = renew_s
        self.max_takeovers = max_takeovers
        self.running: dict[str, asyncio.Task[Any]] = {}
        """Task id -> the asyncio task executing it here (cancelled if its lease is lost)."""
        self.claimed: dict[str, Claim] = {}
        """Claims whose re-execution has not reached the executor yet."""
        self._runner: TaskRunner | None = None
        self._loop: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    @property
    def replica(self) -> str:
        return self.table.replica

    async def start(self, runner: TaskRunner) -> None:
        self._runner = runner
        await self.table.initialize()
        self._loop = asyncio.create_task(self._heartbeat(), name="task-leases")

    async def stop(self) -> None:
        """Stops the heartbeat and hands the leases still held here to the other replicas."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.table.expire_mine()

    async def _heartbeat(self) -> None:
        while True:
            try:
                await self._renew()
                await self._take_over(await self.table.claim_expired())
            except (OSError, ConnectionError) as exc:
                log.warning("task leases: database unreachable (%s); retrying", exc)
            except Exception:
                log.exception("task leases: heartbeat failed; retrying")
            await asyncio.sleep(self.renew_s)

    async def _renew(self) -> None:
        held = dict(self.running)
        kept = await self.table.renew(held)
        for task_id, run in held.items():
            if task_id not in kept and self.running.get(task_id) is run:
                log.warning(
                    "task %s: lease lost to another replica; stopping the run here", task_id
                )
                del self.running[task_id]
                run.cancel()

    async def claim(self, task_id: str) -> bool:
        """Takes one task over now if its lease expired (a caller is waiting on it); whether it
        did."""
        claims = await self.table.claim_expired(task_id)
        await self._take_over(claims)
        return bool(claims)

    async def _take_over(self, claims: list[Claim]) -> None:
        assert self._runner is not None
        for claim in claims:
            state = await self._runner.stored_state(claim.task_id, claim.owner)
            if state not in RERUN_STATES:
                # Finished, parked for input, or never created: nothing to re-run.
                await self.table.release(claim.task_id)
                continue
            if claim.takeovers > self.max_takeovers:
                reason = (
                    f"task abandoned: the replica executing it stopped {claim.takeovers} times "
                    f"(last {claim.previous_replica}); task_max_takeovers is {self.max_takeovers}"
                )
                log.error("task %s: %s", claim.task_id, reason)
                await self._runner.fail(claim, reason)
                await self.table.release(claim.task_id)
                continue
            log.warning(
                "task %s: taking over from replica %s (takeover %d of at most %d)",
                claim.task_id,
                claim.previous_replica,
                claim.takeovers,
                self.max_takeovers,
            )
            self.claimed[claim.task_id] = claim
            self.keep(asyncio.create_task(self._resume(claim), name=f"takeover:{claim.task_id}"))

    def keep(self, task: asyncio.Task[None]) -> None:
        """Holds a background task until it ends; :meth:`stop` cancels what is still running."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _resume(self, claim: Claim) -> None:
        assert self._runner is not None
        try:
            await self._runner.resume(claim)
        except Exception:
            log.exception("task %s: re-execution after takeover failed", claim.task_id)
        finally:
            self.claimed.pop(claim.task_id, None)

    async def settle(self, task_id: str, owner: str) -> None:
        """After a run ends here: drops its lease once the task left the states a takeover re-runs.

        The executor returns before a2a-sdk's consumer has stored its last events; releasing
        at once would leave a task stuck in ``working`` if this replica died in between.
        """
        assert self._runner is not None
        delay, waited = 0.01, 0.0
        while waited < self.table.lease_s:
            if await self._runner.stored_state(task_id, owner) not in RERUN_STATES:
                await self.table.release(task_id)
                return
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, self.renew_s)
        # Still working after the run ended: the lease expires and a takeover decides.


class LeasedExecutor(AgentExecutor):
    """Runs the agent's executor under a lease on the task (acquired, heartbeated, released)."""

    def __init__(self, inner: AgentExecutor, takeover: TaskTakeover) -> None:
        self.inner = inner
        self.takeover = takeover

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task_id = context.task_id
        if task_id is None or context.message is None:
            await self.inner.execute(context, event_queue)
            return
        owner = resolve_user_scope(context.call_context)
        takeover = self.takeover
        if not await takeover.table.acquire(task_id, owner, context.message):
            raise TaskHeldError(task_id, await takeover.table.holder(task_id) or "another replica")
        claim = takeover.claimed.pop(task_id, None)
        run = asyncio.current_task()
        assert run is not None
        takeover.running[task_id] = run
        try:
            if claim is not None and context.current_task is not None:
                await event_queue.enqueue_event(_takeover_event(context, claim, takeover))
            await self.inner.execute(context, event_queue)
        finally:
            if takeover.running.get(task_id) is run:
                del takeover.running[task_id]
            takeover.keep(
                asyncio.create_task(takeover.settle(task_id, owner), name=f"settle:{task_id}")
            )

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await self.inner.cancel(context, event_queue)


def _takeover_event(
    context: RequestContext, claim: Claim, takeover: TaskTakeover
) -> TaskStatusUpdateEvent:
    """The WORKING update that records a takeover on the task (status message and metadata)."""
    task = context.current_task
    assert task is not None
    text_ = (
        f"taken over by replica {takeover.replica} from replica {claim.previous_replica}, which "
        f"stopped renewing its lease (takeover {claim.takeovers} of at most "
        f"{takeover.max_takeovers}); re-executing the request"
    )
    metadata = Struct()
    metadata.update(
        {
            TAKEOVER_METADATA: {
                "count": claim.takeovers,
                "replica": takeover.replica,
                "from": claim.previous_replica,
            }
        }
    )
    message = Message(
        message_id=f"{task.id}-takeover-{claim.takeovers}",
        role=Role.ROLE_AGENT,
        task_id=task.id,
        context_id=task.context_id,
        parts=[Part(text=text_)],
    )
    status = TaskStatus(state=TaskState.TASK_STATE_WORKING, message=message)
    status.timestamp.GetCurrentTime()
    return TaskStatusUpdateEvent(
        task_id=task.id, context_id=task.context_id, metadata=metadata, status=status
    )


def build_takeover(
    engine: AsyncEngine, agent: str, replica: str, settings: Settings
) -> TaskTakeover | None:
    """The takeover for a replica on a shared database: PostgreSQL only (row locks with SKIP
    LOCKED)."""
    if engine.dialect.name != "postgresql":
        log.warning(
            "task takeover needs PostgreSQL (task_store is %s): a task whose replica is killed "
            "stays unfinished",
            engine.dialect.name,
        )
        return None
    table = LeaseTable(engine, agent, replica, settings.task_lease_s)
    return TaskTakeover(table, settings.task_lease_renew_s, settings.task_max_takeovers)
