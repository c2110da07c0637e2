"""The one outbound A2A client of the mesh (planner, CLI, tests, benchmarks).

It speaks A2A 1.0 through a2a-sdk's own transports (so it stays wire-compatible with any
A2A server), and adds the mesh's policy: replica choice by power-of-two-choices on
outstanding requests, pooled gRPC channels and HTTP connections, a deadline per call that
covers retries, and retry on another replica for failures that cannot have executed
anything (connection refused, UNAVAILABLE, HTTP 503 while draining). ``SendMessage``, the
hot call, takes the lean paths of :mod:`mesh.a2a.fastpath` on gRPC and JSON-RPC (same
bytes on the wire, same errors).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import grpc
import httpx
from a2a.client import ClientCallContext
from a2a.client.errors import A2AClientTimeoutError
from a2a.client.transports import ClientTransport, GrpcTransport, JsonRpcTransport, RestTransport
from a2a.helpers.proto_helpers import new_text_message
from a2a.types import a2a_pb2 as pb
from a2a.utils.constants import PROTOCOL_VERSION_1_0, VERSION_HEADER, TransportProtocol
from google.protobuf.json_format import MessageToDict
from opentelemetry import context as otel_context
from opentelemetry.trace import set_span_in_context

from mesh.a2a.fastpath import GrpcSend, JsonRpcSend
from mesh.a2a.signing import CardTrust, UntrustedCardError
from mesh.a2a.tracing import client_span, finish_client_span
from mesh.config import Settings
from mesh.errors import DeadlineExceededError, NoReplicaError
from mesh.telemetry.propagation import carrier
from mesh.telemetry.setup import STATE
from mesh.tls import TlsFiles

T = TypeVar("T")

GRPC, JSONRPC, REST = (
    TransportProtocol.GRPC.value,
    TransportProtocol.JSONRPC.value,
    TransportProtocol.HTTP_JSON.value,
)
DEFAULT_BINDINGS = (GRPC, JSONRPC, REST)
"""Order of preference inside the mesh: gRPC first."""


@dataclass
class Replica:
    """One reachable replica of an agent, as the client sees it."""

    agent: str
    replica_id: str
    urls: dict[str, str]
    draining: bool = False
    outstanding: int = field(default=0, compare=False)
    card_json: str = field(default="", compare=False, repr=False)
    """The replica's agent card as the registry holds it (checked against the trust bundle)."""


class ReplicaSource(Protocol):
    """Where the client learns an agent's replicas: static endpoints, the registry, DNS."""

    def replicas(self, agent: str) -> list[Replica]: ...


class StaticReplicas:
    """A fixed set of replicas, e.g. from `slmesh up`'s state file or a test."""

    def __init__(self, replicas: Sequence[Replica] = ()) -> None:
        self._by_agent: dict[str, list[Replica]] = {}
        for replica in replicas:
            self.add(replica)

    def add(self, replica: Replica) -> None:
        self._by_agent.setdefault(replica.agent, []).append(replica)

    def replicas(self, agent: str) -> list[Replica]:
        return self._by_agent.get(agent, [])

    @classmethod
    def from_urls(cls, agent: str, http_url: str, grpc_url: str | None = None) -> StaticReplicas:
        """One replica from its base HTTP URL (and gRPC URL, when known)."""
        base = http_url.rstrip("/")
        urls = {JSONRPC: base + "/", REST: base}
        if grpc_url:
            urls[GRPC] = grpc_url
        return cls([Replica(agent=agent, replica_id=base, urls=urls)])


