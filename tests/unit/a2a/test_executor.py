"""The agents' executor API: what a request shows of a2a-sdk's request context, and the events
a reporter puts on the queue (the task opened once, with the task's own ids)."""

from __future__ import annotations

from typing import Any

from a2a.auth.user import User
from a2a.helpers import new_data_part, new_text_part
from a2a.server.agent_execution import RequestContext
from a2a.server.context import ServerCallContext
from a2a.types import a2a_pb2 as pb
from google.protobuf.json_format import ParseDict

from mesh.a2a.executor import Reporter, Request


class _Queue:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def enqueue_event(self, event: Any) -> None:
        self.events.append(event)


class _Alice(User):
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def user_name(self) -> str:
        return "alice"


def _message(*parts: pb.Part, task_id: str = "") -> pb.Message:
    return pb.Message(role=pb.Role.ROLE_USER, message_id="m-1", task_id=task_id, parts=list(parts))


def test_a_request_shows_text_data_caller_and_metadata() -> None:
    params = pb.SendMessageRequest(
        message=_message(new_text_part("hello"), new_data_part({"n": 2}), new_text_part("there"))
    )
    ParseDict({"channel": "mail"}, params.metadata)
    request = Request.from_sdk(RequestContext(ServerCallContext(user=_Alice()), request=params))
    assert request.text == "hello\nthere"
    assert request.data == [{"n": 2}]
    assert request.caller == "alice"
    assert request.metadata == {"channel": "mail"}
    assert request.task is None
    assert request.task_id
    assert request.context_id
    anonymous = Request.from_sdk(RequestContext(ServerCallContext(), request=params))
    assert anonymous.caller == ""


async def test_a_new_task_is_opened_once_before_its_first_update() -> None:
    message = _message(new_text_part("hi"))
    request = Request(message, task_id="t-1", context_id="c-1")
    queue = _Queue()
    task = Reporter(queue, request)
    await task.working(metadata={"progress": 1})
    await task.artifact([new_text_part("out")], name="answer")
    await task.complete(task.agent_message([new_text_part("done")]))
    opened, working, artifact, completed = queue.events
    assert isinstance(opened, pb.Task)
    assert (opened.id, opened.context_id) == ("t-1", "c-1")
    assert opened.status.state == pb.TaskState.TASK_STATE_SUBMITTED
    assert list(opened.history) == [message]
    assert working.status.state == pb.TaskState.TASK_STATE_WORKING
    assert dict(working.metadata) == {"progress": 1}
    assert artifact.artifact.name == "answer"
    assert completed.status.state == pb.TaskState.TASK_STATE_COMPLETED
    assert completed.status.message.parts[0].text == "done"
    assert {e.context_id for e in queue.events} == {"c-1"}


async def test_a_follow_up_reports_on_its_task_with_the_tasks_own_context() -> None:
    stored = pb.Task(
        id="t-2",
        context_id="c-2",
        status=pb.TaskStatus(state=pb.TaskState.TASK_STATE_INPUT_REQUIRED),
    )
    # a2a-sdk hands a follow-up naming only its task a fresh context id
    request = Request(_message(task_id="t-2"), task_id="t-2", context_id="fresh", task=stored)
    queue = _Queue()
    await Reporter(queue, request).reject()
    (rejected,) = queue.events  # no Task event: the task exists
    assert (rejected.task_id, rejected.context_id) == ("t-2", "c-2")
    assert rejected.status.state == pb.TaskState.TASK_STATE_REJECTED


async def test_a_reply_is_one_direct_message_and_no_task() -> None:
    queue = _Queue()
    task = Reporter(queue, Request(_message(), task_id="t-3", context_id="c-3"))
    answer = task.agent_message([new_text_part("direct")])
    await task.reply(answer)
    assert queue.events == [answer]
