"""Admission control shared by the HTTP and gRPC sides of an agent replica.

One :class:`Admission` object counts in-flight requests (the load reported to the
registry), refuses new work while draining, checks the bearer token and bounds request
size. The ASGI middleware and the gRPC interceptor below are its two faces, so both
transports enforce the same rules.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

PUBLIC_HTTP_PATHS = frozenset({"/.well-known/agent-card.json", "/healthz", "/readyz", "/metrics"})
"""Paths served without a token and outside the in-flight count."""

PUBLIC_GRPC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
"""gRPC services open to probes and tooling."""

JSONRPC_INVALID_REQUEST = -32600


class Admission:
    """In-flight accounting, drain state and credentials of one replica."""

    def __init__(self, *, max_request_bytes: int, api_token: str | None) -> None:
        self.max_request_bytes = max_request_bytes
        self._token = api_token.encode() if api_token else None
        self.in_flight = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def requires_token(self) -> bool:
        return self._token is not None

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


class _BodyTooLarge(Exception):
    pass


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
            await _json_error(send, 503, "replica is draining; retry on another replica",
                              headers=[(b"retry-after", b"1")])
            return
        headers = dict(scope["headers"])
        if not adm.authorized(headers.get(b"authorization")):
            await _json_error(send, 401, "missing or invalid bearer token",
                              headers=[(b"www-authenticate", b'Bearer realm="slmesh"')])
            return
        declared = headers.get(b"content-length")
        limit = adm.max_request_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _json_error(send, 413, f"request body of {int(declared)} bytes exceeds the "
                                         f"limit of {limit} bytes")
            return
        received = 0
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)

        adm.enter()
        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _json_error(send, 413, f"request body exceeds the limit of {limit} bytes")
        finally:
            adm.leave()


async def _json_error(
    send: Any, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """An error body readable both as JSON-RPC (``error.code``) and as plain HTTP JSON."""
    body = json.dumps(
        {"jsonrpc": "2.0", "id": None,
         "error": {"code": JSONRPC_INVALID_REQUEST, "message": message, "data": {"http_status": status}}}
    ).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()), *(headers or [])],
    })
    await send({"type": "http.response.body", "body": body})


class GrpcGate(grpc.aio.ServerInterceptor):
    """The gRPC face of :class:`Admission`: auth, drain refusal and in-flight counting."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(PUBLIC_GRPC_PREFIXES):
            return handler
        adm = self.admission
        if adm.draining:
            return _refusal(handler, grpc.StatusCode.UNAVAILABLE,
                            "replica is draining; retry on another replica")
        if adm.requires_token:
            auth = next((v for k, v in details.invocation_metadata or () if k == "authorization"), None)
            if not adm.authorized(auth):
                return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED,
                                "missing or invalid bearer token")
        return _counted(handler, adm)


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, text: str) -> grpc.RpcMethodHandler:
    if handler.response_streaming:
        async def deny_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await context.abort(code, text)
            yield  # pragma: no cover - abort raises

        return grpc.unary_stream_rpc_method_handler(
            deny_stream, handler.request_deserializer, handler.response_serializer)

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, text)

    return grpc.unary_unary_rpc_method_handler(
        deny, handler.request_deserializer, handler.response_serializer)


def _counted(handler: grpc.RpcMethodHandler, adm: Admission) -> grpc.RpcMethodHandler:
    if handler.unary_unary:
        inner = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            adm.enter()
            try:
                return await inner(request, context)
            finally:
                adm.leave()

        return grpc.unary_unary_rpc_method_handler(
            unary, handler.request_deserializer, handler.response_serializer)
    if handler.unary_stream:
        inner_stream = handler.unary_stream

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            adm.enter()
            try:
                async for item in inner_stream(request, context):
                    yield item
            finally:
                adm.leave()

        return grpc.unary_stream_rpc_method_handler(
            stream, handler.request_deserializer, handler.response_serializer)
    return handler
