"""OTLP export of :mod:`mesh.telemetry.tracer` spans: the protobuf wire format written by hand.

:class:`Encoder` writes an ``ExportTraceServiceRequest`` (opentelemetry-proto
``collector/trace/v1``) straight to bytes: the resource and each instrumentation scope are
encoded once, an attribute whose value is a string is encoded once per (key, value) and
reused, and nothing else is built per span but the bytes. It writes what the SDK's
``encode_spans`` writes for the same spans (tests/unit/telemetry/test_otlp.py decodes both
with opentelemetry-proto and compares them).

:class:`BatchExporter` encodes each span as it ends, buffers the bytes and sends them in
batches from its own thread: the SDK's batch span processor settings (``OTEL_BSP_*``: schedule
delay, queue size, batch size, export timeout), read through the SDK's own helpers. The bytes
go out through the SDK's OTLP exporters themselves (:class:`GrpcBytesExporter`,
:class:`HttpBytesExporter`), so endpoint, headers, TLS, compression, timeout and retries
follow the same ``OTEL_EXPORTER_OTLP_*`` variables as in SDK mode.
"""

from __future__ import annotations

import collections
import logging
import os
import struct
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as _SdkGrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as _SdkHttpExporter,
)
from opentelemetry.sdk.trace import Event as SdkEvent
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Status, StatusCode

from mesh.telemetry.tracer import LeanSpan, Limits, Scope

if TYPE_CHECKING:
    import grpc
    from opentelemetry.sdk.resources import Resource

log = logging.getLogger(__name__)

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack
_pack_double = struct.Struct("<d").pack
_ONE_BYTE = [bytes((i,)) for i in range(128)]
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_UINT64 = (1 << 64) - 1

# Span.kind: the API's SpanKind value + 1 (INTERNAL=1 ... CONSUMER=5).
_KIND = [b"\x30" + _ONE_BYTE[k + 1] for k in range(5)]
# Span.flags (fixed32, field 16): the parent's "is remote" known, and whether it is.
_FLAGS_LOCAL = b"\x85\x01" + _pack_fixed32(0x100)
_FLAGS_REMOTE = b"\x85\x01" + _pack_fixed32(0x300)
_STATUS_UNSET = b"\x7a\x00"
_STRING_CACHE_SIZE = 1024
"""Encoded string attributes kept per key (and span names, attribute keys); a full one starts
over."""


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _ONE_BYTE[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: ``tag`` (one byte here), length, payload."""
    n = len(payload)
    return tag + (_ONE_BYTE[n] if n < 0x80 else _varint(n)) + payload


def _string(tag: bytes, text: str) -> bytes:
    return _field(tag, text.encode("utf-8"))


def _any_value(value: Any) -> bytes | None:
    """An ``AnyValue`` message's content, or None for what OTLP cannot carry."""
    cls = value.__class__
    if cls is str:
        return _string(b"\x0a", value)
    if cls is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if cls is int:
        return b"\x18" + _varint(value & _UINT64) if _INT64_MIN <= value <= _INT64_MAX else None
    if cls is float:
        return b"\x21" + _pack_double(value)
    if isinstance(value, (tuple, list)):
        items = []
        for item in value:
            encoded = b"" if item is None else _any_value(item)
            if encoded is None:
                return None
            items.append(_field(b"\x0a", encoded))
        return _field(b"\x2a", b"".join(items))
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Mapping):
        entries = []
        for key, item in value.items():
            encoded = b"" if item is None else _any_value(item)
            if encoded is None:
                return None
            entries.append(_field(b"\x0a", _string(b"\x0a", str(key)) + _field(b"\x12", encoded)))
        return _field(b"\x32", b"".join(entries))
    if isinstance(value, bool):  # bool/int/float/str subclasses (enums and the like)
        return _any_value(bool(value))
    if isinstance(value, int):
        return _any_value(int(value))
    if isinstance(value, float):
        return _any_value(float(value))
    if isinstance(value, str):
        return _any_value(str(value))
    return None


def _key_value(tag: bytes, key: str, value: Any) -> bytes | None:
    """One ``KeyValue`` as field ``tag`` of its parent, or None when the value cannot be sent."""
    encoded = _any_value(value)
    if encoded is None:
        return None
    return _field(tag, _string(b"\x0a", key) + _field(b"\x12", encoded))


