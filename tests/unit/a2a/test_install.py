"""mesh.a2a.install(): importing the mesh patches nothing; the explicit call takes a2a-sdk's span
wrappers off (unless its spans are asked for), and refuses loudly when it comes too late.

Each case runs in a fresh interpreter: import order is the subject.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.procs import ROOT


def _python(code: str, **env: str | None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in env}
    environ.update({k: v for k, v in env.items() if v is not None})
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


_IMPORT_ONLY = """
import os, sys
before = dict(os.environ)
import mesh.a2a, mesh.a2a.executor, mesh.tools.executor, mesh.recording.store
from a2a.utils import telemetry
print(dict(os.environ) == before)
print(telemetry.trace_class.__module__, telemetry.trace_function.__module__)
print(sorted(n for n in sys.modules if n.startswith(("a2a.server", "a2a.client"))))
print(mesh.a2a.installed())
"""


def test_importing_the_mesh_writes_no_environment_and_swaps_nothing() -> None:
    done = _python(_IMPORT_ONLY, OTEL_INSTRUMENTATION_A2A_SDK_ENABLED=None)
    assert done.returncode == 0, done.stderr
    same_env, decorators, server_modules, installed = done.stdout.splitlines()
    assert same_env == "True"
    assert decorators == "a2a.utils.telemetry a2a.utils.telemetry"  # a2a-sdk's own
    assert server_modules == "[]"  # an agent's module can be imported before install()
    assert installed == "None"


_WRAPPED = """
import mesh.a2a
print(mesh.a2a.install(), mesh.a2a.install())  # idempotent
from a2a.client.transports.grpc import GrpcTransport
from a2a.server.events.event_queue import EventQueueLegacy
from a2a.server.request_handlers.default_request_handler_v2 import DefaultRequestHandlerV2
methods = (
    DefaultRequestHandlerV2.on_message_send,
    EventQueueLegacy.enqueue_event,
    GrpcTransport.send_message,
)
# a2a.utils.telemetry's wrapper
print(sum(m.__code__.co_filename.endswith("telemetry.py") for m in methods))
"""


@pytest.mark.parametrize(
    ("sdk_spans", "off", "wrapped"), [(None, True, 0), ("false", True, 0), ("true", False, 3)]
)
def test_install_leaves_a2a_sdk_unwrapped_unless_its_spans_are_asked_for(
    sdk_spans: str | None, off: bool, wrapped: int
) -> None:
    """Off (the mesh's default) a2a-sdk's methods run unwrapped; asked for, its spans stay."""
    done = _python(_WRAPPED, OTEL_INSTRUMENTATION_A2A_SDK_ENABLED=sdk_spans)
    assert done.returncode == 0, done.stderr
    result, count = done.stdout.splitlines()
    assert result == f"{off} {off}"
    assert int(count) == wrapped


_TOO_LATE = """
from a2a.server.request_handlers import DefaultRequestHandler
import mesh.a2a
try:
    mesh.a2a.install()
except mesh.a2a.InstallOrderError as exc:
    print(exc)
"""


def test_install_after_a2a_sdk_server_modules_fails_naming_them() -> None:
    done = _python(_TOO_LATE, OTEL_INSTRUMENTATION_A2A_SDK_ENABLED=None)
    assert done.returncode == 0, done.stderr
    assert "must run before a2a-sdk's server and client modules" in done.stdout
    assert "a2a.server.request_handlers.default_request_handler_v2" in done.stdout


_SERVER_WITHOUT_INSTALL = """
from mesh.a2a.server import AgentServer
from mesh.config import ServiceSpec, Settings
from tests.support.echo import EchoExecutor
try:
    AgentServer(ServiceSpec(name="echo"), Settings(http_port=0, grpc_port=0), EchoExecutor())
except Exception as exc:
    print(type(exc).__name__)
"""


def test_an_agent_server_built_without_install_refuses_to_start() -> None:
    done = _python(_SERVER_WITHOUT_INSTALL, OTEL_INSTRUMENTATION_A2A_SDK_ENABLED=None)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "InstallOrderError"
