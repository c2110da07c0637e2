"""What an agent's executor sees of A2A: the request it serves and the task it reports on.

Agents (the SLM, tools and planner executors, the recording wrapper, test agents) implement
:class:`Executor` and never touch a2a-sdk's server machinery: :class:`~mesh.a2a.server.AgentServer`
adapts them to a2a-sdk's ``AgentExecutor`` (:func:`to_sdk`), so an upgrade of a2a-sdk changes
this module, not every agent. Messages, parts and tasks stay A2A's wire types
(``a2a.types``), which are the protocol itself.

A task is opened on the first event reported for it: a2a-sdk requires a ``Task`` event
before any status update, and it hands a follow-up message that carries only ``taskId`` a
fresh random ``context_id`` (events with that id are rejected, -32602), so
:class:`Reporter` always reports with the task's own ids.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from a2a.helpers.proto_helpers import get_data_parts, get_message_text, new_task
from a2a.types import a2a_pb2 as pb

if TYPE_CHECKING:
    from a2a.server.agent_execution import AgentExecutor, RequestContext
    from a2a.server.cluster import VersionedTaskStore
    from a2a.server.tasks import TaskStore, TaskUpdater

FINISHED_STATES = frozenset(
    {
        pb.TaskState.TASK_STATE_COMPLETED,
        pb.TaskState.TASK_STATE_CANCELED,
        pb.TaskState.TASK_STATE_FAILED,
        pb.TaskState.TASK_STATE_REJECTED,
    }
)
"""States after which a task takes no more events (a cancel of such a task changes nothing)."""


class Request:
    """One incoming message (or cancel) as an executor sees it.

    ``task`` is the stored task a follow-up message continues (None for a new task);
    ``task_id`` and ``context_id`` are that task's own ids. ``caller`` is the authenticated
    caller's name ('' when anonymous); ``metadata`` the request's metadata.
    """

    __slots__ = ("_metadata", "caller", "context_id", "message", "task", "task_id")

    def __init__(
        self,
        message: pb.Message | None,
        *,
        task_id: str,
        context_id: str,
        task: pb.Task | None = None,
        caller: str = "",
        metadata: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.message = message
        self.task = task
        self.task_id = task.id if task is not None else task_id
        self.context_id = task.context_id if task is not None else context_id
        self.caller = caller
        self._metadata = metadata

    @classmethod
    def from_sdk(cls, context: RequestContext) -> Request:
        """The request a2a-sdk's ``RequestContext`` describes."""
        user = context.call_context.user
        return cls(
            context.message,
            task_id=context.task_id or "",
            context_id=context.context_id or "",
            task=context.current_task,
            caller=user.user_name if user.is_authenticated else "",
            metadata=lambda: context.metadata,  # converted only when an executor asks
        )

    @property
    def metadata(self) -> dict[str, Any]:
        value = self._metadata
        if callable(value):
            value = self._metadata = value()
        return value or {}

    @property
    def text(self) -> str:
        """The message's text parts, joined by newlines ('' without a message)."""
        return get_message_text(self.message) if self.message is not None else ""

    @property
    def data(self) -> list[Any]:
        """The values of the message's data parts, in order."""
        return get_data_parts(self.message.parts) if self.message is not None else []


class EventSink(Protocol):
    """Where a reporter's events go: the request's event queue, or a stored task."""

    async def enqueue_event(self, event: Any) -> None: ...