def encode_attributes(
    tag: bytes,
    attributes: Mapping[str, Any] | None,
    limit: int = sys.maxsize,
    length: int | None = None,
) -> tuple[bytes, int]:
    """Repeated ``KeyValue`` fields ``tag`` and how many attributes were dropped: the last
    ``limit`` of them (as the SDK keeps), string values cut to ``length`` characters."""
    if not attributes:
        return b"", 0
    out = []
    dropped = 0
    for key, value in attributes.items():
        if value is None:  # the SDK refuses None when it is set
            continue
        encoded = _key_value(tag, key, value if length is None else _truncated(value, length))
        if encoded is None:
            dropped += 1
        else:
            out.append(encoded)
    if len(out) > limit:  # the SDK keeps the latest ones
        dropped += len(out) - limit
        out = out[len(out) - limit :]
    return b"".join(out), dropped


def _truncated(value: Any, length: int) -> Any:
    """``value`` with its strings (alone or in a sequence) cut to ``length``, as the SDK does."""
    if isinstance(value, str):
        return value[:length]
    if isinstance(value, (tuple, list)):
        return tuple(item[:length] if isinstance(item, str) else item for item in value)
    return value


def _trace_state(tag: bytes, state: Any) -> bytes:
    return _string(tag, ",".join(f"{k}={v}" for k, v in state.items())) if state else b""