def is_retryable(exc: BaseException) -> bool:
    """True when the request cannot have reached an executor, so another replica may run it."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, grpc.aio.AioRpcError):
            return seen.code() == grpc.StatusCode.UNAVAILABLE
        if isinstance(seen, (httpx.ConnectError, httpx.ConnectTimeout)):
            return True
        if isinstance(seen, httpx.HTTPStatusError):
            return seen.response.status_code == 503
        seen = seen.__cause__
    return False


@dataclass(eq=False)
class _Lane:
    """One replica's pooled a2a-sdk transport for one binding, and its ``SendMessage`` path."""

    binding: str
    transport: ClientTransport
    params: dict[str, str] | None
    send: Callable[[pb.SendMessageRequest, float], Awaitable[pb.SendMessageResponse]]
    fast: JsonRpcSend | None = None
    in_flight: int = 0
    retired: bool = False
    """Dropped after a failure: closed once its last call returns (closing a gRPC channel
    cancels the calls still on it, which would surface as CancelledError, not a retry)."""

    def context(self, timeout: float, trace: dict[str, str] | None = None) -> ClientCallContext:
        """The call's context; with telemetry on, its params carry the trace context too."""
        return ClientCallContext(
            timeout=timeout, service_parameters=_with_trace(self.params, trace)
        )

    async def release(self) -> None:
        self.in_flight -= 1
        if self.retired and self.in_flight == 0:
            await self.close()

    async def close(self) -> None:
        if self.fast is not None:
            self.fast.close()
        if isinstance(self.transport, GrpcTransport):
            await self.transport.close()


def _sdk_send(
    transport: ClientTransport, params: dict[str, str] | None
) -> Callable[[pb.SendMessageRequest, float], Awaitable[pb.SendMessageResponse]]:
    """``SendMessage`` through the a2a-sdk transport itself (bindings without a lean path)."""

    async def send(request: pb.SendMessageRequest, timeout: float) -> pb.SendMessageResponse:
        context = ClientCallContext(timeout=timeout, service_parameters=_with_trace(params))
        return await transport.send_message(request, context=context)

    return send


def _with_trace(
    params: dict[str, str] | None, trace: dict[str, str] | None = None
) -> dict[str, str] | None:
    """``params`` plus the W3C trace headers (``trace``, else the current context's) when
    tracing."""
    if STATE.tracer is None:
        return params
    trace = carrier() if trace is None else trace
    return {**params, **trace} if params else trace or None


_URL_SCHEMES = {"grpc": False, "http": False, "grpcs": True, "https": True}
"""URL schemes a card's gRPC interface may use, and whether each means TLS. Anything else
(``host:port``, grpc's own target names such as ``dns:///host:port``) goes to grpc unchanged."""


def grpc_target(url: str) -> tuple[str, bool]:
    """A card's gRPC interface URL -> (the target grpc dials, whether the URL asks for TLS).

    Cards in the wild say ``host:port`` (the mesh's, a2a-sdk's and the TCK's own), ``grpc://``
    or ``http://host:port``, ``grpcs://`` or ``https://host:port`` (TLS; grpc's default port
    443 when none is given), or a grpc target name such as ``dns:///host:port``.
    """
    scheme, sep, rest = url.partition("://")
    tls = _URL_SCHEMES.get(scheme.lower()) if sep else None
    if tls is None:
        return url, False
    return rest.split("/", 1)[0], tls


SLOW_REPLICA_PENALTY_S = 10.0
"""A replica that let a call pass its deadline is picked only when no other is live, this long."""


