"""A lean OpenTelemetry tracer provider: the API's ``TracerProvider``, a fraction of the SDK's cost.

The Python SDK spends a large share of a traced hop's event-loop time on one span (sampler
objects, attribute validation under a lock per call, a ``ReadableSpan`` copy for the processor)
and more per span building protobuf objects in its export thread (docs/benchmarks.md). This
provider keeps what a backend sees (ids, parentage, parent-based sampling from
``OTEL_TRACES_SAMPLER``, attributes, events, links, status, kind, resource, scope) and drops the
rest: a span is a ``__slots__`` object whose attributes are a plain dict; an ended span is
encoded to OTLP bytes at once by :class:`mesh.telemetry.otlp.BatchExporter` and only the bytes
wait in its bounded buffer (dropped and counted when it is full, like the SDK's queue) for its
thread to send (span objects kept until an export were promoted by the garbage collector,
which cost more than the encoding).

Differences from the SDK, on purpose: attribute values are not validated when set (a value
OTLP cannot carry is left out when encoded, and counted as dropped); lists are copied to
tuples, other values are kept as given; no span processors, only the one sink. The
``OTEL_*_LIMIT`` variables apply as in the SDK (read through its ``SpanLimits``: attributes
per span, event and link, events and links per span, attribute value length), counted as
dropped the same way. Metrics and logs stay on the SDK.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import random
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.trace import sampling
from opentelemetry.trace import (
    INVALID_SPAN,
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util.types import Attributes

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource

MAX_EVENTS = 128
"""Events kept per span by default (the SDK's ``OTEL_SPAN_EVENT_COUNT_LIMIT``); later ones are
counted."""

_UNLIMITED = sys.maxsize


@dataclass(frozen=True)
class Limits:
    """How much a span keeps: the SDK's ``SpanLimits``, unlimited as ``sys.maxsize``.

    ``value_length`` cuts string attribute values (and strings inside sequences) of spans,
    ``other_value_length`` those of events and links, as the SDK does.
    """

    span_attributes: int = 128
    events: int = MAX_EVENTS
    links: int = 128
    event_attributes: int = 128
    link_attributes: int = 128
    value_length: int | None = None
    other_value_length: int | None = None

    @classmethod
    def from_environment(cls) -> Limits:
        """The limits the ``OTEL_*_LIMIT`` variables set, through the SDK's own reader."""
        from opentelemetry.sdk.trace import SpanLimits

        sdk = SpanLimits()

        def count(value: int | None) -> int:
            return _UNLIMITED if value is None else value

        return cls(
            count(sdk.max_span_attributes),
            count(sdk.max_events),
            count(sdk.max_links),
            count(sdk.max_event_attributes),
            count(sdk.max_link_attributes),
            sdk.max_span_attribute_length,
            sdk.max_attribute_length,
        )


_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_EMPTY_STATE = TraceState()
_random_bits = random.getrandbits  # the SDK's id generator too; re-seeded in forked children


class SpanSink(Protocol):
    """Where ended spans go: the OTLP batch exporter, or a test's SDK exporter."""

    def add(self, span: LeanSpan) -> None: ...

    def force_flush(self, timeout_s: float) -> bool: ...

    def shutdown(self) -> None: ...


class Scope:
    """An instrumentation scope (a tracer's name, version, schema URL and attributes)."""

    __slots__ = ("attributes", "name", "schema_url", "version")

    def __init__(
        self, name: str, version: str | None, schema_url: str | None, attributes: Attributes
    ) -> None:
        self.name = name
        self.version = version or ""
        self.schema_url = schema_url or ""
        self.attributes = dict(attributes) if attributes else {}


class Event:
    """A span event: name, time (ns since the epoch) and attributes."""

    __slots__ = ("attributes", "name", "timestamp")

    def __init__(self, name: str, attributes: Attributes, timestamp: int) -> None:
        self.name = name
        self.attributes = attributes
        self.timestamp = timestamp


class LeanSpan(trace.Span):
    """A recording span: what :class:`LeanTracer` hands out for a sampled trace."""

    __slots__ = (
        "_attributes",
        "_name",
        "dropped_events",
        "dropped_links",
        "end_time",
        "events",
        "kind",
        "limits",
        "links",
        "parent",
        "scope",
        "sink",
        "span_context",
        "start_time",
        "status",
    )

    def __init__(
        self,
        name: str,
        span_context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        links: list[Link] | None,
        scope: Scope,
        sink: SpanSink,
        start_time: int,
        limits: Limits = Limits(),
    ) -> None:
        self._name = name
        self.limits = limits
        self.span_context = span_context
        self.parent = parent
        self.kind = kind
        self._attributes = attributes
        self.links = links
        self.events: list[Event] | None = None
        self.status: Status | None = None
        self.scope = scope
        self.sink = sink
        self.start_time = start_time
        self.end_time: int | None = None
        self.dropped_events = 0
        self.dropped_links = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def attributes(self) -> Mapping[str, Any]:
        return self._attributes

    def get_span_context(self) -> SpanContext:
        return self.span_context

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attribute(self, key: str, value: Any) -> None:
        if self.end_time is None:
            self._attributes[key] = tuple(value) if value.__class__ is list else value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self.end_time is None:
            own = self._attributes
            for key, value in attributes.items():
                own[key] = tuple(value) if value.__class__ is list else value

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if self.end_time is not None:
            return
        if self.events is None:
            self.events = []
        if len(self.events) >= self.limits.events:  # the SDK keeps the latest ones
            self.dropped_events += 1
            if not self.events:
                return
            del self.events[0]
        self.events.append(
            Event(
                name,
                dict(attributes) if attributes else None,
                timestamp if timestamp is not None else time.time_ns(),
            )
        )

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if self.end_time is not None or not context.is_valid:
            return
        if self.links is None:
            self.links = []
        if len(self.links) >= self.limits.links:  # the SDK keeps the latest ones
            self.dropped_links += 1
            if not self.links:
                return
            del self.links[0]
        self.links.append(Link(context, attributes))

    def update_name(self, name: str) -> None:
        if self.end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # The SDK's rules: OK is final, UNSET changes nothing.
        if self.end_time is not None or (
            self.status is not None and self.status.status_code is StatusCode.OK
        ):
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self.status = status
        elif status is not StatusCode.UNSET:
            self.status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        recorded: dict[str, Any] = {
            "exception.type": f"{module}.{qualname}"
            if module and module != "builtins"
            else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            recorded.update(attributes)
        self.add_event("exception", recorded, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is not None:
            return
        self.end_time = end_time if end_time is not None else time.time_ns()
        self.sink.add(self)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if exc_val is not None and self.end_time is None:
            self.record_exception(exc_val, escaped=True)
            self.set_status(Status(StatusCode.ERROR, f"{exc_type.__name__}: {exc_val}"))  # type: ignore[union-attr]  # exc_val set: so is exc_type
        self.end()

    def __repr__(self) -> str:
        return f"LeanSpan(name={self._name!r}, context={self.span_context!r})"


class _CurrentSpan:
    """``start_as_current_span``'s context manager (and decorator): ``use_span`` without a
    generator."""

    __slots__ = (
        "_args",
        "_end_on_exit",
        "_record_exception",
        "_set_status",
        "_span",
        "_token",
        "_tracer",
    )

    def __init__(
        self,
        tracer: LeanTracer,
        args: tuple[Any, ...],
        end_on_exit: bool,
        record_exception: bool,
        set_status: bool,
    ) -> None:
        self._tracer = tracer
        self._args = args
        self._end_on_exit = end_on_exit
        self._record_exception = record_exception
        self._set_status = set_status

    def __enter__(self) -> trace.Span:
        self._span = span = self._tracer.start_span(*self._args)
        self._token = context_api.attach(trace.set_span_in_context(span))
        return span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        context_api.detach(self._token)
        span = self._span
        # Like use_span: only Exception subclasses are errors (not GeneratorExit, CancelledError).
        if isinstance(exc_val, Exception) and span.is_recording():
            if self._record_exception:
                span.record_exception(exc_val, escaped=True)
            if self._set_status:
                span.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        if self._end_on_exit:
            span.end()

    def _again(self) -> _CurrentSpan:
        return _CurrentSpan(
            self._tracer, self._args, self._end_on_exit, self._record_exception, self._set_status
        )

    def __call__(self, func: Any) -> Any:
        """As a decorator (the API allows it): every call runs in a span of its own."""
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def traced_async(*args: Any, **kwargs: Any) -> Any:
                with self._again():
                    return await func(*args, **kwargs)

            return traced_async

        @functools.wraps(func)
        def traced(*args: Any, **kwargs: Any) -> Any:
            with self._again():
                return func(*args, **kwargs)

        return traced


class _Sampler:
    """The SDK's configured sampler, decided inline for the standard parent-based kinds."""

    def __init__(self, sampler: sampling.Sampler) -> None:
        self.sampler = sampler
        root = sampler
        self.parent_based = False
        if isinstance(sampler, sampling.ParentBased) and _default_delegates(sampler):
            root = sampler._root  # noqa: SLF001 - the SDK keeps its delegates private
            self.parent_based = True
        # root decision: None = ask the SDK sampler; else (always, bound) on the trace id
        self.root: tuple[bool, int] | None = None
        if root is sampling.ALWAYS_ON:
            self.root = (True, 0)
        elif root is sampling.ALWAYS_OFF:
            self.root = (False, 0)
        elif type(root) is sampling.TraceIdRatioBased:
            self.root = (False, root.bound)
        self.inline = self.root is not None and (self.parent_based or root is sampler)

    def decide(
        self,
        parent: SpanContext | None,
        context: context_api.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind,
        attributes: Attributes,
        links: Sequence[Link] | None,
    ) -> tuple[bool, Attributes, TraceState | None]:
        """Sampled or not, the sampler's extra attributes, the new span's trace state."""
        if self.inline:
            if parent is not None and self.parent_based:
                return parent.trace_flags.sampled, None, parent.trace_state
            always, bound = self.root  # type: ignore[misc]  # inline: root is the (always, bound) pair
            sampled = always or (trace_id & sampling.TraceIdRatioBased.TRACE_ID_LIMIT) < bound
            return sampled, None, parent.trace_state if parent is not None else None
        result = self.sampler.should_sample(context, trace_id, name, kind, attributes, links)
        return result.decision.is_sampled(), result.attributes, result.trace_state


def _default_delegates(sampler: sampling.ParentBased) -> bool:
    """Whether a parent's own sampled flag decides (the standard ``parentbased_*`` samplers)."""
    return (
        # The SDK keeps ParentBased's delegates private and offers no accessor for them.
        sampler._remote_parent_sampled is sampling.ALWAYS_ON  # noqa: SLF001 - no public accessor
        and sampler._local_parent_sampled is sampling.ALWAYS_ON  # noqa: SLF001 - no public accessor
        and sampler._remote_parent_not_sampled is sampling.ALWAYS_OFF  # noqa: SLF001 - as above
        and sampler._local_parent_not_sampled is sampling.ALWAYS_OFF  # noqa: SLF001 - as above
    )


class LeanTracer(trace.Tracer):
    """Starts :class:`LeanSpan` s for one instrumentation scope."""

    def __init__(self, provider: LeanTracerProvider, scope: Scope) -> None:
        self._provider = provider
        self.scope = scope

    def start_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        provider = self._provider
        if provider.sink is None:  # shut down
            return INVALID_SPAN
        current = trace.get_current_span(context).get_span_context()
        parent: SpanContext | None
        if not current.is_valid:
            parent = None
            trace_id = _random_bits(128)
        else:
            parent = current
            trace_id = current.trace_id
        sampled, extra, trace_state = provider.sampler.decide(
            parent, context, trace_id, name, kind, attributes, links
        )
        span_context = SpanContext(
            trace_id,
            _random_bits(64),
            False,
            _SAMPLED if sampled else _NOT_SAMPLED,
            trace_state or _EMPTY_STATE,
        )
        if not sampled:
            return NonRecordingSpan(span_context)
        own: dict[str, Any] = {}
        if attributes:
            own.update(attributes)
            for key, value in own.items():
                if value.__class__ is list:
                    own[key] = tuple(value)
        if extra:
            own.update(extra)
        limits = provider.limits
        valid = [link for link in links if link.context.is_valid] if links else []
        dropped = max(len(valid) - limits.links, 0)  # the SDK keeps the latest ones
        span = LeanSpan(
            name,
            span_context,
            parent,
            kind,
            own,
            valid[dropped:] or None,
            self.scope,
            provider.sink,
            start_time if start_time is not None else time.time_ns(),
            limits,
        )
        span.dropped_links = dropped
        return span

    # The API's return type is its private _AgnosticContextManager; _CurrentSpan is one in kind.
    def start_as_current_span(  # type: ignore[override]  # the API's type is its private class
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> _CurrentSpan:
        return _CurrentSpan(
            self,
            (name, context, kind, attributes, links, start_time),
            end_on_exit,
            record_exception,
            set_status_on_exception,
        )


class LeanTracerProvider(trace.TracerProvider):
    """The mesh's tracer provider: one resource, one sampler, one sink for ended spans."""

    def __init__(
        self,
        resource: Resource,
        sink: SpanSink,
        sampler: sampling.Sampler | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.resource = resource
        self.limits = limits or Limits.from_environment()
        self.sink: SpanSink | None = sink
        self.sampler = _Sampler(sampler or sampling._get_from_env_or_default())  # noqa: SLF001 - OTEL_TRACES_SAMPLER(_ARG)
        self._tracers: dict[tuple[str, str | None, str | None], LeanTracer] = {}
        self._lock = threading.Lock()
        atexit.register(self.shutdown)  # like the SDK's provider: what is buffered goes out at exit

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> trace.Tracer:
        key = (instrumenting_module_name, instrumenting_library_version, schema_url)
        tracer = self._tracers.get(key)
        if tracer is None:
            with self._lock:
                tracer = self._tracers.setdefault(
                    key,
                    LeanTracer(
                        self,
                        Scope(
                            instrumenting_module_name,
                            instrumenting_library_version,
                            schema_url,
                            attributes,
                        ),
                    ),
                )
        return tracer

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.sink.force_flush(timeout_millis / 1000) if self.sink is not None else True

    def shutdown(self) -> None:
        sink, self.sink = self.sink, None
        if sink is not None:
            atexit.unregister(self.shutdown)
            sink.shutdown()
