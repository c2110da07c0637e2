"""The request handler of a mesh agent: a2a-sdk's default handler with a lean unary ``SendMessage``.

a2a-sdk's ``DefaultRequestHandler`` (v2) runs every message through an ``ActiveTask``: a
producer task, a consumer task, a dispatch task, two multi-queue event sources and a
store write per event. That machinery is what streaming, resubscription and follow-up
messages need; for the mesh's hot call, a unary ``SendMessage`` that opens a new task, it
costs ~1.4-1.8 ms of CPU per request on this project's 2-core benchmark machine, against
~0.2 ms for the path below (in-process timings; ``bench/hop.py`` measures the whole hop).

:class:`MeshRequestHandler` keeps the default handler for everything and takes over only
that case. The executor still runs in its own asyncio task and receives events through an
:class:`~a2a.server.events.EventQueue`, but each event is applied synchronously by
a2a-sdk's own :class:`~a2a.server.tasks.TaskManager` (same task, history and artifact
rules, same agent-response validation as the default consumer) instead of crossing two
queues. The task is written to the task store at most once per event-loop turn while the
executor runs (so a long-running task is visible to ``GetTask``/``ListTasks``), and always
before the reply is sent: a client never sees a state the store does not hold. While it
runs, the task can be cancelled and subscribed to from any transport (this handler answers
those for its own runs and hands every other task to the default handler).

Anything else (follow-up messages with a ``taskId``, ``returnImmediately``, push
configuration, versioned stores or cross-replica event streams, streaming) takes the
default path unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing, contextmanager
from datetime import UTC, datetime
from typing import Any, cast

import grpc
from a2a.auth.user import User
from a2a.server.agent_execution import RequestContext
from a2a.server.agent_execution.active_task import INTERRUPTED_TASK_STATES, TERMINAL_TASK_STATES
from a2a.server.cluster import TaskEventStream
from a2a.server.cluster.task_store import StoredTask, VersionedTaskStore
from a2a.server.cluster.version import TaskVersion
from a2a.server.context import ServerCallContext
from a2a.server.events import Event, EventQueue
from a2a.server.owner_resolver import resolve_user_scope
from a2a.server.request_handlers import DefaultRequestHandler, GrpcHandler
from a2a.server.tasks import TaskManager, TaskStore
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SendMessageResponse,
    SubscribeToTaskRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from a2a.utils.constants import PROTOCOL_VERSION_1_0, VERSION_HEADER
from a2a.utils.errors import (
    A2A_ERROR_REASONS,
    A2AError,
    InternalError,
    InvalidAgentResponseError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
    VersionNotSupportedError,
)
from a2a.utils.grpc_status import status_to_grpc
from a2a.utils.input_mode_validator import validate_input_modes
from a2a.utils.proto_utils import validate_proto_required_fields
from a2a.utils.task import apply_history_length, validate_history_length
from google.api.field_behavior_pb2 import FieldBehavior, field_behavior
from google.protobuf import any_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message as ProtoMessage
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from mesh.a2a import sdk_private
from mesh.a2a.leases import Claim, TaskHeldError, TaskTakeover

log = logging.getLogger(__name__)

_END = object()
"""Subscriber-queue sentinel: the run is over."""

_EARLY_STATES = (TERMINAL_TASK_STATES | INTERRUPTED_TASK_STATES) - {TaskState.TASK_STATE_FAILED}
"""States at which the default handler answers a unary SendMessage without waiting for the
executor."""


TASK_STORE_FAILED = (
    "the task store's database failed under this call (connection lost, server unreachable or "
    "pool exhausted); the write it failed in was rolled back, nothing of it is stored: retry "
    "the call"
)
"""What a caller is told when the task store fails; the driver's own text is never sent (it
holds the statement's SQL and the task's content)."""


@contextmanager
def store_failures() -> Iterator[None]:
    """A database failure under a call becomes an A2A error that says so and that it may be
    retried (``data``: reason ``task_store_unavailable``, ``retryable``)."""
    try:
        yield
    except (DBAPIError, PoolTimeoutError, ConnectionError) as exc:
        # A refused or reset connection to the database comes out of the driver unwrapped.
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        log.warning("task store failed: %s", type(cause).__name__)
        raise InternalError(
            message=TASK_STORE_FAILED,
            data={"reason": "task_store_unavailable", "retryable": True},
        ) from exc


_PLANS: dict[str, tuple[tuple[FieldDescriptor, ...], tuple[tuple[str, int], ...]]] = {}
_SINGLE, _REPEATED, _MAP = 0, 1, 2


def _plan(desc: Descriptor) -> tuple[tuple[FieldDescriptor, ...], tuple[tuple[str, int], ...]]:
    """Per message type, once: its REQUIRED fields and its message-typed fields."""
    plan = _PLANS.get(desc.full_name)
    if plan is None:
        required = tuple(
            f
            for f in desc.fields
            if FieldBehavior.REQUIRED in f.GetOptions().Extensions[field_behavior]
        )
        nested = []
        for f in desc.fields:
            if f.type != FieldDescriptor.TYPE_MESSAGE:
                continue
            if not f.is_repeated:
                nested.append((f.name, _SINGLE))
            elif f.message_type is not None and f.message_type.GetOptions().map_entry:
                nested.append((f.name, _MAP))
            else:
                nested.append((f.name, _REPEATED))
        plan = _PLANS[desc.full_name] = (required, tuple(nested))
    return plan


def _complete(msg: ProtoMessage) -> bool:
    """Whether a2a-sdk's ``validate_proto_required_fields`` passes, by the same rules.

    The SDK re-reads every field's options on every request; this walks a plan cached per
    message type.
    """
    # The stubs type DESCRIPTOR as the pure-Python or the upb class; both have these fields.
    required, nested = _plan(cast(Descriptor, msg.DESCRIPTOR))
    for field in required:
        value = getattr(msg, field.name)
        if field.is_repeated:
            if not value:
                return False
        elif field.has_presence:
            if not msg.HasField(field.name):
                return False
        elif value == field.default_value:
            return False
    for name, kind in nested:
        if kind == _SINGLE:
            if msg.HasField(name) and not _complete(getattr(msg, name)):
                return False
        elif kind == _REPEATED:
            if not all(_complete(item) for item in getattr(msg, name)):
                return False
        elif not all(
            _complete(v) for v in getattr(msg, name).values() if isinstance(v, ProtoMessage)
        ):
            return False
    return True


def validate_required(msg: ProtoMessage) -> None:
    """``validate_proto_required_fields``, fast when the message is valid (the SDK reports the
    rest)."""
    if not _complete(msg):
        validate_proto_required_fields(msg)


def _copy(task: Task) -> Task:
    out = Task()
    out.CopyFrom(task)
    return out


class _Deferred(VersionedTaskStore):
    """The ``TaskManager``'s store during a run: notes the change, the run writes it later."""

    def __init__(self, run: _Run) -> None:
        self._run = run

    async def save(
        self, task: Task, *, event: Any, prev: Any, prev_version: Any, context: ServerCallContext
    ) -> TaskVersion:
        self._run.changed()
        return TaskVersion.MISSING

    async def get(self, task_id: str, context: ServerCallContext) -> None:
        return None  # a run only ever creates a new task

    async def list(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        raise NotImplementedError

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        raise NotImplementedError


class _Run(EventQueue):
    """One new task opened by a unary ``SendMessage``; also the executor's event queue.

    Mirrors a2a-sdk's ``ActiveTask`` + ``EventConsumer`` for a single request.
    """

    def __init__(
        self, handler: MeshRequestHandler, request: RequestContext, context: ServerCallContext
    ) -> None:
        assert request.task_id is not None
        assert request.context_id is not None
        self.handler = handler
        self.request = request
        self.call_context = context
        self.task_id: str = request.task_id
        self.owner = handler.owner_of(context)
        self.manager = TaskManager(
            task_store=_Deferred(self),
            context=context,
            task_id=request.task_id,
            context_id=request.context_id,
            initial_message=request.message,
        )
        self.task_mode: bool | None = None
        self.message_to_save: Message | None = request.message
        self.task_created = False
        self.message: Message | None = None
        self.error: BaseException | None = None
        self.producer_failed = False
        self.cancel_requested = False
        self.ended = False
        self.dirty = False
        self._tick_pending = False
        self._early = False
        self._write_lock = asyncio.Lock()
        self.loop = asyncio.get_running_loop()
        self.reply: asyncio.Future[Task | Message] = self.loop.create_future()
        self.subscribers: list[asyncio.Queue[Any]] = []
        self.driver: asyncio.Task[None] | None = None

    # -- the executor's side ----------------------------------------------------------

    async def enqueue_event(self, event: Event) -> None:
        if self.ended or self.error is not None:
            return  # as in a2a-sdk: the consumer is gone, late events go nowhere
        try:
            await self._apply(event)
        except Exception as exc:  # noqa: BLE001 - the consumer's own failure (a misbehaving agent)
            log.error("task %s: %s", self.task_id, exc)
            self.error = exc

    async def _apply(self, event: Event) -> None:
        if isinstance(event, Message):
            if self.task_mode is True:
                raise InvalidAgentResponseError(
                    "Received Message object in task mode. Use TaskStatusUpdateEvent or "
                    "TaskArtifactUpdateEvent instead."
                )
            if self.task_mode is False:
                raise InvalidAgentResponseError("Multiple Message objects received.")
            self.task_mode = False
            self.message = event
            self._publish(event)
            self._early = True
            self._schedule_tick()
            return
        if not isinstance(event, Task | TaskStatusUpdateEvent | TaskArtifactUpdateEvent):
            return
        if self.task_mode is False:
            raise InvalidAgentResponseError(
                f"Received {type(event).__name__} in message mode. Use Task with "
                "TaskStatusUpdateEvent and TaskArtifactUpdateEvent instead."
            )
        manager = self.manager
        if isinstance(event, Task):
            if sdk_private.current_task(manager) is not None:
                log.error("Task %s already exists. Ignoring task replacement.", self.task_id)
            else:
                await manager.save_task_event(event)
            self.message_to_save = None
        else:
            await self._modify(event)
        self.task_mode = True
        task = await manager.get_task()
        if task is None:
            raise RuntimeError(f"Task {self.task_id} not found")
        self.task_created = True
        if task.status.state in _EARLY_STATES:
            self._early = True
        self._publish(task if isinstance(event, Task) else event)

    async def _modify(self, event: TaskStatusUpdateEvent | TaskArtifactUpdateEvent) -> None:
        manager = self.manager
        if (
            isinstance(event, TaskStatusUpdateEvent)
            and not self.task_created
            and await manager.get_task() is None
        ):
            raise InvalidAgentResponseError(
                f"Agent should enqueue Task before {type(event).__name__} event"
            )
        task = await manager.ensure_task_id(self.task_id, event.context_id)
        pending = self.message_to_save
        if pending is not None:
            if not any(m.message_id == pending.message_id for m in task.history):
                task = manager.update_with_message(pending, task)
                await manager.save_task_event(task)
            self.message_to_save = None
        manager.context_id = event.context_id
        await manager.process(event)

    def _publish(self, event: Any) -> None:
        if not self.subscribers:
            return
        if isinstance(event, Task):
            event = _copy(event)
        for queue in self.subscribers:
            queue.put_nowait(event)

    # -- persistence ------------------------------------------------------------------

    def changed(self) -> None:
        self.dirty = True
        self._schedule_tick()

    def _schedule_tick(self) -> None:
        if not self._tick_pending:
            self._tick_pending = True
            self.loop.call_soon(self._tick)

    def _tick(self) -> None:
        """Next loop turn after a change: if the executor is still running, write (and answer)."""
        self._tick_pending = False
        if self.ended or not (self.dirty or self._early):
            return
        task = self.loop.create_task(self._background_write())
        self.handler.background.add(task)
        task.add_done_callback(self.handler.background.discard)

    async def _background_write(self) -> None:
        try:
            await self.persist()
        except Exception:
            log.exception("task %s: writing to the task store failed", self.task_id)
            return
        if self._early and not self.reply.done() and self.error is None:
            self._answer()

    async def persist(self) -> None:
        async with self._write_lock:
            if not self.dirty:
                return
            self.dirty = False
            task = sdk_private.current_task(self.manager)
            if task is None:
                return
            await self.handler.plain_store.save(_copy(task), self.call_context)

    # -- lifecycle --------------------------------------------------------------------

    async def drive(self) -> None:
        """The producer: runs the executor, then records the outcome and answers."""
        try:
            await self.handler.agent_executor.execute(self.request, self)
        except asyncio.CancelledError:
            if not self.cancel_requested:
                self._end()
                raise
        except Exception as exc:
            log.exception("Producer[%s]: Execution failed", self.task_id)
            self.producer_failed = True
            if self.error is None:
                self.error = exc
        if self.cancel_requested and self.error is None:
            self._close_canceled()
        try:
            if self.error is not None:
                await self._write_failed()
            await self.persist()
        except Exception as exc:
            log.exception("task %s: writing the outcome failed", self.task_id)
            if self.error is None:
                self.error = exc
        finally:
            self._end()

    def _close_canceled(self) -> None:
        """As ``ActiveTask.cancel``: a cancel whose executor wrote no terminal state (a
        cleanup-only ``cancel``) closes the task as CANCELED, before the reply is sent."""
        task = sdk_private.current_task(self.manager)
        if task is not None and task.status.state not in TERMINAL_TASK_STATES:
            task.status.state = TaskState.TASK_STATE_CANCELED
            self.dirty = True

    async def _write_failed(self) -> None:
        """FAILED once the run ends in an error, as a2a-sdk's consumer records it."""
        manager = self.manager
        task = sdk_private.current_task(manager)
        now = datetime.now(UTC)
        try:
            if task is None and self.producer_failed:
                task = await manager.ensure_task_id(self.task_id, manager.context_id or "")
                if task.status.state not in TERMINAL_TASK_STATES:
                    task.status.state = TaskState.TASK_STATE_FAILED
                    task.status.timestamp.FromDatetime(now)
                    await manager.save_task_event(task)
                return
            if task is None or task.status.state in TERMINAL_TASK_STATES:
                return
            status = TaskStatus(state=TaskState.TASK_STATE_FAILED)
            status.timestamp.FromDatetime(now)
            await self._modify(
                TaskStatusUpdateEvent(task_id=task.id, context_id=task.context_id, status=status)
            )
        except Exception:
            log.exception("task %s: recording FAILED failed", self.task_id)

    def driver_done(self, _: asyncio.Task[None]) -> None:
        if not self.ended:  # cancelled before its first step
            self._end()

    def _end(self) -> None:
        self.ended = True
        self.handler.runs.pop(self.task_id, None)
        for queue in self.subscribers:
            queue.put_nowait(self.error if self.error is not None else _END)
        if not self.reply.done():
            if self.error is not None:
                self.reply.set_exception(self.error)
            else:
                self._answer()

    def _answer(self) -> None:
        if self.message is not None:
            self.reply.set_result(self.message)
            return
        task = sdk_private.current_task(self.manager)
        if task is None:
            self.reply.set_exception(
                InternalError(message="agent produced neither a task nor a message")
            )
            return
        self.reply.set_result(_copy(task))

    def current(self) -> Task | None:
        task = sdk_private.current_task(self.manager)
        return _copy(task) if task is not None else None

    async def cancel(self, context: ServerCallContext) -> Task:
        """As ``ActiveTask.cancel``: the executor's cancel first, then the producer."""
        task = self.current()
        if task is not None and task.status.state in TERMINAL_TASK_STATES:
            raise TaskNotCancelableError
        request = RequestContext(
            call_context=context,
            task_id=self.task_id,
            context_id=task.context_id if task else None,
            task=task,
        )
        driver = self.driver
        if not self.ended and driver is not None:
            self.cancel_requested = True
            try:
                await self.handler.agent_executor.cancel(request, self)
            except Exception:
                log.exception("Cancel[%s]: Agent cancel failed", self.task_id)
                if self.task_created and task is not None:
                    await self.enqueue_event(
                        TaskStatusUpdateEvent(
                            task_id=task.id,
                            context_id=task.context_id,
                            status=TaskStatus(state=TaskState.TASK_STATE_FAILED),
                        )
                    )
                raise
            finally:
                driver.cancel()
        if driver is not None:
            await asyncio.wait((driver,))
        task = self.current()
        if task is None:
            raise RuntimeError("Task should have been created")
        if task.status.state not in TERMINAL_TASK_STATES:
            task.status.state = TaskState.TASK_STATE_CANCELED
            await self.handler.plain_store.save(task, context)
        return task

    async def follow(self, queue: asyncio.Queue[Any]) -> AsyncGenerator[Any, None]:
        """A subscription: the task as it is now, then each later event until the run ends."""
        try:
            if not self.task_created:
                first = await queue.get()
                if first is _END:
                    return
                if isinstance(first, BaseException):
                    raise first
            task = self.current()
            if task is not None:
                yield task
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if queue in self.subscribers:
                self.subscribers.remove(queue)


class _Owner(User):
    """The owner scope a task was started under, for work this replica does on its own (a
    takeover)."""

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def is_authenticated(self) -> bool:
        return bool(self._name)

    @property
    def user_name(self) -> str:
        return self._name


class MeshRequestHandler(DefaultRequestHandler):
    """a2a-sdk's ``DefaultRequestHandler`` with the lean unary ``SendMessage`` path above, and
    the :class:`~mesh.a2a.leases.TaskRunner` side of task takeover on shared stores."""

    def __init__(self, *args: Any, takeover: TaskTakeover | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.takeover = takeover
        self.runs: dict[str, _Run] = {}
        self.background: set[asyncio.Task[None]] = set()
        self._lean = (
            sdk_private.event_stream(self) is None
            and sdk_private.push_sender(self) is None
            and not isinstance(self.task_store, VersionedTaskStore)
        )

    @property
    def plain_store(self) -> TaskStore:
        """The task store as lean runs use it: they exist only over a plain (unversioned) one."""
        return cast(TaskStore, self.task_store)

    @staticmethod
    def owner_of(context: ServerCallContext) -> str:
        return resolve_user_scope(context)

    def _owns(self, task_id: str, context: ServerCallContext) -> _Run | None:
        run = self.runs.get(task_id)
        if run is None or run.ended or run.owner != self.owner_of(context):
            return None
        return run

    def _takes(self, params: SendMessageRequest) -> bool:
        """Whether the lean path serves this message; anything unusual goes the default way."""
        return (
            self._lean
            and not params.message.task_id
            and not params.configuration.return_immediately
            and not (
                sdk_private.push_config_store(self) is not None
                and params.configuration.HasField("task_push_notification_config")
            )
        )

    async def _adopt_context(self, params: SendMessageRequest, context: ServerCallContext) -> None:
        """A follow-up naming only its task joins that task's context.

        a2a-sdk otherwise hands it a fresh random ``context_id``, which its own task manager
        then rejects whenever it has to rebuild the task from the store (after a lean run,
        an idle release or a restart) instead of finding it parked in memory.
        """
        message = params.message
        if message.task_id and not message.context_id:
            stored = await self.task_store.get(message.task_id, context)
            if isinstance(stored, StoredTask):  # a versioned store wraps the task
                stored = stored.task
            if stored is not None:
                message.context_id = stored.context_id

    # -- task takeover (mesh.a2a.leases) ----------------------------------------------------

    async def stored_state(self, task_id: str, owner: str) -> TaskState | None:
        stored = await sdk_private.versioned_store(self).get(
            task_id, ServerCallContext(user=_Owner(owner))
        )
        return stored.task.status.state if stored is not None else None

    async def resume(self, claim: Claim) -> None:
        """Runs the claimed request on a2a-sdk's active-task machinery, as a follow-up message
        of the stored task would: its events land on the same task and its event log."""
        context = ServerCallContext(user=_Owner(claim.owner))
        stored = await sdk_private.versioned_store(self).get(claim.task_id, context)
        if stored is None:
            return
        message = Message()
        message.CopyFrom(claim.request)
        message.task_id, message.context_id = claim.task_id, stored.task.context_id
        request = await sdk_private.request_context_builder(self).build(
            params=SendMessageRequest(message=message),
            task_id=claim.task_id,
            context_id=stored.task.context_id,
            task=None,
            context=context,
        )
        active = await sdk_private.active_task_registry(self).get_or_create(
            claim.task_id, call_context=context, create_task_if_missing=False
        )
        async for _ in active.subscribe(request=request):
            pass  # subscribers anywhere read the events from the shared store

    async def fail(self, claim: Claim, reason: str) -> None:
        context = ServerCallContext(user=_Owner(claim.owner))
        stored = await sdk_private.versioned_store(self).get(claim.task_id, context)
        if stored is None or stored.task.status.state in TERMINAL_TASK_STATES:
            return
        task = stored.task
        status = TaskStatus(
            state=TaskState.TASK_STATE_FAILED,
            message=Message(
                message_id=f"{task.id}-abandoned",
                role=Role.ROLE_AGENT,
                task_id=task.id,
                context_id=task.context_id,
                parts=[Part(text=reason)],
            ),
        )
        status.timestamp.GetCurrentTime()
        manager = TaskManager(
            task_store=sdk_private.versioned_store(self),
            context=context,
            task_id=task.id,
            context_id=task.context_id,
            initial_message=None,
        )
        await manager.get_task()
        await manager.save_task_event(
            TaskStatusUpdateEvent(task_id=task.id, context_id=task.context_id, status=status)
        )

    async def _refuse_if_held(self, params: SendMessageRequest) -> None:
        """A follow-up for a task another live replica is executing would run it twice."""
        task_id = params.message.task_id
        if self.takeover is None or not task_id:
            return
        holder = await self.takeover.table.holder(task_id)
        if holder is not None and holder != self.takeover.replica:
            raise UnsupportedOperationError(message=str(TaskHeldError(task_id, holder)))

    # -- A2A methods --------------------------------------------------------------------------

    async def on_message_send(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> Message | Task:
        with store_failures():
            return await self._message_send(params, context)

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        with store_failures():
            task: Task | None = await super().on_get_task(params, context)
            return task

    async def on_list_tasks(
        self, params: ListTasksRequest, context: ServerCallContext
    ) -> ListTasksResponse:
        with store_failures():
            listed: ListTasksResponse = await super().on_list_tasks(params, context)
            return listed

    async def _message_send(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> Message | Task:
        if not self._takes(params):
            await self._refuse_if_held(params)
            await self._adopt_context(params, context)
            # The SDK's telemetry decorator leaves its methods untyped.
            result: Message | Task = await super().on_message_send(params, context)
            return result
        validate_required(params)
        validate_history_length(params.configuration)
        if sdk_private.validates_input_modes(self):
            validate_input_modes(params.message, sdk_private.agent_card(self))
        request = await sdk_private.request_context_builder(self).build(
            params=params,
            task_id=None,
            context_id=params.message.context_id or None,
            task=None,
            context=context,
        )
        run = _Run(self, request, context)
        self.runs[run.task_id] = run
        run.driver = run.loop.create_task(run.drive(), name=f"producer:{run.task_id}")
        run.driver.add_done_callback(run.driver_done)
        result = await run.reply
        if isinstance(result, Task):
            result = apply_history_length(result, params.configuration)
        return result

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        with store_failures():
            await self._refuse_if_held(params)
            await self._adopt_context(params, context)
            async for event in super().on_message_send_stream(params, context):
                yield event

    # -- resubscription on shared stores: corrections to a2a-sdk 1.3.0 --------------------------

    async def _parked_here(self, task_id: str) -> bool:
        """Whether this replica holds the task's ``ActiveTask`` parked between turns (an
        interrupted task) rather than running a request on it."""
        local = await sdk_private.active_task_registry(self).get(task_id)
        return local is not None and not sdk_private.request_running(local)

    async def _subscribe_parked(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        """As a2a-sdk's shared-stream subscription, but tailing the shared event log where it
        would tap the parked local ``ActiveTask``: the next turn may run on another replica,
        and a parked local task never hears of it (the subscriber then waits forever)."""
        validate_required(params)
        stored = await sdk_private.versioned_store(self).get(params.id, context)
        if stored is None:
            raise TaskNotFoundError
        if stored.task.status.state in TERMINAL_TASK_STATES:
            raise UnsupportedOperationError(
                message=f"Task {params.id} is in terminal state: "
                f"{TaskState.Name(stored.task.status.state)}"
            )
        stream = sdk_private.event_stream(self)
        assert stream is not None
        async for event in self._subscribe_remote(params.id, stored.task, stored.version, stream):
            yield event

    async def _subscribe_remote(
        self, task_id: str, task: Task, snapshot_version: TaskVersion, stream: TaskEventStream
    ) -> AsyncGenerator[Event, None]:
        """a2a-sdk's tail of the shared event log, which ends at the first event in a terminal
        or interrupted state, except a ``Task`` still in an interrupted state: that is the
        stored task a follow-up rewrites (its new message appended) before the next turn runs,
        not the end of a turn (a turn ends with a status update)."""
        yield task
        async with aclosing(stream.subscribe(task_id, after=snapshot_version)) as subscription:
            async for versioned in subscription:
                if not versioned.version.is_after(snapshot_version):
                    continue
                event = versioned.event
                yield event
                if isinstance(event, Message):
                    return
                if isinstance(event, TaskStatusUpdateEvent) and event.status.state in (
                    TERMINAL_TASK_STATES | INTERRUPTED_TASK_STATES
                ):
                    return
                if isinstance(event, Task) and event.status.state in TERMINAL_TASK_STATES:
                    return

    async def on_cancel_task(
        self, params: CancelTaskRequest, context: ServerCallContext
    ) -> Task | None:
        run = self._owns(params.id, context)
        with store_failures():
            if run is None:
                task: Task | None = await super().on_cancel_task(params, context)
                return task
            validate_required(params)
            try:
                return await run.cancel(context)
            except UnsupportedOperationError as exc:  # as the default handler's _cancel_local
                raise TaskNotCancelableError from exc

    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        run = self._owns(params.id, context)
        if run is None or not sdk_private.agent_card(self).capabilities.streaming:
            with store_failures():
                if self.takeover is not None and params.id:
                    # A caller waits on this task: if its replica died, take it over now
                    # rather than at the next heartbeat.
                    await self.takeover.claim(params.id)
                if sdk_private.event_stream(self) is not None and await self._parked_here(
                    params.id
                ):
                    subscription = self._subscribe_parked(params, context)
                else:
                    subscription = super().on_subscribe_to_task(params, context)
                async for event in subscription:
                    yield event
            return
        validate_required(params)
        task = run.current()
        if task is not None and task.status.state in TERMINAL_TASK_STATES:
            raise UnsupportedOperationError(
                message=(
                    f"Task {params.id} is in terminal state: {TaskState.Name(task.status.state)}"
                )
            )
        queue: asyncio.Queue[Any] = asyncio.Queue()
        run.subscribers.append(queue)
        async for event in run.follow(queue):
            yield event


_VERSION_METADATA = VERSION_HEADER.lower()


def _speaks(version: str | bytes) -> bool:
    raw = version.decode("ascii", "replace") if isinstance(version, bytes) else version
    return raw.strip().split(".", 1)[0] == PROTOCOL_VERSION_1_0.split(".", 1)[0]


SPEC_GRPC_CODES: dict[type[A2AError], grpc.StatusCode] = {
    PushNotificationNotSupportedError: grpc.StatusCode.UNIMPLEMENTED,
    UnsupportedOperationError: grpc.StatusCode.UNIMPLEMENTED,
    VersionNotSupportedError: grpc.StatusCode.UNIMPLEMENTED,
}
"""A2A 1.0's gRPC codes (section 5.4) where a2a-sdk 1.3.0 answers FAILED_PRECONDITION."""


class MeshGrpcHandler(GrpcHandler):
    """a2a-sdk's ``GrpcHandler`` with a direct unary ``SendMessage`` (same context, same errors)
    and the specification's status codes for the errors in :data:`SPEC_GRPC_CODES`."""

    def _build_call_context(
        self, context: grpc.aio.ServicerContext[Any, Any], request: ProtoMessage
    ) -> ServerCallContext:
        """a2a-sdk's, refusing an ``a2a-version`` of another major version as its HTTP
        bindings do (its gRPC side does not look); a call without one is taken as 1.x.

        Overrides a private hook of ``GrpcHandler``: listed in :mod:`mesh.a2a.sdk_private`.
        """
        version = next(
            (v for k, v in context.invocation_metadata() or () if k == _VERSION_METADATA), None
        )
        if version and not _speaks(version):
            raise VersionNotSupportedError(
                message=f"A2A version {version!r} is not supported; this agent speaks "
                f"{PROTOCOL_VERSION_1_0}"
            )
        return sdk_private.grpc_call_context(self, context, request)

    async def abort_context(
        self, error: A2AError, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        code = SPEC_GRPC_CODES.get(type(error))
        if code is None:
            await super().abort_context(error, context)
            return
        # As a2a-sdk builds it (ErrorInfo in the details), with the code in both places.
        status = status_pb2.Status(code=code.value[0], message=error.message)
        info = any_pb2.Any()
        info.Pack(
            error_details_pb2.ErrorInfo(
                reason=A2A_ERROR_REASONS.get(type(error), "UNKNOWN_ERROR"),
                domain="a2a-protocol.org",
            )
        )
        status.details.append(info)
        rich = status_to_grpc(status)
        context.set_trailing_metadata(
            (*(context.trailing_metadata() or ()), *rich.trailing_metadata)
        )
        await context.abort(rich.code, rich.details)

    async def SendMessage(
        self, request: SendMessageRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> SendMessageResponse:
        try:
            result = await self.request_handler.on_message_send(
                request, self._build_call_context(context, request)
            )
        except A2AError as exc:
            await self.abort_context(exc, context)
            return SendMessageResponse()
        if isinstance(result, Task):
            return SendMessageResponse(task=result)
        return SendMessageResponse(message=result)
