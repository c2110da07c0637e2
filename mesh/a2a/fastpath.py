"""Lean client paths for the mesh's hot call, ``SendMessage``, on gRPC and JSON-RPC.

:class:`~mesh.a2a.client.MeshClient` speaks A2A through a2a-sdk's transports, and keeps
doing so for every other method. For ``SendMessage`` those transports cost more CPU than
the hop itself on the benchmark machine (docs/benchmarks.md): a tracing wrapper on every
method, a pydantic ``ClientCallContext`` per call and, on JSON-RPC, httpx + httpcore +
anyio (~1 ms of client CPU per call at 16 in flight, most of it in the connection pool).

The paths below send the same bytes the a2a-sdk transports send and turn every failure
into the same exception (same type, message and ``__cause__``, so
:func:`~mesh.a2a.client.is_retryable` reads them unchanged):

* gRPC: the transport's own stub method with metadata built once
  (``a2a-version`` + ``authorization``), errors mapped as the transport maps them
  (:mod:`mesh.a2a.sdk_private`).
* JSON-RPC: the same JSON-RPC 2.0 envelope (``MessageToDict`` params, uuid4 id) and headers
  over a small keep-alive HTTP/1.1 connection pool (asyncio protocol + ``httptools``
  parser, both already installed with uvicorn[standard]); the reply goes through the
  transport's own JSON-RPC checks and ``parse_lenient``. ``https`` URLs stay on the
  a2a-sdk transport.
"""

from __future__ import annotations

import asyncio
import json
import select
import uuid
from typing import Any
from urllib.parse import urlsplit

import grpc
import httptools
import httpx
from a2a.client.errors import A2AClientError, A2AClientTimeoutError
from a2a.client.transports import GrpcTransport, JsonRpcTransport
from a2a.types import a2a_pb2 as pb
from a2a.utils.constants import PROTOCOL_VERSION_CURRENT, VERSION_HEADER
from a2a.utils.proto_utils import parse_lenient
from google.protobuf.json_format import MessageToDict

from mesh.a2a import sdk_private
from mesh.telemetry.propagation import carrier
from mesh.telemetry.setup import STATE


class GrpcSend:
    """``SendMessage`` on a pooled gRPC transport, without its per-call wrappers."""

    def __init__(self, transport: GrpcTransport, params: dict[str, str] | None) -> None:
        self._call = transport.stub.SendMessage
        # What GrpcTransport._get_grpc_metadata builds on every call.
        self._metadata = (
            (VERSION_HEADER.lower(), PROTOCOL_VERSION_CURRENT),
            *((k.lower(), v) for k, v in (params or {}).items()),
        )

    async def __call__(
        self, request: pb.SendMessageRequest, timeout: float
    ) -> pb.SendMessageResponse:
        metadata = self._metadata
        if STATE.tracer is not None:  # the caller's span goes along (W3C traceparent, baggage)
            metadata = (*metadata, *carrier().items())
        try:
            response: pb.SendMessageResponse = await self._call(
                request, metadata=metadata, timeout=timeout
            )
            return response
        except grpc.aio.AioRpcError as exc:
            sdk_private.map_grpc_error(exc)


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request at a time, response parsed by httptools."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.waiter: asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes]] | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP connection: a Transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"invalid HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(httpx.RemoteProtocolError("Server disconnected without sending a response."))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        result = (self._parser.get_status_code(), self._headers, b"".join(self._body))
        self._headers, self._body = [], []
        if not self._parser.should_keep_alive():
            self.close()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(result)

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _readable(conn: _Connection) -> bool:
    """Whether an idle connection's socket has something to read: EOF or stray bytes.

    An idle HTTP/1.1 connection has nothing to read, so either means it cannot carry the
    next request; when the server has just closed it, the event loop may not have handled
    the FIN yet. httpcore makes the same check (``is_readable``) before reusing a connection.
    """
    sock = conn.transport.get_extra_info("socket") if conn.transport is not None else None
    if sock is None:
        return True
    poller = select.poll()  # poll, not select: file descriptors past FD_SETSIZE are fine
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.ReadTimeout("timed out waiting for the response"))


