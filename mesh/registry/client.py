"""Async client of the registry: one pooled channel, a deadline on every unary call.

RPC failures surface as :class:`grpc.aio.AioRpcError`; the long-lived helpers
(:class:`~mesh.registry.registration.Registration`, :class:`~mesh.registry.view.RegistryView`)
turn them into retries.
"""

from __future__ import annotations

import builtins
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

DEFAULT_TIMEOUT_S = 5.0
"""Deadline of each unary call: registry calls are tiny, so a slow one means trouble."""

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class RegistryClient:
    """Talks to the registry at ``address`` (``host:port``).

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
        if not address:
            raise ValueError("registry address is required (host:port)")
        self._address = address
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
        self._channel: grpc.aio.Channel | None = None
        self._stub_: pb_grpc.RegistryStub | None = None
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
        return self._address

    def _stub(self) -> pb_grpc.RegistryStub:
        if self._closed:
            raise RuntimeError(f"registry client for {self._address} is closed")
        if self._stub_ is None:
            self._channel = (
                grpc.aio.secure_channel(
                    self._address, self._tls.grpc_channel_credentials(), options=self._options
                )
                if self._tls
                else grpc.aio.insecure_channel(self._address, options=self._options)
            )
            self._stub_ = pb_grpc.RegistryStub(self._channel)
        return self._stub_

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
        response: pb.RegisterResponse = await self._stub().Register(
            request, **self._call_options(timeout_s, ("Register", replica.replica_id, request))
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
        response: pb.HeartbeatResponse = await self._stub().Heartbeat(
            request, **self._call_options(timeout_s, ("Heartbeat", replica_id, request))
        )
        return response.known

    async def deregister(self, replica_id: str, *, timeout_s: float | None = None) -> bool:
        """Removes a replica; False when the registry did not know it."""
        request = pb.DeregisterRequest(replica_id=replica_id)
        response: pb.DeregisterResponse = await self._stub().Deregister(
            request, **self._call_options(timeout_s, ("Deregister", replica_id, request))
        )
        return response.removed

    async def list(
        self, agent: str = "", skill: str = "", *, timeout_s: float | None = None
    ) -> builtins.list[pb.Replica]:
        """Live replicas, optionally only those of ``agent`` and/or offering ``skill``."""
        response: pb.ListResponse = await self._stub().List(
            pb.ListRequest(agent=agent, skill=skill), **self._call_options(timeout_s)
        )
        return builtins.list(response.replicas)

    async def watch(self, agent: str = "") -> AsyncGenerator[pb.WatchEvent, None]:
        """Snapshot (ADDED..., SYNCED), then changes, until the stream fails or is closed.

        The stream has no deadline. Close it with ``aclose()`` (e.g. via
        :func:`contextlib.aclosing`) to cancel the call promptly.
        """
        call = self._stub().Watch(pb.WatchRequest(agent=agent), metadata=self._metadata)
        try:
            async for event in call:
                yield event
        finally:
            call.cancel()

    async def close(self) -> None:
        """Closes the channel; the client cannot be used afterwards."""
        self._closed = True
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub_ = None

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