class Encoder:
    """Writes ``ExportTraceServiceRequest`` bytes for one resource's spans."""

    def __init__(self, resource: Resource, limits: Limits | None = None) -> None:
        self._limits = limits or Limits.from_environment()
        attributes, dropped = encode_attributes(b"\x0a", resource.attributes)
        body = attributes + (b"\x10" + _varint(dropped) if dropped else b"")
        self._resource = _field(b"\x0a", body)
        self._resource_schema = (
            _string(b"\x1a", resource.schema_url) if resource.schema_url else b""
        )
        self._scopes: dict[int, tuple[Scope, bytes]] = {}
        # key -> value -> encoded attribute: dicts of str and bytes only, which the garbage
        # collector does not track (a (key, value) tuple key would be one more tracked object
        # per cached value)
        self._strings: dict[str, dict[str, bytes]] = {}
        self._names: dict[str, bytes] = {}
        self._keys: dict[str, bytes] = {}

    def _scope(self, scope: Scope) -> bytes:
        known = self._scopes.get(id(scope))
        if known is None or known[0] is not scope:
            body = _string(b"\x0a", scope.name) + (
                _string(b"\x12", scope.version) if scope.version else b""
            )
            attributes, dropped = encode_attributes(b"\x1a", scope.attributes)
            body += attributes + (b"\x20" + _varint(dropped) if dropped else b"")
            known = self._scopes[id(scope)] = (scope, _field(b"\x0a", body))
        return known[1]

    def _string_attribute(self, key: str, value: str) -> bytes:
        """A span's string attribute (field 9): the usual short case in one join."""
        prefix = self._keys.get(key)
        if prefix is None:
            if len(self._keys) >= _STRING_CACHE_SIZE:
                self._keys.clear()
            prefix = self._keys[key] = _string(b"\x0a", key)
        data = value.encode("utf-8")
        n = len(data)
        size = len(prefix) + n + 4  # key field, value field tag and length, AnyValue tag and length
        if size < 0x80:
            return b"".join(
                (
                    b"\x4a",
                    _ONE_BYTE[size],
                    prefix,
                    b"\x12",
                    _ONE_BYTE[n + 2],
                    b"\x0a",
                    _ONE_BYTE[n],
                    data,
                )
            )
        return _field(b"\x4a", prefix + _field(b"\x12", _field(b"\x0a", data)))

    def _span_attributes(self, attributes: Mapping[str, Any]) -> tuple[list[bytes], int]:
        strings = self._strings
        limit, length = self._limits.span_attributes, self._limits.value_length
        out: list[bytes] = []
        dropped = 0
        for key, value in attributes.items():
            if value.__class__ is str:
                known = strings.get(key)
                if known is None:
                    known = strings[key] = {}
                encoded = known.get(value)
                if encoded is None:
                    if len(known) >= _STRING_CACHE_SIZE:
                        known.clear()  # a key whose values never repeat (ids) churns only itself
                    encoded = known[value] = self._string_attribute(
                        key, value if length is None else value[:length]
                    )
            elif value is None:
                continue
            else:
                encoded = _key_value(
                    b"\x4a", key, value if length is None else _truncated(value, length)
                )
                if encoded is None:
                    dropped += 1
                    continue
            out.append(encoded)
        if len(out) > limit:  # the SDK keeps the latest ones
            dropped += len(out) - limit
            out = out[len(out) - limit :]
        return out, dropped

    def span(self, span: LeanSpan) -> bytes:
        """One ``Span`` message as the ``spans`` field of its ``ScopeSpans``."""
        return _field(b"\x12", self._span(span))

    def _span(self, span: LeanSpan) -> bytes:
        context = span.span_context
        parts = [
            b"\x0a\x10",
            context.trace_id.to_bytes(16, "big"),
            b"\x12\x08",
            context.span_id.to_bytes(8, "big"),
        ]
        if context.trace_state:
            parts.append(_trace_state(b"\x1a", context.trace_state))
        parent = span.parent
        if parent is not None:
            parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
        name = self._names.get(span.name)
        if name is None:
            if len(self._names) >= _STRING_CACHE_SIZE:
                self._names.clear()
            name = self._names[span.name] = _string(b"\x2a", span.name)
        parts += (
            name,
            _KIND[span.kind.value],
            b"\x39",
            _pack_fixed64(span.start_time),
            b"\x41",
            _pack_fixed64(span.end_time or span.start_time),
        )
        if span.attributes:
            attributes, dropped = self._span_attributes(span.attributes)
            parts += attributes
            if dropped:
                parts += (b"\x50", _varint(dropped))
        if span.events:
            parts += [_field(b"\x5a", self._event(event)) for event in span.events]
        if span.dropped_events:
            parts += (b"\x60", _varint(span.dropped_events))
        if span.links:
            parts += [_field(b"\x6a", self._link(link)) for link in span.links]
        if span.dropped_links:
            parts += (b"\x70", _varint(span.dropped_links))
        status = span.status
        if status is None or status.status_code is StatusCode.UNSET:
            parts.append(_STATUS_UNSET)
        else:
            parts.append(
                _field(
                    b"\x7a",
                    (_string(b"\x12", status.description) if status.description else b"")
                    + b"\x18"
                    + _ONE_BYTE[status.status_code.value],
                )
            )
        parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
        return b"".join(parts)

    def _event(self, event: Any) -> bytes:
        attributes, dropped = encode_attributes(
            b"\x1a",
            event.attributes,
            self._limits.event_attributes,
            self._limits.other_value_length,
        )
        return (
            b"\x09"
            + _pack_fixed64(event.timestamp)
            + _string(b"\x12", event.name)
            + attributes
            + (b"\x20" + _varint(dropped) if dropped else b"")
        )

    def _link(self, link: Any) -> bytes:
        context = link.context
        attributes, dropped = encode_attributes(
            b"\x22", link.attributes, self._limits.link_attributes, self._limits.other_value_length
        )
        return (
            b"\x0a\x10"
            + context.trace_id.to_bytes(16, "big")
            + b"\x12\x08"
            + context.span_id.to_bytes(8, "big")
            + _trace_state(b"\x1a", context.trace_state)
            + attributes
            + (b"\x28" + _varint(dropped) if dropped else b"")
            + b"\x35"
            + _pack_fixed32(0x300 if context.is_remote else 0x100)
        )

    def request(self, spans: Iterable[tuple[Scope, bytes]]) -> bytes:
        """The ``ExportTraceServiceRequest`` carrying spans encoded by :meth:`span`, with their
        scopes."""
        by_scope: dict[int, tuple[Scope, list[bytes]]] = {}
        for scope, encoded in spans:
            group = by_scope.get(id(scope))
            if group is None:
                group = by_scope[id(scope)] = (scope, [])
            group[1].append(encoded)
        scope_spans = b"".join(
            _field(
                b"\x12",
                self._scope(scope)
                + b"".join(encoded)
                + (_string(b"\x1a", scope.schema_url) if scope.schema_url else b""),
            )
            for scope, encoded in by_scope.values()
        )
        return _field(b"\x0a", self._resource + scope_spans + self._resource_schema)

    def spans(self, spans: Iterable[LeanSpan]) -> bytes:
        """The ``ExportTraceServiceRequest`` carrying ``spans``."""
        return self.request((span.scope, self.span(span)) for span in spans)


