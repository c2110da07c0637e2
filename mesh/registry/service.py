"""The registry as a gRPC service: the wire protocol over a :class:`RegistryStore`.

The server also answers the standard gRPC health and reflection services, so Kubernetes
probes and tools such as grpcurl work without extra setup, and it runs the expiry sweep that
turns silent replicas into REMOVED events for watchers. Its own metrics
(:mod:`mesh.registry.metrics`) are served over HTTP on ``SLMESH_METRICS_PORT`` by
:func:`serve_registry`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mesh import telemetry
from mesh.config import Settings, registry_credential
from mesh.proto.slmesh.registry.v1 import registry_pb2 as pb
from mesh.proto.slmesh.registry.v1 import registry_pb2_grpc as pb_grpc
from mesh.registry.identity import WriteIdentity
from mesh.registry.metrics import RegistryMetrics
from mesh.registry.store import (
    MemoryRegistryStore,
    RegistryStore,
    RevisionUnavailable,
    StoreUnavailable,
    Subscription,
    WatchClosed,
    WatcherOverflow,
)
from mesh.tls import TlsFiles
from mesh.trust import TrustBundle, TrustError

CardCheck = Callable[[str, str], object]
"""Checks a replica's card (agent name, card JSON) at registration, raising
:class:`~mesh.trust.TrustError` to refuse it; the A2A layer supplies it (signed cards), so
the registry does not import A2A code."""

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Registry"].full_name
"""Fully qualified gRPC service name, as health checks and reflection know it."""

TRANSPORTS = frozenset({"GRPC", "JSONRPC", "HTTP+JSON"})
"""A2A protocol binding names an endpoint may declare."""

_KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
]
"""Lets watchers ping idle Watch streams (and pings them) so dead peers are noticed."""

_HEALTH_POLL_S = 0.1
"""How often the health status follows the store's availability (an attribute read)."""


def replica_problems(replica: pb.Replica) -> list[str]:
    """Everything wrong with a replica a client wants to register; empty when acceptable."""
    problems = []
    if not replica.replica_id:
        problems.append("replica.replica_id is required")
    if not replica.agent:
        problems.append("replica.agent is required")
    if not replica.endpoints:
        problems.append("replica.endpoints needs at least one endpoint")
    for i, endpoint in enumerate(replica.endpoints):
        if endpoint.transport not in TRANSPORTS:
            problems.append(
                f"replica.endpoints[{i}].transport is {endpoint.transport!r}; "
                f"expected one of {', '.join(sorted(TRANSPORTS))}"
            )
        if not endpoint.url:
            problems.append(f"replica.endpoints[{i}].url is required")
    if replica.card_json:
        try:
            card = json.loads(replica.card_json)
        except ValueError as exc:
            problems.append(f"replica.card_json is not valid JSON: {exc}")
        else:
            if not isinstance(card, dict):
                problems.append("replica.card_json must be a JSON object")
    return problems


BAD_REGISTRATION_TOKEN = "missing or invalid registration token (SLMESH_REGISTRATION_TOKEN)"
BAD_READ_TOKEN = "missing or invalid bearer token (SLMESH_API_TOKEN or SLMESH_REGISTRATION_TOKEN)"


def _presented(context: grpc.aio.ServicerContext[Any, Any]) -> bytes | None:
    """The bearer token in the call's ``authorization`` metadata, if any."""
    header = next((v for k, v in context.invocation_metadata() or () if k == "authorization"), None)
    if not header:
        return None
    raw = header.encode() if isinstance(header, str) else header
    scheme, _, value = raw.partition(b" ")
    return value.strip() if scheme.lower() == b"bearer" else None