class Outstanding:
    """Calls in flight per replica id, as counted by the client (what ``pick`` balances)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def get(self, replica_id: str) -> int:
        """Calls to ``replica_id`` in flight now (0 if none was ever sent)."""
        return self._counts.get(replica_id, 0)

    def add(self, replica_id: str) -> None:
        """A call to ``replica_id`` starts."""
        self._counts[replica_id] = self._counts.get(replica_id, 0) + 1

    def remove(self, replica_id: str) -> None:
        """A call to ``replica_id`` ended (answered, failed or cancelled)."""
        self._counts[replica_id] -= 1


class MeshClient:
    """Typed async A2A client with replica balancing, deadlines and safe retries.

    Use one instance per process (``async with MeshClient(...)``); it owns the pooled
    gRPC channels and the shared ``httpx.AsyncClient``.
    """

    def __init__(
        self,
        source: ReplicaSource,
        settings: Settings | None = None,
        *,
        bindings: Sequence[str] = DEFAULT_BINDINGS,
        max_attempts: int = 3,
        backoff_s: float = 0.05,
        rng: random.Random | None = None,
    ) -> None:
        self.source = source
        self.settings = settings or Settings()
        self.bindings = tuple(bindings)
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self._rng = rng or random.Random()
        self._tls = TlsFiles.from_settings(self.settings)
        self._cards = CardTrust.from_settings(self.settings)
        self._card_verdicts: dict[tuple[str, str], UntrustedCardError | None] = {}
        self._http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            timeout=httpx.Timeout(self.settings.request_timeout_s, connect=5.0),
            verify=self._tls.client_context() if self._tls else True,
        )
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._outstanding = Outstanding()
        self._slow_until: dict[str, float] = {}
        self._task_home: OrderedDict[str, str] = OrderedDict()
        token = self.settings.api_token
        auth = {"authorization": f"Bearer {token.get_secret_value()}"} if token else {}
        # gRPC transports add the A2A-Version metadata themselves; HTTP ones leave it to us.
        self._params = {
            GRPC: auth or None,
            JSONRPC: {VERSION_HEADER: PROTOCOL_VERSION_1_0, **auth},
            REST: {VERSION_HEADER: PROTOCOL_VERSION_1_0, **auth},
        }

    @property
    def outstanding(self) -> Outstanding:
        """Calls in flight per replica, as :meth:`pick` sees them."""
        return self._outstanding

    async def __aenter__(self) -> MeshClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for lane in self._lanes.values():
            await lane.close()
        self._lanes.clear()
        await self._http.aclose()

    # -- replica choice -----------------------------------------------------------

    def pick(
        self, agent: str, exclude: AbstractSet[str] = frozenset(), prefer: str | None = None
    ) -> Replica:
        """Power of two choices on outstanding requests, skipping draining and tried replicas."""
        live = [r for r in self.source.replicas(agent) if not r.draining and self._reachable(r)]
        if live and (self._cards.active or self._cards.require):
            refused = [e for r in live if (e := self._card_refusal(r)) is not None]
            if len(refused) == len(live):
                raise refused[0]
            if refused:
                live = [r for r in live if self._card_refusal(r) is None]
        if not live:
            raise NoReplicaError(agent)
        candidates = [r for r in live if r.replica_id not in exclude] or live
        if self._slow_until:
            # A retry after a missed deadline goes to another replica when there is one.
            now = time.monotonic()
            candidates = [
                r for r in candidates if self._slow_until.get(r.replica_id, 0.0) <= now
            ] or candidates
        if prefer is not None:
            for replica in candidates:
                if replica.replica_id == prefer:
                    return replica
        if len(candidates) == 1:
            return candidates[0]
        a, b = self._rng.sample(candidates, 2)
        load = self._outstanding
        return a if load.get(a.replica_id) <= load.get(b.replica_id) else b

    def _card_refusal(self, replica: Replica) -> UntrustedCardError | None:
        """Why the replica's card is not trusted (None when it is); remembered per card."""
        key = (replica.replica_id, replica.card_json)
        if key not in self._card_verdicts:
            if len(self._card_verdicts) > 4096:
                self._card_verdicts.clear()
            try:
                self._cards.check_json(replica.agent, replica.card_json)
                self._card_verdicts[key] = None
            except UntrustedCardError as exc:
                self._card_verdicts[key] = exc
        return self._card_verdicts[key]

    def _reachable(self, replica: Replica) -> bool:
        return any(b in replica.urls for b in self.bindings)

    def _lane(self, replica: Replica) -> _Lane:
        """The pooled lane for the replica's preferred binding (built on first use)."""
        binding = next(b for b in self.bindings if b in replica.urls)
        key = (replica.replica_id, binding)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = self._open(replica, binding)
        return lane

    def _open(self, replica: Replica, binding: str) -> _Lane:
        url = replica.urls[binding]
        card = _interface_card(replica.agent, binding, url)
        params = self._params[binding]
        if binding == GRPC:
            options = [
                ("grpc.max_receive_message_length", self.settings.max_request_bytes),
                ("grpc.max_send_message_length", self.settings.max_request_bytes),
            ]
            target, tls_url = grpc_target(url)
            if self._tls or tls_url:
                # A grpcs:// card without the mesh's TLS settings: verified against system roots.
                credentials = (
                    self._tls.grpc_channel_credentials()
                    if self._tls
                    else grpc.ssl_channel_credentials()
                )
                channel = grpc.aio.secure_channel(target, credentials, options=options)
            else:
                channel = grpc.aio.insecure_channel(target, options=options)
            grpc_transport = GrpcTransport(channel, card)
            return _Lane(binding, grpc_transport, params, GrpcSend(grpc_transport, params))
        if binding == JSONRPC:
            jsonrpc = JsonRpcTransport(self._http, card, url, is_shared_httpx=True)
            if url.startswith("http://"):
                fast = JsonRpcSend(jsonrpc, url, params or {}, connect_timeout=5.0)
                return _Lane(binding, jsonrpc, params, fast, fast)
            return _Lane(binding, jsonrpc, params, _sdk_send(jsonrpc, params))
        rest = RestTransport(self._http, card, url, is_shared_httpx=True)
        return _Lane(binding, rest, params, _sdk_send(rest, params))

    @staticmethod
    def _remaining(deadline: float) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceededError("deadline exceeded before the call could be sent")
        return remaining

    async def _forget(self, replica: Replica) -> None:
        for binding in self.bindings:
            lane = self._lanes.pop((replica.replica_id, binding), None)
            if lane is not None and not lane.retired:
                lane.retired = True
                if lane.in_flight == 0:
                    await lane.close()

    def _remember(self, task_id: str, replica_id: str) -> None:
        self._task_home[task_id] = replica_id
        self._task_home.move_to_end(task_id)
        if len(self._task_home) > 10_000:
            self._task_home.popitem(last=False)

    # -- calls ------------------------------------------------------------------------

    async def _unary(
        self,
        method: str,
        agent: str,
        call: Callable[[_Lane, float], Awaitable[T]],
        timeout: float | None,
        task_id: str | None = None,
    ) -> tuple[T, Replica]:
        """One call, inside a CLIENT span (current, so every attempt injects its context)."""
        span = client_span(method, agent)
        if span is None:
            return await self._attempts(agent, call, timeout, task_id)
        started = time.perf_counter()
        token = otel_context.attach(set_span_in_context(span))
        try:
            result, replica = await self._attempts(agent, call, timeout, task_id)
        except BaseException as exc:
            finish_client_span(span, error=exc, started=started)
            raise
        finally:
            otel_context.detach(token)
        task = (
            result.task
            if isinstance(result, pb.SendMessageResponse) and result.HasField("task")
            else result
        )
        finish_client_span(
            span,
            replica=replica,
            binding=self._binding(replica),
            task=task if isinstance(task, pb.Task) else None,
            started=started,
        )
        return result, replica

    def _binding(self, replica: Replica) -> str | None:
        return next((b for b in self.bindings if b in replica.urls), None)

    async def _attempts(
        self,
        agent: str,
        call: Callable[[_Lane, float], Awaitable[T]],
        timeout: float | None,
        task_id: str | None = None,
    ) -> tuple[T, Replica]:
        deadline = time.monotonic() + (timeout or self.settings.request_timeout_s)
        tried: set[str] = set()
        prefer = self._task_home.get(task_id) if task_id else None
        for attempt in range(self.max_attempts):
            replica = self.pick(agent, tried, prefer)
            prefer = None
            tried.add(replica.replica_id)
            rid = replica.replica_id
            self._outstanding.add(rid)
            lane = self._lane(replica)
            lane.in_flight += 1
            try:
                return await call(lane, self._remaining(deadline)), replica
            except A2AClientTimeoutError as exc:
                self._slow_until[rid] = time.monotonic() + SLOW_REPLICA_PENALTY_S
                raise DeadlineExceededError(f"call to {agent!r} exceeded its deadline") from exc
            except Exception as exc:
                if not is_retryable(exc) or attempt == self.max_attempts - 1:
                    if is_retryable(exc):
                        raise NoReplicaError(
                            agent, f"{len(tried)} replica(s) unavailable: {exc}"
                        ) from exc
                    raise
                await self._forget(replica)
            finally:
                self._outstanding.remove(rid)
                await lane.release()
            await asyncio.sleep(
                min(self.backoff_s * 2**attempt, max(0.0, deadline - time.monotonic()))
            )
        raise NoReplicaError(agent)  # pragma: no cover - loop always returns or raises

    async def send_message(
        self, agent: str, request: pb.SendMessageRequest, *, timeout: float | None = None
    ) -> pb.SendMessageResponse:
        """``SendMessage``; returns the task (or message) the agent answered with."""
        response, replica = await self._unary(
            "SendMessage", agent, lambda lane, left: lane.send(request, left), timeout
        )
        if response.HasField("task"):
            self._remember(response.task.id, replica.replica_id)
        return response

    async def send_text(
        self, agent: str, text: str, *, timeout: float | None = None
    ) -> pb.SendMessageResponse:
        """Convenience: one user text message."""
        return await self.send_message(
            agent, pb.SendMessageRequest(message=new_text_message(text)), timeout=timeout
        )

    async def get_task(
        self,
        agent: str,
        task_id: str,
        *,
        history_length: int | None = None,
        timeout: float | None = None,
    ) -> pb.Task:
        request = pb.GetTaskRequest(id=task_id)
        if history_length is not None:
            request.history_length = history_length
        task, _ = await self._unary(
            "GetTask",
            agent,
            lambda lane, left: lane.transport.get_task(request, context=lane.context(left)),
            timeout,
            task_id,
        )
        return task

    async def list_tasks(
        self,
        agent: str,
        request: pb.ListTasksRequest | None = None,
        *,
        timeout: float | None = None,
    ) -> pb.ListTasksResponse:
        req = request or pb.ListTasksRequest()
        response, _ = await self._unary(
            "ListTasks",
            agent,
            lambda lane, left: lane.transport.list_tasks(req, context=lane.context(left)),
            timeout,
        )
        return response

    async def cancel_task(
        self, agent: str, task_id: str, *, timeout: float | None = None
    ) -> pb.Task:
        req = pb.CancelTaskRequest(id=task_id)
        task, _ = await self._unary(
            "CancelTask",
            agent,
            lambda lane, left: lane.transport.cancel_task(req, context=lane.context(left)),
            timeout,
            task_id,
        )
        return task

    async def send_streaming_message(
        self, agent: str, request: pb.SendMessageRequest, *, timeout: float | None = None
    ) -> AsyncIterator[pb.StreamResponse]:
        """``SendStreamingMessage``; retried on another replica only before the first event."""
        async for event in self._stream(
            "SendStreamingMessage",
            agent,
            lambda lane, left, trace: lane.transport.send_message_streaming(
                request, context=lane.context(left, trace)
            ),
            timeout,
            None,
        ):
            yield event

    async def subscribe(
        self, agent: str, task_id: str, *, timeout: float | None = None
    ) -> AsyncIterator[pb.StreamResponse]:
        """``SubscribeToTask``: the remaining events of a running task."""
        req = pb.SubscribeToTaskRequest(id=task_id)
        async for event in self._stream(
            "SubscribeToTask",
            agent,
            lambda lane, left, trace: lane.transport.subscribe(
                req, context=lane.context(left, trace)
            ),
            timeout,
            task_id,
        ):
            yield event

    async def _stream(
        self,
        method: str,
        agent: str,
        call: Callable[[_Lane, float, dict[str, str] | None], AsyncIterator[pb.StreamResponse]],
        timeout: float | None,
        task_id: str | None,
    ) -> AsyncIterator[pb.StreamResponse]:
        """A stream inside a CLIENT span that is never made current (a generator's context
        is its consumer's); its context goes out explicitly with each attempt."""
        span = client_span(method, agent)
        where: list[Replica] = []
        if span is None:  # telemetry off: nothing to note
            async for event in self._stream_attempts(agent, call, timeout, task_id, None, where):
                yield event
            return
        trace = carrier(set_span_in_context(span))
        started = time.perf_counter()
        task: pb.Task | None = None
        try:
            async for event in self._stream_attempts(agent, call, timeout, task_id, trace, where):
                if event.HasField("task"):
                    task = pb.Task()  # a copy: the event itself belongs to the caller
                    task.CopyFrom(event.task)
                elif event.HasField("status_update") and task is not None:
                    task.status.state = event.status_update.status.state
                yield event
        except BaseException as exc:
            if not isinstance(exc, GeneratorExit):
                finish_client_span(span, error=exc, started=started)
                span = None
            raise
        finally:
            replica = where[-1] if where else None
            finish_client_span(
                span,
                replica=replica,
                task=task,
                started=started,
                binding=self._binding(replica) if replica else None,
            )

    async def _stream_attempts(
        self,
        agent: str,
        call: Callable[[_Lane, float, dict[str, str] | None], AsyncIterator[pb.StreamResponse]],
        timeout: float | None,
        task_id: str | None,
        trace: dict[str, str] | None,
        where: list[Replica],
    ) -> AsyncIterator[pb.StreamResponse]:
        deadline = time.monotonic() + (timeout or self.settings.request_timeout_s)
        tried: set[str] = set()
        prefer = self._task_home.get(task_id) if task_id else None
        for attempt in range(self.max_attempts):
            replica = self.pick(agent, tried, prefer)
            prefer = None
            tried.add(replica.replica_id)
            rid = replica.replica_id
            self._outstanding.add(rid)
            started = False
            lane = self._lane(replica)
            lane.in_flight += 1
            where.append(replica)
            try:
                async for event in call(lane, self._remaining(deadline), trace):
                    if not started and event.HasField("task"):
                        self._remember(event.task.id, rid)
                    started = True
                    yield event
                return
            except A2AClientTimeoutError as exc:
                self._slow_until[rid] = time.monotonic() + SLOW_REPLICA_PENALTY_S
                raise DeadlineExceededError(f"stream from {agent!r} exceeded its deadline") from exc
            except Exception as exc:
                if started or not is_retryable(exc) or attempt == self.max_attempts - 1:
                    if is_retryable(exc) and not started:
                        raise NoReplicaError(
                            agent, f"{len(tried)} replica(s) unavailable: {exc}"
                        ) from exc
                    raise
                await self._forget(replica)
            finally:
                self._outstanding.remove(rid)
                await lane.release()
            await asyncio.sleep(self.backoff_s * 2**attempt)


