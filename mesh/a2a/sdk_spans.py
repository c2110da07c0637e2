"""``mesh.a2a.install()``: a2a-sdk's span decorators taken off, by every entry point, explicitly.

a2a-sdk wraps its request handler, event queues, consumers, dispatchers and client transports
in OpenTelemetry spans (``@trace_class`` / ``@trace_function``). Even with its spans off, each
wrapper calls a no-op tracer: a share of every hop's server CPU (docs/benchmarks.md, "Tracing
overhead"). The mesh owns tracing (``invoke_agent`` and client spans, mesh.a2a.tracing), so
unless ``OTEL_INSTRUMENTATION_A2A_SDK_ENABLED=true`` asks for a2a-sdk's own spans,
:func:`install` swaps the two decorators for ones that return what they decorate.

The decorators are applied when each a2a-sdk module is imported, so :func:`install` must run
before any of a2a-sdk's server or client modules is: the CLI's callback, the Ray workers'
setup hook, tests/conftest.py and the benchmarks' child processes call it first, and no
module of the mesh imports those a2a-sdk modules when it is merely imported by an entry
point before that. Importing :mod:`mesh.a2a` patches nothing and writes no environment.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

SDK_SPANS_ENV = "OTEL_INSTRUMENTATION_A2A_SDK_ENABLED"

_state: bool | None = None
"""None before :func:`install`; then whether a2a-sdk's wrappers are off."""


class InstallOrderError(RuntimeError):
    """a2a-sdk modules were imported before :func:`install`: they keep their wrappers."""


def _function(func: Callable[..., Any] | None = None, **_: Any) -> Any:
    """``@trace_function`` and ``@trace_function(...)`` without a wrapper."""
    return func if func is not None else (lambda f: f)


def _class(*_: Any, **__: Any) -> Callable[[Any], Any]:
    """``@trace_class(...)`` without wrappers."""
    return lambda cls: cls


def sdk_spans_wanted() -> bool:
    """Whether ``OTEL_INSTRUMENTATION_A2A_SDK_ENABLED=true`` asks for a2a-sdk's own spans."""
    return os.environ.get(SDK_SPANS_ENV, "").strip().lower() == "true"


def decorated_modules() -> list[str]:
    """a2a-sdk modules already imported with the wrapping decorators (too early for install)."""
    early = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("a2a.") or name == "a2a.utils.telemetry" or module is None:
            continue
        bound = vars(module)
        if any(
            bound.get(attr) is not None and bound.get(attr) not in (_function, _class)
            for attr in ("trace_class", "trace_function")
        ):
            early.append(name)
    return sorted(early)


def install() -> bool:
    """Takes a2a-sdk's span wrappers off (unless its spans are asked for); returns whether
    they are off. Idempotent; raises :class:`InstallOrderError` naming the a2a-sdk modules
    imported before it (they would keep their wrappers)."""
    global _state
    if _state is not None:
        return _state
    if sdk_spans_wanted():
        _state = False
        return False
    early = decorated_modules()
    if early:
        raise InstallOrderError(
            "mesh.a2a.install() must run before a2a-sdk's server and client modules are "
            f"imported; already imported with their span wrappers: {', '.join(early)}"
        )
    from mesh.a2a import sdk_private

    sdk_private.replace_span_decorators(_function, _class)
    _state = True
    return True


def installed() -> bool | None:
    """None before :func:`install`; then whether a2a-sdk's span wrappers are off."""
    return _state