def _store_errors(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """A unary call whose store cannot reach its database answers UNAVAILABLE (retry, on
    another registry replica), never a half-done write: the store's transaction rolled back."""

    @functools.wraps(method)
    async def call(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await method(self, request, context)
        except StoreUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    return call


class RegistryServicer(pb_grpc.RegistryServicer):
    """Implements ``slmesh.registry.v1.Registry`` on top of a store.

    Writes (Register, Heartbeat, Deregister) need ``write_token`` when it is set, so no
    stranger can add, replace, drain or remove a replica. Reads (List, Watch) need one of
    ``read_tokens`` when any is set: discovery is for mesh members, not for the network.
    With ``identity``, a write must also prove the agent names it speaks for
    (:mod:`mesh.registry.identity`): a replica registers, heartbeats and deregisters only under
    those. ``card_check`` refuses a registration whose card it does not trust (unsigned or
    badly signed, with signed cards required).
    """

    def __init__(
        self,
        store: RegistryStore,
        heartbeat_interval_s: float,
        *,
        write_token: str | None = None,
        read_tokens: tuple[str, ...] = (),
        identity: WriteIdentity | None = None,
        card_check: CardCheck | None = None,
    ) -> None:
        self._store = store
        self.metrics = RegistryMetrics(telemetry.get_meter(), lambda: len(self._watches))
        self._identity = identity
        self._card_check = card_check
        self._heartbeat_interval_s = heartbeat_interval_s
        self._watches: set[Subscription] = set()
        self._write_token = write_token.encode() if write_token else None
        self._read_tokens = tuple(t.encode() for t in read_tokens if t)

    async def _require(self, context: grpc.aio.ServicerContext[Any, Any], write: bool) -> None:
        allowed = (
            (self._write_token,)
            if write and self._write_token
            else (() if write else self._read_tokens)
        )
        if not allowed:
            return
        token = _presented(context)
        # compare_digest against every allowed token: no early exit that would leak which one
        # matched.
        if token is None or not any([hmac.compare_digest(token, t) for t in allowed]):
            log.warning(
                "refused %s from %s: bad or missing token",
                "a registry write" if write else "a registry read",
                context.peer(),
            )
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, BAD_REGISTRATION_TOKEN if write else BAD_READ_TOKEN
            )

    async def _refuse(
        self, context: grpc.aio.ServicerContext[Any, Any], op: str, replica_id: str, why: str
    ) -> None:
        log.warning("refused %s of replica %s from %s: %s", op, replica_id, context.peer(), why)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{op} refused: {why}")

    async def _stored_agent(self, replica_id: str) -> str | None:
        """The agent a registered replica belongs to (None when it is not registered)."""
        return next((r.agent for r in await self._store.list() if r.replica_id == replica_id), None)

    async def _require_agent(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        op: str,
        replica_id: str,
        request: Any,
        agent: str | None,
    ) -> None:
        """With identity on: the call's credential must be bound to ``agent`` (the replica's
        agent as registered, or as announced for a new one)."""
        if self._identity is None:
            return
        try:
            names = self._identity.agents(context, op, replica_id, request)
        except TrustError as exc:
            await self._refuse(context, op, replica_id, str(exc))
            return
        if agent is not None and agent not in names:
            await self._refuse(
                context,
                op,
                replica_id,
                f"replica {replica_id!r} belongs to agent {agent!r}; this credential speaks "
                f"for {', '.join(sorted(names))}",
            )

    @_store_errors
    async def Register(
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RegisterResponse:
        await self._require(context, write=True)
        if not request.HasField("replica"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "replica is required")
        problems = replica_problems(request.replica)
        if problems:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "invalid replica: " + "; ".join(problems)
            )
        replica = request.replica
        if self._identity is not None:
            await self._require_agent(
                context, "Register", replica.replica_id, request, replica.agent
            )
            # Re-registering an id under another agent would replace that agent's replica.
            current = await self._stored_agent(replica.replica_id)
            if current is not None:
                await self._require_agent(context, "Register", replica.replica_id, request, current)
        if self._card_check is not None:
            try:
                self._card_check(replica.agent, replica.card_json)
            except TrustError as exc:
                await self._refuse(context, "Register", replica.replica_id, str(exc))
        stored = await self._store.register(request.replica)
        self.metrics.registered(stored.agent)
        log.info("registered %s replica %s", stored.agent, stored.replica_id)
        return pb.RegisterResponse(
            ttl_seconds=self._store.ttl_s, heartbeat_interval_seconds=self._heartbeat_interval_s
        )

    @_store_errors
    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.HeartbeatResponse:
        await self._require(context, write=True)
        if not request.replica_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "replica_id is required")
        if self._identity is not None:
            agent = await self._stored_agent(request.replica_id)
            await self._require_agent(context, "Heartbeat", request.replica_id, request, agent)
        load = request.load if request.HasField("load") else None
        known = await self._store.heartbeat(request.replica_id, load, request.draining)
        if not known:
            log.debug("heartbeat from unknown replica %s", request.replica_id)
        return pb.HeartbeatResponse(known=known)

    @_store_errors
    async def Deregister(
        self, request: pb.DeregisterRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeregisterResponse:
        await self._require(context, write=True)
        if not request.replica_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "replica_id is required")
        if self._identity is not None:
            agent = await self._stored_agent(request.replica_id)
            await self._require_agent(context, "Deregister", request.replica_id, request, agent)
        removed = await self._store.deregister(request.replica_id)
        if removed:
            log.info("deregistered replica %s", request.replica_id)
        return pb.DeregisterResponse(removed=removed)

    @_store_errors
    async def List(
        self, request: pb.ListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListResponse:
        await self._require(context, write=False)
        return pb.ListResponse(replicas=await self._store.list(request.agent, request.skill))

    async def Watch(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchEvent]:
        await self._require(context, write=False)
        try:
            watch = await self._store.watch(request.agent, request.since_revision)
        except RevisionUnavailable as exc:
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, str(exc))
        except StoreUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        self._watches.add(watch)
        try:
            async for event in watch:
                yield event
        except WatcherOverflow as exc:
            log.warning("dropped watcher %s: %s", context.peer(), exc)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except WatchClosed as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        finally:
            watch.close()
            self._watches.discard(watch)

    def close_watches(self, reason: str) -> None:
        """Ends every open Watch stream with UNAVAILABLE, telling clients to reconnect."""
        for watch in list(self._watches):
            watch.close(WatchClosed(reason))