class _HttpPool:
    """Idle keep-alive connections to one host:port (LIFO, so a warm one is reused first)."""

    def __init__(self, host: str, port: int, connect_timeout: float, max_idle: int = 64) -> None:
        self.host, self.port = host, port
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self._idle: list[_Connection] = []

    async def _connect(self, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(min(timeout, self.connect_timeout)):
                _, conn = await loop.create_connection(_Connection, self.host, self.port)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {self.host}:{self.port} timed out") from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        return conn

    async def post(
        self, data: bytes, timeout: float
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        conn = None
        while self._idle:
            candidate = self._idle.pop()
            if candidate.closed:
                continue
            if _readable(candidate):
                candidate.close()  # closed by the server (FIN not yet handled by the loop)
                continue
            conn = candidate
            break
        if conn is None:
            conn = await self._connect(timeout)
        loop = asyncio.get_running_loop()
        waiter = conn.waiter = loop.create_future()
        assert conn.transport is not None
        conn.transport.write(data)
        timer = loop.call_later(timeout, _expire, waiter)
        try:
            result: tuple[int, list[tuple[bytes, bytes]], bytes] = await waiter
        except BaseException:
            conn.close()  # a response may still be on its way: the connection is spent
            raise
        finally:
            timer.cancel()
        if not conn.closed and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        return result

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


class JsonRpcSend:
    """``SendMessage`` over JSON-RPC, byte-compatible with a2a-sdk's ``JsonRpcTransport``."""

    def __init__(
        self, transport: JsonRpcTransport, url: str, headers: dict[str, str], connect_timeout: float
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the lean JSON-RPC path speaks plain http, not {url!r}")
        self._transport = transport
        self._url = url
        self._pool = _HttpPool(parts.hostname, parts.port or 80, connect_timeout)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [
            f"POST {target} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Accept: */*",
            "Content-Type: application/json",
            "User-Agent: slmesh",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        self._request_line, _, self._fields = self._head.partition(b"\r\n")

    async def __call__(
        self, request: pb.SendMessageRequest, timeout: float
    ) -> pb.SendMessageResponse:
        # The envelope JSONRPC20Request(...).data gives, serialized as httpx's json= does.
        body = json.dumps(
            {
                "method": "SendMessage",
                "params": MessageToDict(request),
                "id": str(uuid.uuid4()),
                "jsonrpc": "2.0",
            },
            ensure_ascii=False,
            separators=(",", ":"),
            allow_nan=False,
        ).encode("utf-8")
        head = self._head
        if STATE.tracer is not None:  # the caller's span goes along (W3C traceparent, baggage)
            trace = "".join(f"{k}: {v}\r\n" for k, v in carrier().items()).encode("latin-1")
            head = self._request_line + b"\r\n" + trace + self._fields
        try:
            status, headers, content = await self._pool.post(
                head + str(len(body)).encode() + b"\r\n\r\n" + body, timeout
            )
        except httpx.TimeoutException as exc:
            raise A2AClientTimeoutError("Client Request timed out") from exc
        except httpx.RequestError as exc:
            raise A2AClientError(f"Network communication error: {exc}") from exc
        if status >= 400:
            self._raise_status(status, headers, content)
        try:
            data = json.loads(content)
        except json.JSONDecodeError as exc:
            raise A2AClientError(f"JSON Decode Error: {exc}") from exc
        # The SDK's own JSON-RPC error mapping, so errors match its transport's exactly.
        data = sdk_private.check_jsonrpc_response(self._transport, data)
        return parse_lenient(data["result"], pb.SendMessageResponse())

    def _raise_status(
        self, status: int, headers: list[tuple[bytes, bytes]], content: bytes
    ) -> None:
        """What httpx's ``raise_for_status`` inside a2a-sdk's error handling raises."""
        request = httpx.Request("POST", self._url)
        response = httpx.Response(status, headers=headers, content=content, request=request)
        try:
            response.raise_for_status()
        except httpx.HTTPStatusError as exc:
            raise A2AClientError(f"HTTP Error {status}: {exc}") from exc

    def close(self) -> None:
        self._pool.close()
