"""Admission control shared by the HTTP and gRPC sides of an agent replica.

One :class:`Admission` object counts in-flight requests (the load reported to the
registry), refuses new work while draining, checks the bearer token and bounds request
size. The ASGI middleware and the gRPC gate below are its two faces, so both transports
enforce the same rules.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from a2a.utils.error_handlers import build_rest_error_payload
from a2a.utils.errors import ContentTypeNotSupportedError
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass

if TYPE_CHECKING:
    from mesh.a2a.tracing import HopTelemetry

PUBLIC_HTTP_PATHS = frozenset(
    {"/.well-known/agent-card.json", "/.well-known/jwks.json", "/healthz", "/readyz", "/metrics"}
)
"""Paths served without a token and outside the in-flight count."""


JSONRPC_PARSE_ERROR = -32700
JSONRPC_INVALID_REQUEST = -32600
MAX_JSON_DEPTH = 64
"""Deeper request JSON is refused up front (Python's parser would hit its recursion limit)."""


class Admission:
    """In-flight accounting, drain state and credentials of one replica."""

    def __init__(
        self, *, max_request_bytes: int, api_token: str | None, max_in_flight: int = 0
    ) -> None:
        self.max_request_bytes = max_request_bytes
        self.max_in_flight = max_in_flight
        """Above this many requests in flight new ones are shed (retryable); 0: no limit."""
        self._token = api_token.encode() if api_token else None
        self.in_flight = 0
        self.draining = False
        self.telemetry: HopTelemetry | None = None
        """Set by the server when telemetry is on: caller's trace context and request metrics."""
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def requires_token(self) -> bool:
        return self._token is not None

    @property
    def saturated(self) -> bool:
        """True when a new request would pass ``max_in_flight``: shed it rather than queue it."""
        return 0 < self.max_in_flight <= self.in_flight

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    def authorized(self, header: str | bytes | None) -> bool:
        """True when no token is configured or ``header`` is ``Bearer <token>``."""
        if self._token is None:
            return True
        if not header:
            return False
        raw = header.encode() if isinstance(header, str) else header
        scheme, _, value = raw.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(value.strip(), self._token)

    async def wait_idle(self, timeout: float) -> bool:
        """Waits until nothing is in flight; False if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


class HttpGate:
    """Pure ASGI middleware (no per-request allocation beyond a closure) for the HTTP side."""

    def __init__(self, app: Callable[..., Awaitable[None]], admission: Admission) -> None:
        self.app = app
        self.admission = admission

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_HTTP_PATHS:
            await self.app(scope, receive, send)
            return
        adm = self.admission
        if adm.draining:
            await _json_error(
                send,
                503,
                "replica is draining; retry on another replica",
                headers=[(b"retry-after", b"1")],
            )
            return
        headers = dict(scope["headers"])
        if not adm.authorized(headers.get(b"authorization")):
            await _json_error(
                send,
                401,
                "missing or invalid bearer token",
                headers=[(b"www-authenticate", b'Bearer realm="slmesh"')],
            )
            return
        if adm.saturated:
            await _json_error(send, 503, OVERLOADED, headers=[(b"retry-after", b"1")])
            return
        media = _media_type(headers.get(b"content-type"))
        jsonrpc = scope["path"] == "/"
        if media is not None and media not in JSON_MEDIA_TYPES and scope["method"] != "GET":
            await _unsupported_media(send, media, jsonrpc)
            return
        if not jsonrpc:
            answer_as = media if media is not None else _accepted(headers.get(b"accept"))
            if answer_as is not None:
                send = _answering_as(send, answer_as)
        declared = headers.get(b"content-length")
        limit = adm.max_request_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _json_error(
                send,
                413,
                f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes",
            )
            return
        adm.enter()
        tel = adm.telemetry
        entered = tel.enter_http(headers) if tel is not None else None
        try:
            body, more = (
                await _read_body(receive, limit) if scope["method"] != "GET" else (b"", False)
            )
            if more:
                await _json_error(send, 413, f"request body exceeds the limit of {limit} bytes")
                return
            problem = _body_problem(body) if body else None
            if problem is not None:
                await _json_error(send, 400, problem[1], code=problem[0])
                return
            await self.app(scope, _replay(body, receive), send)
        finally:
            adm.leave()
            if tel is not None and entered is not None:
                tel.leave(entered, "JSONRPC" if jsonrpc else "HTTP+JSON")


JSON = b"application/json"
A2A_JSON = b"application/a2a+json"
JSON_MEDIA_TYPES = frozenset({JSON, A2A_JSON})
"""Request bodies both bindings accept; HTTP+JSON answers in the one the request used."""
JSONRPC_CONTENT_TYPE_NOT_SUPPORTED = -32005


def _media_type(header: bytes | None) -> bytes | None:
    if not header:
        return None
    return header.split(b";", 1)[0].strip().lower()


def _accepted(accept: bytes | None) -> bytes | None:
    """The JSON media type an ``Accept`` header asks for, when it names exactly one of the two."""
    if not accept:
        return None
    named = JSON_MEDIA_TYPES.intersection(_media_type(item) for item in accept.split(b","))
    return next(iter(named)) if len(named) == 1 else None


def _answering_as(send: Any, media: bytes) -> Any:
    """``send`` with a JSON response's Content-Type set to ``media`` (SSE and others untouched)."""

    async def answer(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [
                (k, media + v.partition(b";")[1] + v.partition(b";")[2])
                if k.lower() == b"content-type" and _media_type(v) in JSON_MEDIA_TYPES
                else (k, v)
                for k, v in message.get("headers", ())
            ]
        await send(message)

    return answer


async def _unsupported_media(send: Any, media: bytes, jsonrpc: bool) -> None:
    """415, ContentTypeNotSupportedError: -32005 on JSON-RPC, the A2A error body on HTTP+JSON."""
    message = (
        f"request Content-Type {media.decode('latin-1')!r} is not supported; "
        "send application/json or application/a2a+json"
    )
    if jsonrpc:
        await _json_error(send, 415, message, code=JSONRPC_CONTENT_TYPE_NOT_SUPPORTED)
        return
    payload = build_rest_error_payload(ContentTypeNotSupportedError(message=message))
    payload["error"]["code"] = 415
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 415,
            "headers": [
                (b"content-type", JSON),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _body_problem(body: bytes) -> tuple[int, str] | None:
    """Rejects what would otherwise surface as an internal error deep in the JSON parser."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return JSONRPC_PARSE_ERROR, f"request body is not valid UTF-8: {exc}"
    # Counting brackets runs at C speed; the exact depth scan only runs for bracket-heavy bodies.
    if body.count(b"{") + body.count(b"[") > MAX_JSON_DEPTH and _json_depth(body) > MAX_JSON_DEPTH:
        return JSONRPC_INVALID_REQUEST, f"request JSON nests deeper than {MAX_JSON_DEPTH} levels"
    return None


def _json_depth(body: bytes) -> int:
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):  # { [
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x7D, 0x5D):  # } ]
            depth -= 1
    return deepest


async def _read_body(receive: Any, limit: int) -> tuple[bytes, bool]:
    """The whole request body, or (partial, True) once it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _replay(body: bytes, receive: Any) -> Any:
    """A receive callable that yields the buffered body once, then the real channel
    (disconnects)."""
    pending = True

    async def replayed() -> dict[str, Any]:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        message: dict[str, Any] = await receive()
        return message

    return replayed


async def _json_error(
    send: Any,
    status: int,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    code: int = JSONRPC_INVALID_REQUEST,
) -> None:
    """An error body readable both as JSON-RPC (``error.code``) and as plain HTTP JSON."""
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": code, "message": message, "data": {"http_status": status}},
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


DRAINING = "replica is draining; retry on another replica"
OVERLOADED = (
    "replica is at its concurrency limit (max_in_flight); retry on another replica or later"
)
BAD_TOKEN = "missing or invalid bearer token"


def _bearer(context: grpc.aio.ServicerContext[Any, Any]) -> str | bytes | None:
    return next((v for k, v in context.invocation_metadata() or () if k == "authorization"), None)


def add_gated_service(
    server: grpc.aio.Server, servicer: Any, service: ServiceDescriptor, admission: Admission
) -> None:
    """Registers ``servicer``'s methods for ``service`` behind :class:`Admission`.

    Refuses while draining (UNAVAILABLE), checks the bearer token (UNAUTHENTICATED), answers
    an undecodable request with INVALID_ARGUMENT and counts the call in flight. The checks
    are wrapped around each method once, here, rather than in a server interceptor: grpc.aio
    runs an interceptor as an extra coroutine and method handler per call (10-40 us here).
    """
    handlers = {}
    for method in service.methods:
        if method.client_streaming:
            raise ValueError(f"{service.full_name}.{method.name}: client streaming is not gated")
        parse = _tolerant(GetMessageClass(method.input_type).FromString)
        serialize = GetMessageClass(method.output_type).SerializeToString
        behavior = getattr(servicer, method.name)
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _gate_stream(behavior, admission, method.name), parse, serialize
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _gate_unary(behavior, admission, method.name), parse, serialize
            )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)


async def _admit(request: Any, context: grpc.aio.ServicerContext[Any, Any], adm: Admission) -> None:
    """Aborts the call unless the replica takes work, the token matches and the bytes parsed."""
    if adm.draining:
        await context.abort(grpc.StatusCode.UNAVAILABLE, DRAINING)
    if adm.requires_token and not adm.authorized(_bearer(context)):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, BAD_TOKEN)
    if adm.saturated:
        context.set_trailing_metadata((("retry-after", "1"),))
        await context.abort(grpc.StatusCode.UNAVAILABLE, OVERLOADED)
    if isinstance(request, _Undecodable):
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"request is not a valid protobuf message: {request.error}",
        )