@dataclass
class RegistryServer:
    """A running registry: the gRPC server, the port it got, and its expiry sweep."""

    server: grpc.aio.Server
    port: int
    host: str
    store: RegistryStore
    health: health.aio.HealthServicer
    servicer: RegistryServicer
    _expiry: asyncio.Task[None] | None = field(default=None, repr=False)
    _health: asyncio.Task[None] | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def address(self) -> str:
        """``host:port`` a client on this machine can dial."""
        host = "127.0.0.1" if self.host in {"", "0.0.0.0", "::", "[::]"} else self.host
        return f"{_bracket(host)}:{self.port}"

    async def wait_for_termination(self) -> None:
        """Returns once the server has stopped."""
        await self.server.wait_for_termination()

    async def stop(self, grace: float | None = None) -> None:
        """Reports NOT_SERVING, ends Watch streams, then stops; calls still running after
        ``grace`` seconds are cancelled (``None`` cancels them at once)."""
        if self._stopped:
            return
        self._stopped = True
        for task in (self._health, self._expiry):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.health.enter_graceful_shutdown()
        stopping = asyncio.create_task(self.server.stop(grace))
        await asyncio.sleep(0)
        self.servicer.close_watches("registry is shutting down; reconnect to resync")
        await stopping
        await self.store.aclose()
        log.info("registry on port %d stopped", self.port)


async def start_registry_server(
    settings: Settings,
    store: RegistryStore | None = None,
    port: int | None = None,
    *,
    card_check: CardCheck | None = None,
) -> RegistryServer:
    """Starts the registry on ``settings.host``; ``port`` overrides ``settings.grpc_port`` and
    0 picks a free port (read it back from :attr:`RegistryServer.port`). ``card_check`` vets
    each registered card (see :class:`RegistryServicer`)."""
    store = store if store is not None else registry_store(settings)
    await store.start()
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_request_bytes),
            ("grpc.max_send_message_length", settings.max_request_bytes),
            # One registry per port: two processes sharing one would split the mesh's state.
            ("grpc.so_reuseport", 0),
            *_KEEPALIVE_OPTIONS,
        ]
    )
    identity = None
    if settings.registration_identity == "agent":
        bundle = TrustBundle.load(settings.trust_bundle) if settings.trust_bundle else None
        identity = WriteIdentity(bundle)
    servicer = RegistryServicer(
        store,
        settings.heartbeat_interval_s,
        **registry_tokens(settings),
        identity=identity,
        card_check=card_check,
    )
    pb_grpc.add_RegistryServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    wanted = settings.grpc_port if port is None else port
    tls = TlsFiles.from_settings(settings)
    try:
        address = f"{_bracket(settings.host)}:{wanted}"
        bound = (
            server.add_secure_port(address, tls.grpc_server_credentials())
            if tls
            else server.add_insecure_port(address)
        )
    except RuntimeError as exc:
        raise OSError(f"registry could not bind {settings.host}:{wanted}: {exc}") from exc
    await server.start()
    await _set_health(health_servicer, serving=True)
    running = RegistryServer(
        server=server,
        port=bound,
        host=settings.host,
        store=store,
        health=health_servicer,
        servicer=servicer,
        _expiry=asyncio.create_task(
            _expire_forever(store, servicer.metrics), name="registry-expiry"
        ),
        _health=asyncio.create_task(_report_health(store, health_servicer), name="registry-health"),
    )
    log.info("registry serving on %s:%d (ttl %.1fs)", settings.host, bound, store.ttl_s)
    return running


