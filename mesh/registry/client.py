"""Async client of the registry: one pooled channel, a deadline on every unary call.

Several registry replicas (sharing their state in PostgreSQL) are given as one address list,
``host1:port1,host2:port2``: the client talks to one at a time and moves to the next when
the one it talks to is unreachable, so a registry replica going down costs a call a retry,
not an error. RPC failures surface as :class:`grpc.aio.AioRpcError`; the long-lived helpers
(:class:`~mesh.registry.registration.Registration`, :class:`~mesh.registry.view.RegistryView`)
turn them into retries.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import AsyncGenerator
from types import TracebackType
from typing import Any

import grpc
from google.protobuf.message import Message

from mesh.config import Settings, registry_credential
from mesh.proto.slmesh.registry.v1 import registry_pb2 as pb
from mesh.proto.slmesh.registry.v1 import registry_pb2_grpc as pb_grpc
from mesh.tls import TlsFiles
from mesh.trust import PROOF_HEADER, SigningKey, load_signing_keys, make_proof

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
"""Deadline of each unary call: registry calls are tiny, so a slow one means trouble."""

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class RegistryClient:
    """Talks to the registry at ``address`` (``host:port``, or several, comma-separated).

    The channel is opened on first use, so the client may be built outside an event loop,
    and reconnects by itself with a short capped backoff. Calls fail fast with UNAVAILABLE
    while the registry is down, so long-lived callers can retry on their own terms;
    ``wait_for_ready=True`` makes one-shot callers (tools, tests) wait for the registry up to
    each call's deadline instead. ``token`` goes out as ``authorization: Bearer`` on every
    call: the registry needs it to register, heartbeat or deregister (and to list or watch
    when the mesh has an API token). ``tls`` makes the channel TLS (mutual with a client
    certificate). ``identity`` (a signing key and the agent it speaks for) adds a registration
    proof (:func:`mesh.trust.make_proof`) to every write, for registries that bind writes to
    agent names (``SLMESH_REGISTRATION_IDENTITY=agent``).
    """

    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        reconnect_backoff_max_s: float = 2.0,
        wait_for_ready: bool = False,
        token: str | None = None,
        tls: TlsFiles | None = None,
        identity: tuple[SigningKey, str] | None = None,
    ) -> None:
        addresses = [a.strip() for a in address.split(",") if a.strip()]
        if not addresses:
            raise ValueError("registry address is required (host:port)")
        self._addresses = addresses
        self._current = 0
        self._timeout_s = timeout_s
        self._wait_for_ready = wait_for_ready
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._tls = tls
        self._identity = identity
        self._options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", round(reconnect_backoff_max_s * 1000)),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.max_pings_without_data", 0),
        ]
        self._channels: dict[str, grpc.aio.Channel] = {}
        """One channel per address, opened on first use and kept: closing one would cancel
        the calls still on it (a heartbeat beside a failing watch), and a kept channel to a
        dead registry only reconnects in the background."""
        self._stubs: dict[str, pb_grpc.RegistryStub] = {}
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings, agent: str | None = None) -> RegistryClient:
        """A client of ``settings.registry``, with the mesh's message size limit and token; for
        an ``agent`` with signing keys, its writes carry proofs signed with the first key."""
        if not settings.registry:
            raise ValueError("settings.registry is not set (SLMESH_REGISTRY=host:port)")
        keys = load_signing_keys(settings.signing_key_files()) if agent else []
        return cls(
            settings.registry,
            max_message_bytes=settings.max_request_bytes,
            token=registry_credential(settings),
            tls=TlsFiles.from_settings(settings),
            identity=(keys[0], agent) if keys and agent else None,
        )

    @property
    def address(self) -> str:
        """The registry address calls go to now."""
        return self._addresses[self._current]

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(self._addresses)

    def _stub(self) -> pb_grpc.RegistryStub:
        if self._closed:
            raise RuntimeError(f"registry client for {','.join(self._addresses)} is closed")
        address = self.address
        stub = self._stubs.get(address)
        if stub is None:
            channel = (
                grpc.aio.secure_channel(
                    address, self._tls.grpc_channel_credentials(), options=self._options
                )
                if self._tls
                else grpc.aio.insecure_channel(address, options=self._options)
            )
            self._channels[address] = channel
            stub = self._stubs[address] = pb_grpc.RegistryStub(channel)
        return stub

    def _fail_over(self, failed: int) -> bool:
        """Moves on from address ``failed`` (unless a concurrent call already did); False when
        there is no other address."""
        if len(self._addresses) == 1:
            return False
        if self._current == failed:
            self._current = (failed + 1) % len(self._addresses)
            log.info("registry %s unreachable; trying %s", self._addresses[failed], self.address)
        return True

    async def _unary(self, method: str, request: Message, options: dict[str, Any]) -> Any:
        """One unary call; UNAVAILABLE moves to the next address and tries it (each address
        once), DEADLINE_EXCEEDED moves on for the next call (this one's time is spent)."""
        for _ in range(len(self._addresses)):
            used = self._current
            try:
                return await getattr(self._stub(), method)(request, **options)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    self._fail_over(used)
                    raise
                if exc.code() != grpc.StatusCode.UNAVAILABLE or not self._fail_over(used):
                    raise
                last = exc
        raise last

    def _call_options(
        self, timeout_s: float | None, write: tuple[str, str, Message] | None = None
    ) -> dict[str, Any]:
        """Per-call options; ``write`` (op, replica id, request) adds the registration proof."""
        timeout = self._timeout_s if timeout_s is None else timeout_s
        metadata = self._metadata
        if write is not None and self._identity is not None:
            key, agent = self._identity
            op, replica, request = write
            proof = make_proof(
                key,
                agent=agent,
                replica=replica,
                op=op,
                body=request.SerializeToString(deterministic=True),
            )
            metadata = (*(metadata or ()), (PROOF_HEADER, proof))
        return {"timeout": timeout, "wait_for_ready": self._wait_for_ready, "metadata": metadata}

    async def register(
        self, replica: pb.Replica, *, timeout_s: float | None = None
    ) -> pb.RegisterResponse:
        """Announces ``replica``; the answer says how often to heartbeat."""
        request = pb.RegisterRequest(replica=replica)
        response: pb.RegisterResponse = await self._unary(
            "Register",
            request,
            self._call_options(timeout_s, ("Register", replica.replica_id, request)),
        )
        return response

    async def heartbeat(
        self,
        replica_id: str,
        load: pb.Load | None = None,
        draining: bool = False,
        *,
        timeout_s: float | None = None,
    ) -> bool:
        """Keeps a replica alive; False means the registry forgot it and it must register."""
        request = pb.HeartbeatRequest(replica_id=replica_id, load=load, draining=draining)
        response: pb.HeartbeatResponse = await self._unary(
            "Heartbeat", request, self._call_options(timeout_s, ("Heartbeat", replica_id, request))
        )
        return response.known

    async def deregister(self, replica_id: str, *, timeout_s: float | None = None) -> bool:
        """Removes a replica; False when the registry did not know it."""
        request = pb.DeregisterRequest(replica_id=replica_id)
        response: pb.DeregisterResponse = await self._unary(
            "Deregister",
            request,
            self._call_options(timeout_s, ("Deregister", replica_id, request)),
        )
        return response.removed

    async def list(
        self, agent: str = "", skill: str = "", *, timeout_s: float | None = None
    ) -> builtins.list[pb.Replica]:
        """Live replicas, optionally only those of ``agent`` and/or offering ``skill``."""
        response: pb.ListResponse = await self._unary(
            "List", pb.ListRequest(agent=agent, skill=skill), self._call_options(timeout_s)
        )
        return builtins.list(response.replicas)

    async def watch(
        self, agent: str = "", since_revision: int = 0
    ) -> AsyncGenerator[pb.WatchEvent, None]:
        """Snapshot (ADDED..., SYNCED), then changes, until the stream fails or is closed;
        with ``since_revision``, the changes after it, SYNCED, then changes.

        The stream has no deadline. Close it with ``aclose()`` (e.g. via
        :func:`contextlib.aclosing`) to cancel the call promptly. A stream that fails
        UNAVAILABLE moves the client to the next registry address for the next watch.
        """
        used = self._current
        call = self._stub().Watch(
            pb.WatchRequest(agent=agent, since_revision=since_revision), metadata=self._metadata
        )
        try:
            async for event in call:
                yield event
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                self._fail_over(used)
            raise
        finally:
            call.cancel()

    async def close(self) -> None:
        """Closes the channel; the client cannot be used afterwards."""
        self._closed = True
        channels, self._channels, self._stubs = self._channels, {}, {}
        for channel in channels.values():
            await channel.close()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
