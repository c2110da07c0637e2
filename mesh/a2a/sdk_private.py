"""Every use of a2a-sdk's private names (and its one patched module), in one place.

a2a-sdk is pinned (pyproject.toml); each function below is one access, with why the mesh
needs it and what upstream change would remove it. :data:`ACCESSES` lists them for
tests/unit/a2a/test_sdk_private.py, which checks that each name still exists with the
shape used here and fails with one message listing everything that moved. The rest of the
mesh calls these functions, never the private names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import grpc
    from a2a.client.transports import JsonRpcTransport
    from a2a.server.agent_execution import RequestContextBuilder
    from a2a.server.agent_execution.active_task import ActiveTask
    from a2a.server.agent_execution.active_task_registry import ActiveTaskRegistry
    from a2a.server.cluster import TaskEventStream, VersionedTaskStore
    from a2a.server.context import ServerCallContext
    from a2a.server.request_handlers import DefaultRequestHandler, GrpcHandler
    from a2a.server.tasks import PushNotificationConfigStore, PushNotificationSender, TaskManager
    from a2a.types.a2a_pb2 import AgentCard, Task
    from google.protobuf.message import Message as ProtoMessage


@dataclass(frozen=True)
class Access:
    """One private name: where it lives, the shape the mesh relies on, why, and the fix."""

    owner: str
    """``module:Class`` (or ``module`` for a module-level name)."""
    name: str
    shape: tuple[str, ...] | str
    """A callable's parameter names (after ``self``), or an attribute's type name."""
    why: str
    upstream: str


ACCESSES: tuple[Access, ...] = (
    Access(
        "a2a.server.tasks.task_manager:TaskManager",
        "_current_task",
        "Task | None",
        "the lean SendMessage path reads the task the manager holds in memory (get_task() "
        "reads the store, which the lean path writes only once per loop turn)",
        "a public TaskManager.current_task property",
    ),
    Access(
        "a2a.server.agent_execution.active_task:ActiveTask",
        "_request_lock",
        "Lock",
        "whether a parked (interrupted) task is running a request here, to tail the shared "
        "event log instead of the local ActiveTask on resubscription",
        "an ActiveTask.is_running() accessor, or a fix of resubscription to parked tasks on "
        "shared stores",
    ),
    Access(
        "a2a.server.request_handlers.default_request_handler_v2:DefaultRequestHandlerV2",
        "_event_stream",
        "TaskEventStream | None",
        "the lean path serves only handlers without a cross-replica event stream; parked "
        "tasks are tailed on it",
        "public read-only properties for the handler's constructor arguments",
    ),
    Access(
        "a2a.server.request_handlers.default_request_handler_v2:DefaultRequestHandlerV2",
        "_push_sender",
        "PushNotificationSender | None",
        "the lean path serves only handlers without push notifications",
        "as _event_stream",
    ),
    Access(
        "a2a.server.request_handlers.default_request_handler_v2:DefaultRequestHandlerV2",
        "_push_config_store",
        "PushNotificationConfigStore | None",
        "a message carrying a push config goes the default way",
        "as _event_stream",
    ),
    Access(
        "a2a.server.request_handlers.default_request_handler_v2:DefaultRequestHandlerV2",
        "_validate_input_modes",
        "bool",
        "the lean path validates input modes exactly when the default path would",
        "as _event_stream",
    ),
    Access(
        "a2a.server.request_handlers.default_request_handler_v2:DefaultRequestHandlerV2",
        "_agent_card",
        "AgentCard",
        "input-mode validation and the streaming capability on the lean path",
        "as _event_stream",
    ),
    Access(
        "a2a.server.request_handlers.default_request_handler_v2:DefaultRequestHandlerV2",
        "_request_context_builder",
        "RequestContextBuilder",
        "the lean path and task takeover build the executor's RequestContext as the default "
        "path does",
        "as _event_stream",
    ),
    Access(
        "a2a.server.request_handlers.default_request_handler_v2:DefaultRequestHandlerV2",
        "_active_task_registry",
        "ActiveTaskRegistry",
        "task takeover resumes a claimed task on the handler's own active tasks; a parked "
        "task is found there",
        "a public DefaultRequestHandler.resume(task_id, request) for takeover",
    ),
    Access(
        "a2a.server.request_handlers.default_request_handler_v2:DefaultRequestHandlerV2",
        "_versioned_store",
        "VersionedTaskStore",
        "task takeover and shared-stream subscription read the stored task with its version",
        "as _event_stream",
    ),
    Access(
        "a2a.server.request_handlers.grpc_handler:GrpcHandler",
        "_build_call_context",
        ("context", "request"),
        "MeshGrpcHandler overrides it to refuse another major a2a-version on gRPC, as the "
        "HTTP bindings do, and calls it for its direct unary SendMessage",
        "version negotiation in GrpcHandler itself, and a public call-context hook",
    ),
    Access(
        "a2a.client.transports.grpc",
        "_map_grpc_error",
        ("e",),
        "the client's direct gRPC SendMessage raises exactly the transport's exceptions",
        "a public error-mapping function in a2a.client.transports",
    ),
    Access(
        "a2a.client.transports.jsonrpc:JsonRpcTransport",
        "_check_jsonrpc_response",
        ("response_data",),
        "the client's pooled JSON-RPC SendMessage maps errors exactly as the transport does",
        "a public JSON-RPC error-mapping function",
    ),
    Access(
        "a2a.utils.telemetry",
        "trace_function",
        ("func", "span_name", "kind", "attributes", "attribute_extractor"),
        "public, but replaced: install() swaps it for a no-op before a2a-sdk's modules "
        "import it (mesh.a2a.sdk_spans)",
        "a switch that applies no wrapper at all while a2a-sdk's spans are off",
    ),
    Access(
        "a2a.utils.telemetry",
        "trace_class",
        ("include_list", "exclude_list", "kind"),
        "as trace_function",
        "as trace_function",
    ),
)


# -- the accesses -----------------------------------------------------------------------


def current_task(manager: TaskManager) -> Task | None:
    """The task a ``TaskManager`` holds in memory (``_current_task``)."""
    return manager._current_task  # noqa: SLF001 - see ACCESSES


def request_running(active: ActiveTask) -> bool:
    """Whether an ``ActiveTask`` is running a request now (``_request_lock``)."""
    return active._request_lock.locked()  # noqa: SLF001 - see ACCESSES


def event_stream(handler: DefaultRequestHandler) -> TaskEventStream | None:
    return handler._event_stream  # noqa: SLF001 - see ACCESSES


def push_sender(handler: DefaultRequestHandler) -> PushNotificationSender | None:
    return handler._push_sender  # noqa: SLF001 - see ACCESSES


def push_config_store(handler: DefaultRequestHandler) -> PushNotificationConfigStore | None:
    return handler._push_config_store  # noqa: SLF001 - see ACCESSES


def validates_input_modes(handler: DefaultRequestHandler) -> bool:
    return handler._validate_input_modes  # noqa: SLF001 - see ACCESSES


def agent_card(handler: DefaultRequestHandler) -> AgentCard:
    return handler._agent_card  # noqa: SLF001 - see ACCESSES


def request_context_builder(handler: DefaultRequestHandler) -> RequestContextBuilder:
    return handler._request_context_builder  # noqa: SLF001 - see ACCESSES


def active_task_registry(handler: DefaultRequestHandler) -> ActiveTaskRegistry:
    return handler._active_task_registry  # noqa: SLF001 - see ACCESSES


def versioned_store(handler: DefaultRequestHandler) -> VersionedTaskStore:
    return handler._versioned_store  # noqa: SLF001 - see ACCESSES


def grpc_call_context(
    handler: GrpcHandler, context: grpc.aio.ServicerContext[Any, Any], request: ProtoMessage
) -> ServerCallContext:
    """``GrpcHandler``'s own ``_build_call_context`` (an override calls it as its super)."""
    from a2a.server.request_handlers import GrpcHandler

    return GrpcHandler._build_call_context(handler, context, request)  # noqa: SLF001 - see ACCESSES


def map_grpc_error(error: grpc.aio.AioRpcError) -> NoReturn:
    """Raises what a2a-sdk's gRPC transport raises for ``error``."""
    from a2a.client.transports.grpc import _map_grpc_error

    _map_grpc_error(error)


def check_jsonrpc_response(transport: JsonRpcTransport, data: dict[str, Any]) -> dict[str, Any]:
    """The JSON-RPC response checked (errors raised) as a2a-sdk's transport checks it."""
    checked: dict[str, Any] = transport._check_jsonrpc_response(data)  # noqa: SLF001 - see ACCESSES
    return checked


REPLACED: dict[str, Any] = {}
"""a2a-sdk's own decorators, by name, once :func:`replace_span_decorators` swapped them."""


def replace_span_decorators(function: Callable[..., Any], cls: Callable[..., Any]) -> None:
    """Replaces ``trace_function`` and ``trace_class`` for every a2a-sdk module imported later."""
    from a2a.utils import telemetry

    REPLACED.setdefault("trace_function", telemetry.trace_function)
    REPLACED.setdefault("trace_class", telemetry.trace_class)
    telemetry.trace_function = function
    telemetry.trace_class = cls