def _interface_card(agent: str, binding: str, url: str) -> pb.AgentCard:
    """The minimal card a2a-sdk transports need: just the interface being dialled."""
    return pb.AgentCard(
        name=agent,
        supported_interfaces=[
            pb.AgentInterface(url=url, protocol_binding=binding, protocol_version="1.0")
        ],
        capabilities=pb.AgentCapabilities(streaming=True),
    )


def text_of(response: pb.SendMessageResponse | pb.Task) -> str:
    """All text parts of a task's artifacts (or a direct message), joined by newlines."""
    task = (
        response.task
        if isinstance(response, pb.SendMessageResponse) and response.HasField("task")
        else response
    )
    if isinstance(task, pb.Task):
        return "\n".join(p.text for a in task.artifacts for p in a.parts if p.HasField("text"))
    assert isinstance(response, pb.SendMessageResponse)
    return "\n".join(p.text for p in response.message.parts if p.HasField("text"))


def restore_ints(value: Any) -> Any:
    """JSON from a protobuf ``Value`` with whole numbers as ints (``Value`` stores doubles)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: restore_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [restore_ints(v) for v in value]
    return value


def parts_value(parts: Sequence[pb.Part]) -> Any:
    """The value an artifact or message carries: JSON text (keeps key order, which protobuf
    Structs lose) first, else the first data part, else the text parts joined."""
    for part in parts:
        if part.HasField("text") and part.media_type == "application/json":
            try:
                return json.loads(part.text)
            except json.JSONDecodeError:
                break
    for part in parts:
        if part.HasField("data"):
            return restore_ints(MessageToDict(part.data))
    return "\n".join(p.text for p in parts if p.HasField("text"))
