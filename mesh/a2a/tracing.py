"""The A2A hop's telemetry: context in at the admission gate, spans around executor and client.

* Server side: the admission gates (:mod:`mesh.a2a.gates`) extract the caller's W3C context
  from HTTP headers or gRPC metadata and make it current for the request, and record the
  request's latency per agent and transport (:class:`HopTelemetry`). The executor runs
  inside an ``invoke_agent {agent}`` SERVER span (:class:`TracedExecutor`) carrying the
  A2A task and context ids, so a task's trace can be found by its id.
* Client side: :class:`~mesh.a2a.client.MeshClient` opens a CLIENT span per call
  (``SendMessage {agent}``, retries included) and injects its context into the call's
  headers / metadata, on the a2a-sdk transports and on the lean fast paths alike.

a2a-sdk's own spans stay off unless ``OTEL_INSTRUMENTATION_A2A_SDK_ENABLED=true`` (see
:func:`mesh.a2a.install`): they cost a large share of a request's CPU (docs/benchmarks.md)
and do not cross the wire.
The spans exist only when :func:`mesh.telemetry.configure` turned tracing on; the request
metrics whenever something reads them (``/metrics``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.types.a2a_pb2 import TaskState, TaskStatusUpdateEvent
from opentelemetry import context as otel_context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from mesh.telemetry import names
from mesh.telemetry.propagation import from_asgi, from_grpc
from mesh.telemetry.setup import STATE

_FAILED = frozenset({TaskState.TASK_STATE_FAILED, TaskState.TASK_STATE_REJECTED})


class HopTelemetry:
    """Per replica: attaches the caller's context to a request (when ``traced``) and records
    its metrics (when metered)."""

    def __init__(self, agent: str, in_flight: Callable[[], int], *, traced: bool = True) -> None:
        self.agent = agent
        self._traced = traced
        self._instruments = STATE.instruments
        if self._instruments is not None:
            self._instruments.observe_in_flight(agent, in_flight)

    def enter_http(self, headers: Mapping[bytes, bytes]) -> tuple[object, float]:
        token = otel_context.attach(from_asgi(headers)) if self._traced else None
        return token, time.perf_counter()

    def enter_grpc(self, metadata: Iterable[tuple[str, Any]] | None) -> tuple[object, float]:
        token = otel_context.attach(from_grpc(metadata)) if self._traced else None
        return token, time.perf_counter()

    def leave(
        self,
        entered: tuple[object, float],
        transport: str,
        method: str | None = None,
        error: BaseException | None = None,
    ) -> None:
        token, started = entered
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]  # the token attach() gave
        if self._instruments is None:
            return
        attributes = {names.AGENT_NAME: self.agent, names.TRANSPORT: transport}
        if method:
            attributes[names.RPC_METHOD] = method
        if error is not None:
            attributes[names.ERROR_TYPE] = type(error).__name__
        self._instruments.server_duration.record(time.perf_counter() - started, attributes)


class _StateTap:
    """The executor's event queue, noting the last task state the executor reported."""

    def __init__(self, queue: EventQueue) -> None:
        self._queue = queue
        self.state: int | None = None
        self.note: str = ""

    def enqueue_event(self, event: Any) -> Awaitable[None]:
        # A plain method handing back the queue's own awaitable: no coroutine frame of its
        # own per event (an ``async def`` here cost every echo request measurably).
        if isinstance(event, TaskStatusUpdateEvent):
            self.state = event.status.state
            if event.status.state in _FAILED:
                self.note = " ".join(p.text for p in event.status.message.parts if p.text)[:200]
        return self._queue.enqueue_event(event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


class TracedExecutor(AgentExecutor):
    """Runs an executor inside the agent's ``invoke_agent {agent}`` span (GenAI conventions)."""

    def __init__(self, inner: AgentExecutor, agent: str, replica_id: str) -> None:
        self.inner = inner
        self.agent = agent
        self.replica_id = replica_id
        self._name = f"{names.OP_INVOKE_AGENT} {agent}"
        # Static facts (description, version) are resource attributes, not repeated per span;
        # these four are the same on every span of this replica, so they are built once.
        self._static: dict[str, Any] = {
            names.OPERATION: names.OP_INVOKE_AGENT,
            names.AGENT_NAME: agent,
            names.AGENT_ID: replica_id,
            names.OPENINFERENCE_KIND: "AGENT",
        }

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # e.g. aclose()

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        tracer = STATE.tracer
        if tracer is None:
            await self.inner.execute(context, event_queue)
            return
        attributes = self._static.copy()
        if context.task_id:
            attributes[names.TASK_ID] = context.task_id
        if context.context_id:
            attributes[names.CONTEXT_ID] = context.context_id
            attributes[names.CONVERSATION_ID] = context.context_id
        tap = _StateTap(event_queue)
        with tracer.start_as_current_span(
            self._name, kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            await self.inner.execute(context, tap)  # type: ignore[arg-type]  # a duck-typed EventQueue
            if tap.state is not None:
                span.set_attribute(names.TASK_STATE, TaskState.Name(tap.state))
                if tap.state in _FAILED:
                    span.set_status(Status(StatusCode.ERROR, tap.note or TaskState.Name(tap.state)))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await self.inner.cancel(context, event_queue)


_CLIENT_SPANS: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
"""Name and start attributes of the client span per (method, agent): built once, not per call."""


def client_span(method: str, agent: str) -> Span | None:
    """A CLIENT span for one mesh-client call; the caller makes it current (or carries it)."""
    tracer = STATE.tracer
    if tracer is None:
        return None
    known = _CLIENT_SPANS.get((method, agent))
    if known is None:
        known = _CLIENT_SPANS[method, agent] = (
            f"{method} {agent}",
            {
                names.RPC_SYSTEM: "a2a",
                names.RPC_METHOD: method,
                names.AGENT_NAME: agent,
                names.OPERATION: names.OP_INVOKE_AGENT,
            },
        )
    return tracer.start_span(known[0], kind=SpanKind.CLIENT, attributes=known[1])


def finish_client_span(
    span: Span | None,
    *,
    replica: Any = None,
    binding: str | None = None,
    task: Any = None,
    error: BaseException | None = None,
    attempts: int = 1,
    started: float | None = None,
) -> None:
    """Ends a client span with where the call went and what came back."""
    if span is None:
        return
    attributes: dict[str, Any] = {}
    if replica is not None:
        attributes[names.REPLICA] = replica.replica_id
    if binding is not None:
        attributes[names.TRANSPORT] = binding
    if attempts > 1:
        attributes[names.RETRIES] = attempts - 1
    if task is not None and getattr(task, "id", None):
        attributes[names.TASK_ID] = task.id
        attributes[names.CONTEXT_ID] = task.context_id
        attributes[names.TASK_STATE] = TaskState.Name(task.status.state)
    span.set_attributes(attributes)
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.set_attribute(names.ERROR_TYPE, type(error).__name__)
    instruments = STATE.instruments
    if instruments is not None and started is not None:
        labels = {
            names.AGENT_NAME: span.attributes.get(names.AGENT_NAME, ""),  # type: ignore[attr-defined]  # a recording span
            names.TRANSPORT: binding or "",
        }
        if error is not None:
            labels[names.ERROR_TYPE] = type(error).__name__
        instruments.client_duration.record(time.perf_counter() - started, labels)
    span.end()