@dataclass(frozen=True)
class Encoded:
    """An encoded export request and how many spans it carries."""

    payload: bytes
    count: int


class _BytesStub:
    """``TraceServiceStub`` whose ``Export`` takes and returns raw bytes (no protobuf objects)."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Export: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(EXPORT_METHOD)


class GrpcBytesExporter(_SdkGrpcExporter):
    """The SDK's OTLP/gRPC span exporter (settings, channel, retries, reconnects) sending our
    bytes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stub = _BytesStub  # also used when the SDK re-creates the channel after UNAVAILABLE
        # The SDK types its channel and client slots None (set in its __init__), and the client
        # as the generated TraceServiceStub; ours has the same Export.
        self._client = _BytesStub(self._channel)  # type: ignore[arg-type, assignment]  # see above

    def _translate_data(self, data: Encoded) -> bytes:  # type: ignore[override]  # our bytes, not spans
        return data.payload

    def _count_data(self, data: Encoded) -> int:  # type: ignore[override]  # counts our encoded spans
        return data.count

    def send(self, data: Encoded) -> bool:
        return self._export(data) is SpanExportResult.SUCCESS  # type: ignore[arg-type]  # encoded spans


class HttpBytesExporter(_SdkHttpExporter):
    """The SDK's OTLP/HTTP span exporter (settings, session, retries) posting our bytes."""

    def send(self, data: Encoded) -> bool:
        return bool(self._client.export(data.payload).success)


BytesExporter = GrpcBytesExporter | HttpBytesExporter


