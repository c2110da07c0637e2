"""W3C trace context and baggage across process boundaries (the global propagator).

The propagator is the SDK's: ``tracecontext,baggage`` unless ``OTEL_PROPAGATORS`` says
otherwise. Agents extract it from HTTP headers and gRPC metadata at their admission gate;
the mesh client injects it into every call; the planner carries it into Ray tasks and
actors with :func:`carrier` and :func:`attached`.

With that default propagator, the common case is done here in a few lines (a version-00
``traceparent``, no ``tracestate``, no baggage: about a quarter of the propagators' time);
anything else goes to the propagators themselves.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping

from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagate import extract, inject
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
"""Version 00 exactly as the W3C recommendation writes it (other forms go to the propagator)."""
_FLAGS = [TraceFlags(i) for i in range(256)]
_BAGGAGE = W3CBaggagePropagator()
_W3C_FIELDS = TraceContextTextMapPropagator().fields | _BAGGAGE.fields
_default: tuple[TextMapPropagator | None, bool] = (None, False)


def _is_default() -> bool:
    """Whether the global propagator is the standard ``tracecontext,baggage`` composite.

    Told by its public ``fields`` (the headers it reads and writes): a composite of exactly
    the W3C trace-context and baggage fields is what ``OTEL_PROPAGATORS`` builds by default.
    """
    global _default
    current = propagate.get_global_textmap()
    if _default[0] is not current:
        standard = isinstance(current, CompositePropagator) and current.fields == _W3C_FIELDS
        _default = (current, standard)
    return _default[1]


def _remote(traceparent: str | None) -> Context | None:
    """The context of a plain version-00 ``traceparent`` (None: let the propagator decide)."""
    if traceparent is None:
        return Context()
    match = _TRACEPARENT.fullmatch(traceparent)
    if match is None:
        return None
    trace_id, span_id, flags = match.groups()
    context = SpanContext(int(trace_id, 16), int(span_id, 16), True, _FLAGS[int(flags, 16)])
    if not context.is_valid:
        return Context()
    return set_span_in_context(NonRecordingSpan(context), Context())


def _extract(headers: Mapping[str, str]) -> Context:
    """``extract(headers)``, the common case inline."""
    if _is_default() and "tracestate" not in headers:
        context = _remote(headers.get("traceparent"))
        if context is not None:
            return _BAGGAGE.extract(headers, context) if "baggage" in headers else context
    return extract(headers)


def carrier(ctx: Context | None = None) -> dict[str, str]:
    """The current (or ``ctx``'s) trace context and baggage as a plain, picklable dict.

    Empty when there is nothing to carry. Send it with a Ray task or actor call and enter
    it on the other side with :func:`attached`.
    """
    out: dict[str, str] = {}
    if not _is_default():
        inject(out, context=ctx)
        return out
    span_context = get_current_span(ctx).get_span_context()
    if span_context.is_valid:
        out["traceparent"] = (
            f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{span_context.trace_flags:02x}"
        )
        if span_context.trace_state:
            out["tracestate"] = span_context.trace_state.to_header()
    if otel_baggage.get_all(ctx):
        _BAGGAGE.inject(out, ctx)
    return out


@contextlib.contextmanager
def attached(carrier: Mapping[str, str] | None) -> Iterator[Context]:
    """Makes the context in ``carrier`` current for the block.

    Spans started inside the block are its children.

    ``None`` or an empty carrier leaves the current context as it is.
    """
    if not carrier:
        yield otel_context.get_current()
        return
    ctx = _extract(carrier)
    token = otel_context.attach(ctx)
    try:
        yield ctx
    finally:
        otel_context.detach(token)


class _AsgiHeaders(Getter[Mapping[bytes, bytes]]):
    """Reads an ASGI header dict (lower-case byte names)."""

    def get(self, carrier: Mapping[bytes, bytes], key: str) -> list[str] | None:
        value = carrier.get(key.encode("latin-1"))
        return None if value is None else [value.decode("latin-1")]

    def keys(self, carrier: Mapping[bytes, bytes]) -> list[str]:
        return [k.decode("latin-1") for k in carrier]


ASGI_HEADERS = _AsgiHeaders()


def from_asgi(headers: Mapping[bytes, bytes]) -> Context:
    """The remote parent context sent in HTTP request headers."""
    if _is_default() and b"tracestate" not in headers and b"baggage" not in headers:
        traceparent = headers.get(b"traceparent")
        context = _remote(None if traceparent is None else traceparent.decode("latin-1"))
        if context is not None:
            return context
    return extract(headers, getter=ASGI_HEADERS)


def from_grpc(metadata: Iterable[tuple[str, str | bytes]] | None) -> Context:
    """The remote parent context sent in gRPC metadata.

    One dict of the text entries, read by the default getter: each propagator looks up its
    keys (traceparent, tracestate, baggage) in it instead of scanning the metadata each time.
    Binary (``-bin``) entries carry no W3C context and are left out.
    """
    return _extract({k: v for k, v in metadata or () if isinstance(v, str)})
