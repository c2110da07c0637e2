"""Serve one agent replica on the three A2A 1.0 transports from one process.

JSON-RPC and HTTP+JSON (REST) share one FastAPI app under uvicorn; gRPC runs on grpc.aio
with the standard health and reflection services. Both sides go through one
:class:`~mesh.a2a.gates.Admission` (auth, size limit, drain, in-flight count) and one
a2a-sdk request handler backed by a real task store.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import os
import signal
import socket
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc
import uvicorn
from a2a.server.cluster import TaskEventStream, VersionedTaskStore
from a2a.server.routes import (
    add_a2a_routes_to_fastapi,
    create_jsonrpc_routes,
    create_rest_routes,
)
from a2a.server.tasks import (
    DatabasePushNotificationConfigStore,
    DatabaseTaskStore,
    InMemoryPushNotificationConfigStore,
    InMemoryTaskStore,
    PushNotificationConfigStore,
    TaskStore,
)
from a2a.types import a2a_pb2
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mesh.a2a.cards import Endpoints, build_card, card_routes
from mesh.a2a.events import NotifyTaskEventStream
from mesh.a2a.executor import Executor, StoredTasks, to_sdk
from mesh.a2a.gates import Admission, HttpGate, add_gated_service
from mesh.a2a.handler import MeshGrpcHandler, MeshRequestHandler
from mesh.a2a.leases import LeasedExecutor, TaskTakeover, build_takeover
from mesh.a2a.outbox import Outbox, OutboxTaskStore, SqliteOutbox, SqlOutbox, config_table
from mesh.a2a.push import PushSender
from mesh.a2a.schema_lock import schema_lock
from mesh.a2a.sdk_spans import install
from mesh.a2a.signing import card_signing_keys, sign_card
from mesh.a2a.store import SqlitePushConfigStore, SqliteTaskStore
from mesh.a2a.tracing import HopTelemetry, TracedExecutor
from mesh.config import ServiceSpec, Settings, SpecError
from mesh.telemetry import enabled as telemetry_enabled
from mesh.telemetry import metered, prometheus_text
from mesh.tls import TlsFiles
from mesh.trust import SigningKey

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from mesh.registry import Registration, RegistryClient

log = logging.getLogger(__name__)

A2A_SERVICE = a2a_pb2.DESCRIPTOR.services_by_name["A2AService"]
A2A_GRPC_SERVICE = A2A_SERVICE.full_name

JWKS_PATH = "/.well-known/jwks.json"
"""Where an agent with signing keys publishes their public parts."""


def load_executor(spec: ServiceSpec, settings: Settings) -> Executor:
    """Imports ``spec.executor`` (``module:Class``) and builds it with the spec and settings."""
    assert spec.executor is not None
    module_name, _, class_name = spec.executor.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise SpecError(
            f"service {spec.name!r}: cannot import executor {spec.executor!r}: {exc}"
        ) from exc
    executor = cls(spec=spec, settings=settings)
    if not isinstance(executor, Executor):
        raise SpecError(f"service {spec.name!r}: {spec.executor} is not a mesh.a2a Executor")
    return executor


def build_task_store(spec: ServiceSpec, settings: Settings) -> TaskStore | VersionedTaskStore:
    """The task store named by ``settings.task_store``: SQLite file, memory or any SQLAlchemy URL.

    ``sqlite`` is :class:`~mesh.a2a.store.SqliteTaskStore` (``sqlite3``, no ORM, one statement
    per call); an SQLAlchemy URL (``sqlite+aiosqlite:///...``, ``postgresql+asyncpg://...``)
    selects a2a-sdk's ``DatabaseTaskStore``, or with ``task_events='database'`` its versioned
    cluster store, whose event log lets every replica serve every task (see
    :func:`build_event_stream`).
    """
    if settings.task_store in ("memory", "sqlite"):
        if settings.task_events == "database":
            raise SpecError(
                "SLMESH_TASK_EVENTS=database needs a shared database: set SLMESH_TASK_STORE "
                "to an SQLAlchemy URL such as postgresql+asyncpg://HOST/DB"
            )
        if settings.task_store == "memory":
            return InMemoryTaskStore()
        return SqliteTaskStore((settings.data_dir / f"tasks-{spec.name}.sqlite").resolve())
    from sqlalchemy.ext.asyncio import create_async_engine

    pooling: dict[str, Any] = {}
    if settings.task_store.startswith(("postgresql", "postgres")):  # bounded: docs/scaling.md
        pooling = {
            "pool_size": settings.task_store_pool_size,
            "max_overflow": settings.task_store_max_overflow,
        }
    engine = create_async_engine(settings.task_store, pool_pre_ping=True, **pooling)
    table = _task_table(spec)
    if settings.task_events == "database":
        from a2a.server.cluster import VersionedDatabaseTaskStore

        # The version and event tables keep a2a-sdk's shared names (rows are keyed by task
        # id): its event stream cannot map a second model onto a custom event table.
        return VersionedDatabaseTaskStore(engine, table_name=table)
    return DatabaseTaskStore(engine, table_name=table)


def database_engine(store: TaskStore | VersionedTaskStore) -> AsyncEngine | None:
    """The SQLAlchemy engine behind a2a-sdk's database task stores, else None."""
    from a2a.server.cluster import VersionedDatabaseTaskStore

    if isinstance(store, VersionedDatabaseTaskStore):
        engine: AsyncEngine = store.as_task_store.engine  # type: ignore[attr-defined]
        return engine
    if isinstance(store, DatabaseTaskStore):
        return store.engine
    return None


def build_event_stream(
    store: TaskStore | VersionedTaskStore, settings: Settings, replica_id: str = ""
) -> TaskEventStream | None:
    """The cross-replica event stream that goes with a versioned database store, else None.

    The store writes each event to its log in the transaction of the task's new version, so
    a subscriber on any replica sees every event. On PostgreSQL the log is followed by
    ``LISTEN/NOTIFY`` (:class:`~mesh.a2a.events.NotifyTaskEventStream`); elsewhere, or with
    ``task_event_feed='poll'``, by a2a-sdk's ``DatabaseTaskEventStream``, which reads it every
    0.5 s.
    """
    from a2a.server.cluster import VersionedDatabaseTaskStore

    engine = database_engine(store)
    if not isinstance(store, VersionedDatabaseTaskStore) or engine is None:
        return None
    if settings.task_event_feed == "notify" and engine.dialect.name == "postgresql":
        return NotifyTaskEventStream(engine, replica_id=replica_id)
    from a2a.server.cluster import DatabaseTaskEventStream

    return DatabaseTaskEventStream(engine)


def build_task_takeover(
    spec: ServiceSpec, settings: Settings, store: TaskStore | VersionedTaskStore, replica_id: str
) -> TaskTakeover | None:
    """Task leases and takeover (:mod:`mesh.a2a.leases`) where tasks are replica-agnostic, else
    None."""
    from a2a.server.cluster import VersionedDatabaseTaskStore

    engine = database_engine(store)
    if not isinstance(store, VersionedDatabaseTaskStore) or engine is None:
        return None
    return build_takeover(engine, spec.name, replica_id, settings)


@dataclass
class Push:
    """What push notifications add to a replica: where configs live, the sender, and the task
    store as the request handler must see it (the SQLite store hands events to its outbox)."""

    config_store: PushNotificationConfigStore
    sender: PushSender
    handler_store: TaskStore | VersionedTaskStore


def build_push(
    spec: ServiceSpec,
    settings: Settings,
    store: TaskStore | VersionedTaskStore,
    keys: list[SigningKey],
    replica_id: str,
) -> Push | None:
    """Push configs, sender and outbox when ``settings.push_notifications``, else None.

    Configs live next to the tasks: in memory with a memory store, in the SQLite store's file,
    and in the task store's own database (shared by its replicas) otherwise. Delivery is
    durable (:mod:`mesh.a2a.outbox`) with the SQLite store and with a database store that keeps
    the event log (``SLMESH_TASK_EVENTS=database``); with the memory store or a database store
    without the event log, notifications queue in this process.
    """
    if not settings.push_notifications:
        return None
    from a2a.server.cluster import VersionedDatabaseTaskStore

    config_store: PushNotificationConfigStore
    outbox: Outbox | None = None
    handler_store = store
    if isinstance(store, SqliteTaskStore):
        store.enable_push()
        config_store = SqlitePushConfigStore(store)
        outbox = SqliteOutbox(store)
        handler_store = OutboxTaskStore(store)
    elif isinstance(store, VersionedDatabaseTaskStore):
        engine = database_engine(store)
        assert engine is not None  # a versioned database store has one
        config_store = DatabasePushNotificationConfigStore(
            engine, table_name=config_table(spec.name)
        )
        outbox = SqlOutbox(engine, spec.name)
    elif isinstance(store, DatabaseTaskStore):
        config_store = DatabasePushNotificationConfigStore(
            store.engine, table_name=config_table(spec.name)
        )
        log.warning(
            "push notifications of %s are not durable: they queue in this process "
            "(SLMESH_TASK_EVENTS=database gives the database store its outbox)",
            spec.name,
        )
    else:
        config_store = InMemoryPushNotificationConfigStore()
    sender = PushSender.from_settings(
        settings, config_store, keys, outbox=outbox, replica_id=replica_id
    )
    return Push(config_store, sender, handler_store)


@contextlib.contextmanager
def _quiet_about_versioned_store(quiet: bool) -> Iterator[None]:
    """a2a-sdk warns when its handler gets a versioned store without an event stream
    ("cross-replica streaming is disabled"). The SQLite store with push on is such a store (it
    only wants each save's event) on one process, so there is nothing to warn about."""
    if not quiet:
        yield
        return
    sdk = logging.getLogger("a2a.server.request_handlers.default_request_handler_v2")
    level = sdk.level
    sdk.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="A VersionedTaskStore was configured")
            yield
    finally:
        sdk.setLevel(level)