class BatchExporter:
    """The span buffer and its export thread (the SDK batch processor's role, on our encoding).

    A span is encoded when it ends, in the thread that ends it (a few microseconds), and the
    buffer holds only bytes, one deque per instrumentation scope: anything the garbage
    collector tracks (a span object, even a ``(scope, bytes)`` tuple) kept alive until the
    next export counts towards its young-generation threshold, survives into the old
    generations and makes full collections more frequent, which cost more than the encoding
    (tens of microseconds per request; docs/benchmarks.md). Bytes are not tracked. The thread
    only joins them into requests and sends them. ``OTEL_BSP_MAX_QUEUE_SIZE`` bounds each
    scope's deque (the mesh has one scope).
    """

    def __init__(self, encoder: Encoder, exporter: BytesExporter) -> None:
        self._encoder = encoder
        self._exporter = exporter
        # The SDK's OTEL_BSP_* settings, through its own readers: they are private, and reading
        # the variables here instead would drift from the SDK's defaults and validation.
        self._max_queue = BatchSpanProcessor._default_max_queue_size()  # noqa: SLF001 - SDK reader
        self._max_batch = BatchSpanProcessor._default_max_export_batch_size()  # noqa: SLF001 - as above
        self._delay_s = BatchSpanProcessor._default_schedule_delay_millis() / 1000  # noqa: SLF001 - above
        self._queues: dict[Scope, collections.deque[bytes]] = {}
        self.dropped = 0
        self.unencodable = 0
        self.exported = 0
        self.requests = 0
        self.cpu_s = 0.0
        """CPU time of the export thread (encoding and sending), for the shutdown log line."""
        self._reported_drops = 0
        self._reported_unencodable = 0
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._flush_asked = 0
        self._flush_done = 0
        self._stopping = False
        self._start()
        ref = weakref.WeakMethod(self._restart_in_child)
        os.register_at_fork(after_in_child=lambda: (m := ref()) is not None and m())

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="slmesh-otlp-export", daemon=True)
        self._thread.start()

    def _restart_in_child(self) -> None:
        self._queues = {}
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._flush_asked = self._flush_done = 0
        self._start()

    def add(self, span: LeanSpan) -> None:
        queue = self._queues.get(span.scope)
        if queue is None:
            queue = self._queues.setdefault(span.scope, collections.deque())
        if len(queue) >= self._max_queue:
            self.dropped += 1
            return
        try:
            encoded = self._encoder.span(span)
        except Exception:  # noqa: BLE001 - an unwritable span must not fail the request ending it
            self.unencodable += 1
            return
        queue.append(encoded)
        if len(queue) == self._max_batch:
            self._wake.set()

    def _work(self) -> None:
        while True:
            self._wake.wait(self._delay_s)
            self._wake.clear()
            asked = self._flush_asked
            self._drain()
            with self._done:
                self._flush_done = asked
                self._done.notify_all()
            if self._stopping:
                return

    def _drain(self) -> None:
        started = time.thread_time()
        for scope, queue in list(self._queues.items()):
            pop = queue.popleft
            while queue:
                batch = []
                try:
                    for _ in range(self._max_batch):
                        batch.append(pop())
                except IndexError:
                    pass
                try:
                    payload = self._encoder.request((scope, encoded) for encoded in batch)
                    sent = self._exporter.send(Encoded(payload, len(batch)))
                except Exception:  # one bad batch must not end the export thread
                    log.exception("could not export %d spans", len(batch))
                    sent = False
                self.requests += 1
                if sent:
                    self.exported += len(batch)
        self.cpu_s += time.thread_time() - started
        if self.unencodable != self._reported_unencodable:
            log.error("%d spans could not be encoded (left out) so far", self.unencodable)
            self._reported_unencodable = self.unencodable
        if self.dropped != self._reported_drops:
            log.warning(
                "span buffer full (%d): %d spans dropped so far", self._max_queue, self.dropped
            )
            self._reported_drops = self.dropped

    def force_flush(self, timeout_s: float) -> bool:
        with self._done:
            self._flush_asked += 1
            ticket = self._flush_asked
            self._wake.set()
            return self._done.wait_for(lambda: self._flush_done >= ticket, timeout_s)

    def shutdown(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(BatchSpanProcessor._default_export_timeout_millis() / 1000)  # noqa: SLF001 - SDK
        self._exporter.shutdown()
        log.info(
            "OTLP export: %d spans sent in %d requests, %d dropped; export thread CPU %.3f s (%.1f "
            "us per span)",
            self.exported,
            self.requests,
            self.dropped,
            self.cpu_s,
            self.cpu_s / self.exported * 1e6 if self.exported else 0.0,
        )


class DroppingSink:
    """Telemetry on without trace export (metrics or logs only): spans exist for context, then
    go."""

    def add(self, span: LeanSpan) -> None:
        pass

    def force_flush(self, timeout_s: float) -> bool:
        return True

    def shutdown(self) -> None:
        pass


class SdkExporterSink:
    """Hands each ended span, as the SDK's ``ReadableSpan``, to an SDK exporter at once (tests)."""

    def __init__(self, exporter: SpanExporter, resource: Resource) -> None:
        self._exporter = exporter
        self._resource = resource
        self._lock = threading.Lock()

    def add(self, span: LeanSpan) -> None:
        readable = to_readable(span, self._resource)
        with self._lock:
            self._exporter.export((readable,))

    def force_flush(self, timeout_s: float) -> bool:
        return self._exporter.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        self._exporter.shutdown()


def to_readable(span: LeanSpan, resource: Resource) -> ReadableSpan:
    """The SDK's view of one ended span (what an SDK span processor would have been given)."""
    scope = span.scope
    events: Sequence[SdkEvent] = [
        SdkEvent(e.name, e.attributes, e.timestamp) for e in span.events or ()
    ]
    return ReadableSpan(
        name=span.name,
        context=span.span_context,
        parent=span.parent,
        resource=resource,
        attributes=dict(span.attributes),
        events=events,
        links=tuple(span.links or ()),
        kind=span.kind,
        status=span.status or Status(StatusCode.UNSET),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=InstrumentationScope(
            scope.name, scope.version or None, scope.schema_url or None, scope.attributes or None
        ),
    )
