"""a2a-sdk's span decorators, taken off entirely while its spans are off.

With ``OTEL_INSTRUMENTATION_A2A_SDK_ENABLED=false`` a2a-sdk stops making spans, but its
``@trace_class`` / ``@trace_function`` still wrap every method of the request handler, the
event queues, the consumers, the dispatchers and the client transports in a wrapper that
calls a no-op tracer, a share of every hop's server CPU (docs/benchmarks.md, "Tracing
overhead"). The decorators are applied when each a2a-sdk module is imported, and
those modules import them from :mod:`a2a.utils.telemetry`; so, before any of them is
imported, the two decorators are swapped for ones that return what they decorate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from a2a.utils import telemetry as _sdk


def _function(func: Callable[..., Any] | None = None, **_: Any) -> Any:
    """``@trace_function`` and ``@trace_function(...)`` without a wrapper."""
    return func if func is not None else (lambda f: f)


def _class(*_: Any, **__: Any) -> Callable[[Any], Any]:
    """``@trace_class(...)`` without wrappers."""
    return lambda cls: cls


def skip_wrappers_when_off() -> bool:
    """Swaps the decorators when a2a-sdk's spans are off; True if it did."""
    if _sdk.otel_installed and _sdk.otel_enabled:
        return False
    _sdk.trace_function = _function
    _sdk.trace_class = _class
    return True