class Reporter:
    """Reports one task's progress, artifacts and end state (opening the task first if new).

    Every method but :meth:`reply` reports on the task; :meth:`reply` answers with one direct
    message instead (no task is created). Reporting after an end state raises RuntimeError.
    """

    __slots__ = ("_request", "_sink", "_updater")

    def __init__(self, sink: EventSink, request: Request) -> None:
        self._sink = sink
        self._request = request
        self._updater: TaskUpdater | None = None

    @property
    def task_id(self) -> str:
        return self._request.task_id

    @property
    def context_id(self) -> str:
        return self._request.context_id

    async def open(self) -> None:
        """Reports a new task as SUBMITTED now rather than with its first update (a caller
        polling GetTask sees it while slow work starts); nothing for a follow-up."""
        await self._open()

    async def _open(self) -> TaskUpdater:
        updater = self._updater
        if updater is None:
            request = self._request
            if request.task is None:
                history = [request.message] if request.message is not None else []
                await self._sink.enqueue_event(
                    new_task(
                        request.task_id,
                        request.context_id,
                        pb.TaskState.TASK_STATE_SUBMITTED,
                        history=history,
                    )
                )
            updater = self._updater = _updater_class()(
                self._sink,  # type: ignore[arg-type]  # the queue's one method the updater calls
                request.task_id,
                request.context_id,
            )
        return updater

    def agent_message(
        self, parts: list[pb.Part], metadata: dict[str, Any] | None = None
    ) -> pb.Message:
        """A message from this agent on this task (for a status, or :meth:`reply`)."""
        return pb.Message(
            role=pb.Role.ROLE_AGENT,
            task_id=self.task_id,
            context_id=self.context_id,
            message_id=str(uuid.uuid4()),
            metadata=metadata,
            parts=parts,
        )

    def working(
        self, message: pb.Message | None = None, *, metadata: dict[str, Any] | None = None
    ) -> Awaitable[None]:
        """WORKING, with an optional status message and status-update metadata (progress)."""
        updater = self._updater
        if updater is None:
            return self._first(self.working, message, metadata=metadata)
        if metadata is None:
            return updater.start_work(message)
        return updater.update_status(
            pb.TaskState.TASK_STATE_WORKING, message=message, metadata=metadata
        )

    def artifact(
        self,
        parts: list[pb.Part],
        *,
        name: str | None = None,
        artifact_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        append: bool | None = None,
        last_chunk: bool | None = None,
    ) -> Awaitable[None]:
        """One artifact, or with ``artifact_id``/``append``/``last_chunk`` a chunk of one."""
        updater = self._updater
        if updater is None:
            return self._first(
                self.artifact,
                parts,
                name=name,
                artifact_id=artifact_id,
                metadata=metadata,
                append=append,
                last_chunk=last_chunk,
            )
        return updater.add_artifact(
            parts,
            artifact_id=artifact_id,
            name=name,
            metadata=metadata,
            append=append,
            last_chunk=last_chunk,
        )

    def complete(self, message: pb.Message | None = None) -> Awaitable[None]:
        updater = self._updater
        return self._first(self.complete, message) if updater is None else updater.complete(message)

    def fail(self, message: pb.Message | None = None) -> Awaitable[None]:
        """FAILED: the work broke (a retry may succeed)."""
        updater = self._updater
        return self._first(self.fail, message) if updater is None else updater.failed(message)

    def reject(self, message: pb.Message | None = None) -> Awaitable[None]:
        """REJECTED: the agent will not do this (the same input cannot succeed)."""
        updater = self._updater
        return self._first(self.reject, message) if updater is None else updater.reject(message)

    def require_input(self, message: pb.Message | None = None) -> Awaitable[None]:
        """INPUT_REQUIRED: the task waits for the caller's next message on it."""
        updater = self._updater
        if updater is None:
            return self._first(self.require_input, message)
        return updater.requires_input(message)

    def cancel(self, message: pb.Message | None = None) -> Awaitable[None]:
        updater = self._updater
        return self._first(self.cancel, message) if updater is None else updater.cancel(message)

    async def _first(
        self, report: Callable[..., Awaitable[None]], *args: Any, **kwargs: Any
    ) -> None:
        """Opens the task, then reports. (The methods above are plain functions handing back the
        updater's own awaitable once the task is open: no coroutine of their own per event.)"""
        await self._open()
        await report(*args, **kwargs)

    async def reply(self, message: pb.Message) -> None:
        """Answers with one direct message and no task (only as the request's only event)."""
        await self._sink.enqueue_event(message)


def _updater_class() -> type[TaskUpdater]:
    """a2a-sdk's ``TaskUpdater``, imported on first use: importing this module must not import
    a2a-sdk's server modules (they take their span decorators when imported: mesh.a2a.install)."""
    global _TaskUpdater
    if _TaskUpdater is None:
        from a2a.server.tasks import TaskUpdater

        _TaskUpdater = TaskUpdater
    return _TaskUpdater


_TaskUpdater: type[TaskUpdater] | None = None


class Executor(ABC):
    """An agent's logic behind A2A.

    Optional hooks :class:`~mesh.a2a.server.AgentServer` calls when present: ``prepare()``
    (before any gRPC thread exists: child processes), ``start(tasks: StoredTasks, takeover:
    bool)``, ``warm_up()`` (before the replica reports ready), ``card_extensions()`` and
    ``aclose()`` (after the drain).
    """

    @abstractmethod
    async def execute(self, request: Request, task: Reporter) -> None:
        """Serves one message; ends with the task in an end state, waiting for input, or
        with one :meth:`Reporter.reply`. An exception fails the task."""

    @abstractmethod
    async def cancel(self, request: Request, task: Reporter) -> None:
        """Stops the task's work and (unless it already ended) reports it canceled."""


class StoredTasks:
    """The agent's task store, for work an executor does outside any request (a run resumed
    after a restart): a reporter whose events apply to the stored task by the same rules as
    a live request's."""

    def __init__(self, store: TaskStore | VersionedTaskStore) -> None:
        self._store = store

    def reporter(self, task_id: str, context_id: str) -> Reporter:
        """Reports on an existing stored task."""
        placeholder = pb.Task(id=task_id, context_id=context_id)
        return Reporter(_StoreSink(self._store, task_id, context_id), _existing(placeholder))


def _existing(task: pb.Task) -> Request:
    return Request(None, task_id=task.id, context_id=task.context_id, task=task)


class _StoreSink:
    """Applies each event to the stored task with a2a-sdk's ``TaskManager``."""

    def __init__(
        self, store: TaskStore | VersionedTaskStore, task_id: str, context_id: str
    ) -> None:
        from a2a.server.context import ServerCallContext
        from a2a.server.tasks import TaskManager

        self._manager = TaskManager(store, ServerCallContext(), task_id, context_id, None)

    async def enqueue_event(self, event: Any) -> None:
        await self._manager.process(event)


def to_sdk(executor: Executor) -> AgentExecutor:
    """``executor`` as a2a-sdk's request handlers run it."""
    from mesh.a2a.sdk_executor import SdkExecutor

    return SdkExecutor(executor)
