"""A mesh :class:`~mesh.a2a.executor.Executor` as a2a-sdk's ``AgentExecutor``: the one adapter
between the agents and a2a-sdk's request handlers."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue

from mesh.a2a.executor import Executor, Reporter, Request


class SdkExecutor(AgentExecutor):
    """Hands each request to the mesh executor with a reporter on the request's event queue."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # the optional hooks: warm_up, aclose, ...

    # Plain functions handing back the executor's coroutine: no frame of their own per request.
    def execute(
        self, context: RequestContext, event_queue: EventQueue
    ) -> Coroutine[Any, Any, None]:
        request = Request.from_sdk(context)
        return self.inner.execute(request, Reporter(event_queue, request))

    def cancel(self, context: RequestContext, event_queue: EventQueue) -> Coroutine[Any, Any, None]:
        request = Request.from_sdk(context)
        return self.inner.cancel(request, Reporter(event_queue, request))
