"""The only package that imports a2a-sdk: serve executors on three transports, call agents."""

import os

# a2a-sdk wraps its request handler, event queues and client transports in OpenTelemetry
# spans (@trace_class). Whether it does is decided once, when a2a.utils.telemetry is first
# imported, from this variable; with opentelemetry-api installed the wrappers cost a large
# share of a SendMessage's server CPU even with no tracer provider set (docs/benchmarks.md). The
# mesh owns tracing, so its default is off. This is the one place the mesh writes the
# environment, because no Settings object exists yet when a2a-sdk gets imported (any
# import of mesh.a2a comes first); setdefault keeps an explicit
# OTEL_INSTRUMENTATION_A2A_SDK_ENABLED=true for anyone who wants the SDK's spans back.
# Off, the SDK still wraps those methods (around a no-op tracer, which costs CPU too):
# mesh.a2a.sdk_spans takes the wrappers away as well.
os.environ.setdefault("OTEL_INSTRUMENTATION_A2A_SDK_ENABLED", "false")

from mesh.a2a import sdk_spans

sdk_spans.skip_wrappers_when_off()

from mesh.a2a.cards import Endpoints, build_card  # noqa: E402 - after the SDK spans switch
from mesh.a2a.client import MeshClient, Replica, ReplicaSource, StaticReplicas  # noqa: E402 - after the SDK spans switch
from mesh.a2a.server import AgentServer  # noqa: E402 - after the SDK spans switch
from mesh.a2a.tasks import open_task  # noqa: E402 - after the SDK spans switch

__all__ = [
    "AgentServer",
    "Endpoints",
    "MeshClient",
    "Replica",
    "ReplicaSource",
    "StaticReplicas",
    "build_card",
    "open_task",
]