def _task_table(spec: ServiceSpec) -> str:
    return f"tasks_{spec.name.replace('-', '_')}"


def _bind(host: str, port: int) -> socket.socket:
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only
    # for sockets that say so; without it every HTTP response waits ~40 ms (delayed ACK).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _fastapi_telemetry(on: bool) -> dict[str, Any]:
    """FastAPI (>= 0.160) traces every request by itself once a tracer provider is set: an
    HTTP server span plus spans for dependencies, endpoint and serialization. The hop
    already has its server span (``invoke_agent``, on every transport alike), so FastAPI's
    own stay off unless ``SLMESH_HTTP_SPANS`` asks for them."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    if on:
        return {"telemetry": {"operation_spans": False}}
    return {
        "telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
    }


_PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus text exposition's media type (for an empty /metrics)."""


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside an agent process: SIGTERM belongs to :class:`AgentServer`, which must
    drain in-flight work before the HTTP side closes (uvicorn would close it at once)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class AgentServer:
    """One replica of one agent, from start-up to a drained stop."""

    def __init__(
        self,
        spec: ServiceSpec,
        settings: Settings,
        executor: Executor | None = None,
        task_store: TaskStore | None = None,
    ) -> None:
        install()  # a no-op after the entry point's call; raises if a2a-sdk came first
        self.spec = spec
        self.settings = settings
        self.executor = executor or load_executor(spec, settings)
        # Executors that start child processes (the planner's Ray) do it here, while the
        # process has no gRPC threads yet: forking next to live gRPC threads can hang the child.
        prepare = getattr(self.executor, "prepare", None)
        if prepare is not None:
            prepare()
        self.task_store = task_store or build_task_store(spec, settings)
        self._warm = False  # ready (HTTP /readyz, gRPC health) only once warm-up has run
        token = settings.api_token.get_secret_value() if settings.api_token else None
        self.admission = Admission(
            max_request_bytes=settings.max_request_bytes,
            api_token=token,
            max_in_flight=settings.max_in_flight,
        )
        self.replica_id = settings.replica_id or f"{spec.name}-{socket.gethostname()}-{os.getpid()}"
        self.event_stream = build_event_stream(self.task_store, settings, self.replica_id)
        self.takeover = build_task_takeover(spec, settings, self.task_store, self.replica_id)
        self._http_sock = _bind(settings.host, settings.http_port)
        options: list[tuple[str, int]] = [
            ("grpc.max_receive_message_length", settings.max_request_bytes),
            ("grpc.so_reuseport", 0),
        ]
        if settings.grpc_max_connection_age_s:
            options.append(
                ("grpc.max_connection_age_ms", int(settings.grpc_max_connection_age_s * 1000))
            )
        self._grpc_server = grpc.aio.server(options=options)
        self.tls = TlsFiles.from_settings(settings)
        address = f"{settings.host}:{settings.grpc_port}"
        self.grpc_port = (
            self._grpc_server.add_secure_port(address, self.tls.grpc_server_credentials())
            if self.tls
            else self._grpc_server.add_insecure_port(address)
        )
        if self.grpc_port == 0:
            raise OSError(f"cannot bind gRPC port {settings.host}:{settings.grpc_port}")
        self.http_port = self._http_sock.getsockname()[1]
        self.endpoints = Endpoints.for_host(
            settings.advertise_host, self.http_port, self.grpc_port, https=self.tls is not None
        )
        extensions = getattr(self.executor, "card_extensions", None)
        self.card = build_card(
            spec,
            self.endpoints.advertised(
                jsonrpc=settings.public_jsonrpc_url,
                rest=settings.public_http_json_url,
                grpc=settings.public_grpc_url,
            ),
            bearer_auth=token is not None,
            extensions=extensions() if extensions is not None else (),
            push=settings.push_notifications,
        )
        self.signing_keys = card_signing_keys(settings)
        if self.signing_keys:
            sign_card(self.card, self.signing_keys)
        self.card_built = datetime.now(UTC)
        served = to_sdk(self.executor)
        if telemetry_enabled() or metered():
            # The caller's trace context comes in at the gate (when tracing), request metrics
            # are recorded there; the executor runs in the agent's invoke_agent span
            # (mesh.a2a.tracing).
            admission = self.admission
            self.admission.telemetry = HopTelemetry(
                spec.name, lambda: admission.in_flight, traced=telemetry_enabled()
            )
        if telemetry_enabled():
            served = TracedExecutor(served, spec.name, self.replica_id)
        if self.takeover is not None:
            served = LeasedExecutor(served, self.takeover)
        push = build_push(spec, settings, self.task_store, self.signing_keys, self.replica_id)
        self.push_store = push.config_store if push else None
        self.push_sender = push.sender if push else None
        with _quiet_about_versioned_store(push is not None and self.event_stream is None):
            self.handler = MeshRequestHandler(
                agent_executor=served,
                task_store=push.handler_store if push else self.task_store,
                agent_card=self.card,
                event_stream=self.event_stream,
                takeover=self.takeover,
                push_config_store=self.push_store,
                push_sender=self.push_sender,
                push_url_validator=self.push_sender.policy.accepts if self.push_sender else None,
            )
        self._health = health.aio.HealthServicer()
        self.app = self._build_app()
        self._uvicorn: uvicorn.Server | None = None
        self._uvicorn_task: asyncio.Task[None] | None = None
        self._registration: Registration | None = None
        self._registry_client: RegistryClient | None = None

    # -- assembly -----------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(
            title=f"slmesh agent: {self.spec.name}",
            version=self.spec.version,
            **_fastapi_telemetry(self.settings.http_spans),
        )
        v03 = self.settings.accept_a2a_v03
        add_a2a_routes_to_fastapi(
            app,
            agent_card_routes=card_routes(
                self.card, max_age_s=self.settings.card_max_age_s, last_modified=self.card_built
            ),
            jsonrpc_routes=create_jsonrpc_routes(self.handler, rpc_url="/", enable_v0_3_compat=v03),
        )
        if self.signing_keys:
            app.add_api_route(JWKS_PATH, self._jwks, methods=["GET"], include_in_schema=False)
        app.add_api_route("/healthz", self._healthz, methods=["GET"], include_in_schema=False)
        app.add_api_route("/readyz", self._readyz, methods=["GET"], include_in_schema=False)
        if self.settings.prometheus:
            app.add_api_route("/metrics", self._metrics, methods=["GET"], include_in_schema=False)
        # REST last: it mounts a catch-all.
        add_a2a_routes_to_fastapi(
            app, rest_routes=create_rest_routes(self.handler, enable_v0_3_compat=v03)
        )
        return app

    async def _jwks(self) -> JSONResponse:
        """The public parts of this agent's signing keys (what a trust bundle pins, and what a
        push-notification receiver verifies with)."""
        keys = [k.public_jwk([self.spec.name]) for k in self.signing_keys]
        return JSONResponse({"keys": keys}, headers={"cache-control": "public, max-age=300"})

    async def _healthz(self) -> JSONResponse:
        return JSONResponse({"status": "ok", "agent": self.spec.name, "replica": self.replica_id})

    async def _metrics(self) -> Response:
        # Served whenever the agent runs; empty where nothing is collected (OTEL_SDK_DISABLED).
        body, media_type = prometheus_text() or (b"", _PROMETHEUS_TEXT)
        return Response(body, media_type=media_type)

    async def _readyz(self) -> JSONResponse:
        ready = self._warm and not self.admission.draining
        return JSONResponse(
            {
                "ready": ready,
                "warming_up": not self._warm,
                "in_flight": self.admission.in_flight,
                "draining": self.admission.draining,
            },
            status_code=200 if ready else 503,
        )

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Starts serving on both ports and, when configured, registers with the registry."""
        engine = database_engine(self.task_store)
        # a2a-sdk's stores create their tables unlocked: replicas starting together take turns.
        async with contextlib.AsyncExitStack() as tables:
            if engine is not None:
                await tables.enter_async_context(schema_lock(engine, "slmesh-a2a-tables"))
            initialize = getattr(self.task_store, "initialize", None)
            if initialize is not None:
                await initialize()
            if isinstance(self.push_store, DatabasePushNotificationConfigStore):
                await self.push_store.initialize()
        if isinstance(self.event_stream, NotifyTaskEventStream):
            await self.event_stream.initialize()  # after the store: it made the event log
        if self.push_sender is not None:
            await self.push_sender.start()  # after both stores: the outbox joins their tables
        if self.takeover is not None:
            await self.takeover.start(self.handler)
        # Executors with their own start-up (the planner: Ray, its run store) get the stored
        # tasks before the first request can reach them, and whether task takeover finishes
        # the tasks a dead replica left (then they must not resume them on their own).
        start_executor = getattr(self.executor, "start", None)
        if start_executor is not None:
            await start_executor(StoredTasks(self.task_store), takeover=self.takeover is not None)
        # The admission gate wraps the A2A methods once here; health and reflection stay open.
        add_gated_service(
            self._grpc_server, MeshGrpcHandler(self.handler), A2A_SERVICE, self.admission
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc_server)
        reflection.enable_server_reflection(
            (A2A_GRPC_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), self._grpc_server
        )
        await self._grpc_server.start()
        config = uvicorn.Config(
            HttpGate(self.app, self.admission),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=max(1, int(self.settings.drain_timeout_s)),
            **(self.tls.uvicorn_options() if self.tls else {}),
        )
        self._uvicorn = _EmbeddedUvicorn(config)
        self._uvicorn_task = asyncio.create_task(self._uvicorn.serve(sockets=[self._http_sock]))
        while not self._uvicorn.started:
            if self._uvicorn_task.done():
                await self._uvicorn_task
                raise RuntimeError("HTTP server exited during start-up")
            await asyncio.sleep(0.01)
        # Warm-up before the agent reports ready: whatever a first request would otherwise pay
        # (model kernels, grammar compilation, a database created on first use) is paid here.
        warm_up = getattr(self.executor, "warm_up", None)
        if warm_up is not None:
            started = time.perf_counter()
            await warm_up()
            log.info("agent %s warmed up in %.2f s", self.spec.name, time.perf_counter() - started)
        self._warm = True
        for service in ("", A2A_GRPC_SERVICE):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        await self._start_registration()
        log.info(
            "agent %s replica %s serving: %s",
            self.spec.name,
            self.replica_id,
            ", ".join(f"{b} {u}" for b, u in self.endpoints.as_pairs()),
        )

    async def _start_registration(self) -> None:
        """Registers this replica (card, endpoints, skills) and heartbeats its in-flight load."""
        if not self.settings.registry:
            return
        from google.protobuf.json_format import MessageToJson

        from mesh.registry import Endpoint, Load, Registration, RegistryClient, Replica

        self._registry_client = RegistryClient.from_settings(self.settings, agent=self.spec.name)
        replica = Replica(
            agent=self.spec.name,
            replica_id=self.replica_id,
            endpoints=[Endpoint(transport=b, url=u) for b, u in self.endpoints.as_pairs()],
            card_json=MessageToJson(self.card),
            version=self.spec.version,
            skills=[s.id for s in self.spec.skills],
        )
        admission = self.admission
        self._registration = Registration(
            self._registry_client,
            replica,
            load=lambda: Load(in_flight=admission.in_flight),
            heartbeat_interval_s=self.settings.heartbeat_interval_s,
        )
        self._registration.start()

    async def stop(self) -> None:
        """Graceful drain: refuse new work, finish in-flight, deregister, close both servers."""
        self.admission.draining = True
        for service in ("", A2A_GRPC_SERVICE):
            await self._health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._registration is not None:
            self._registration.set_draining()
        drained = await self.admission.wait_idle(self.settings.drain_timeout_s)
        if not drained:
            log.warning("drain timeout: %d requests still in flight", self.admission.in_flight)
        if self._registration is not None and self._registry_client is not None:
            await self._registration.stop()
            await self._registry_client.close()
        if self._uvicorn is not None and self._uvicorn_task is not None:
            self._uvicorn.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._uvicorn_task
        await self._grpc_server.stop(grace=1.0)
        close_executor = getattr(self.executor, "aclose", None)
        if close_executor is not None:
            await close_executor()
        if self.push_sender is not None:
            await self.push_sender.aclose()
        if isinstance(self.push_store, DatabasePushNotificationConfigStore):
            await self.push_store.engine.dispose()
        if self.takeover is not None:
            await self.takeover.stop()
        if isinstance(self.event_stream, NotifyTaskEventStream):
            await self.event_stream.aclose()
        if isinstance(self.task_store, SqliteTaskStore):
            self.task_store.close()
        store = getattr(self.task_store, "as_task_store", self.task_store)
        engine = getattr(store, "engine", None)
        if engine is not None:
            await engine.dispose()

    async def run_until_signalled(self) -> None:
        """Serves until SIGTERM or SIGINT, then drains."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info("signal received: draining %s", self.replica_id)
        await self.stop()
