"""The one way mesh executors open (or continue) an A2A task.

a2a-sdk requires a ``Task`` event before any status update, and it hands a follow-up
message that carries only ``taskId`` a fresh random ``context_id``; emitting events with
that id is rejected (-32602). Every executor therefore starts with :func:`open_task`.
"""

from __future__ import annotations

from a2a.helpers.proto_helpers import new_task
from a2a.server.agent_execution import RequestContext
from a2a.server.events import EventQueue
from a2a.server.tasks import TaskUpdater
from a2a.types import a2a_pb2 as pb

FINISHED_STATES = frozenset(
    {
        pb.TaskState.TASK_STATE_COMPLETED,
        pb.TaskState.TASK_STATE_CANCELED,
        pb.TaskState.TASK_STATE_FAILED,
        pb.TaskState.TASK_STATE_REJECTED,
    }
)
"""States after which a task takes no more events (a cancel of such a task changes nothing)."""


async def open_task(context: RequestContext, event_queue: EventQueue) -> TaskUpdater:
    """Returns an updater bound to the task's real ids, enqueueing the task when it is new."""
    task = context.current_task
    if task is not None:
        return TaskUpdater(event_queue, task.id, task.context_id)
    assert context.task_id is not None
    assert context.context_id is not None
    history = [context.message] if context.message is not None else []
    await event_queue.enqueue_event(
        new_task(
            context.task_id, context.context_id, pb.TaskState.TASK_STATE_SUBMITTED, history=history
        )
    )
    return TaskUpdater(event_queue, context.task_id, context.context_id)