def _gate_unary(
    inner: Callable[[Any, Any], Awaitable[Any]], adm: Admission, method: str
) -> Callable[..., Awaitable[Any]]:
    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await _admit(request, context, adm)
        adm.enter()
        tel = adm.telemetry
        if tel is None:
            try:
                return await inner(request, context)
            finally:
                adm.leave()
        entered = tel.enter_grpc(context.invocation_metadata())
        error: BaseException | None = None
        try:
            return await inner(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            adm.leave()
            tel.leave(entered, "GRPC", method, error)

    return unary


def _gate_stream(
    inner: Callable[[Any, Any], AsyncIterator[Any]], adm: Admission, method: str
) -> Callable[..., AsyncIterator[Any]]:
    async def stream(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        await _admit(request, context, adm)
        adm.enter()
        tel = adm.telemetry
        entered = tel.enter_grpc(context.invocation_metadata()) if tel is not None else None
        try:
            async for item in inner(request, context):
                yield item
        finally:
            adm.leave()
            if tel is not None and entered is not None:
                tel.leave(entered, "GRPC", method)

    return stream


class _Undecodable:
    """Stands in for a request whose bytes did not parse, so the gate can say so."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """grpc turns a deserializer exception into UNKNOWN; the gate answers INVALID_ARGUMENT
    instead."""

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return _Undecodable(exc)

    return parse