def registry_tokens(settings: Settings) -> dict[str, Any]:
    """Who may write (the registration token, else the API token) and read (either) the registry.

    Reads stay open while the mesh has no API token: agent cards are public then anyway.
    """
    read = tuple(
        t.get_secret_value() for t in (settings.registration_token, settings.api_token) if t
    )
    return {
        "write_token": registry_credential(settings),
        "read_tokens": read if settings.api_token else (),
    }


def registry_store(settings: Settings) -> RegistryStore:
    """PostgreSQL when ``settings.registry_database`` is set (registry replicas share it),
    else the in-memory store of one registry process."""
    if settings.registry_database is None:
        return MemoryRegistryStore(ttl_s=settings.registry_ttl_s)
    from mesh.registry.postgres import PostgresRegistryStore

    return PostgresRegistryStore(
        settings.registry_database.get_secret_value(),
        ttl_s=settings.registry_ttl_s,
        pool_size=settings.registry_pool_size,
        lease_s=settings.registry_lease_s,
    )


async def _set_health(servicer: health.aio.HealthServicer, *, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in (health.OVERALL_HEALTH, SERVICE_NAME):
        await servicer.set(name, status)


async def _expire_forever(store: RegistryStore, metrics: RegistryMetrics) -> None:
    """Sweeps often enough that a replica is removed within about a quarter TTL of expiring;
    after each sweep, reads the live replicas per agent for the replicas gauge."""
    interval = min(max(store.ttl_s / 4, 0.01), 1.0)
    while True:
        await asyncio.sleep(interval)
        try:
            expired = await store.expire()
            counts = await store.counts()
        except StoreUnavailable as exc:
            log.debug("registry expiry sweep: %s", exc)
            continue
        except Exception:
            log.exception("registry expiry sweep failed; retrying in %.2fs", interval)
            continue
        metrics.set_replicas(counts)
        for replica in expired:
            metrics.expired(replica.agent)
            log.info("expired %s replica %s (no heartbeat)", replica.agent, replica.replica_id)


async def _report_health(store: RegistryStore, health_servicer: health.aio.HealthServicer) -> None:
    """NOT_SERVING while the store is not :attr:`~RegistryStore.available` (cut off from the
    shared state: it must not look ready, so load balancers send clients to a registry that
    is), SERVING again once it is."""
    serving = True
    while True:
        await asyncio.sleep(_HEALTH_POLL_S)
        if store.available == serving:
            continue
        serving = not serving
        if serving:
            log.info("registry store reachable again, reporting SERVING")
        else:
            log.warning("registry store %s unavailable, reporting NOT_SERVING", store)
        await _set_health(health_servicer, serving=serving)


def _bracket(host: str) -> str:
    """IPv6 literals need brackets in ``host:port``."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def serve_registry(settings: Settings, card_check: CardCheck | None = None) -> None:
    """Runs the registry on ``settings.grpc_port`` until SIGTERM or SIGINT (``slmesh serve``)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    exposition = None
    if settings.prometheus:  # first: a taken metrics port stops the process before it serves
        try:
            exposition = telemetry.MetricsServer(settings.host, settings.metrics_port)
        except OSError as exc:
            raise OSError(
                f"registry metrics could not bind {settings.host}:{settings.metrics_port} "
                f"(SLMESH_METRICS_PORT): {exc}"
            ) from exc
        log.info("registry metrics on http://%s:%d/metrics", settings.host, exposition.port)
    try:
        running = await start_registry_server(settings, card_check=card_check)
        await stop.wait()
        await running.stop(grace=1.0)
    finally:
        if exposition is not None:
            exposition.close()
