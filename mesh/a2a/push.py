"""Push notifications that cannot be turned into SSRF, delivered with retries and signed.

a2a-sdk 1.3.0 stores push configs and hands every task event to a ``PushNotificationSender``;
its ``BasePushNotificationSender`` posts once, inline, to whatever address the URL resolves to
when it posts. :class:`PushSender` closes what that leaves open:

- :class:`PushPolicy` is the SSRF guard: HTTPS only, no user info, a bounded length, and every
  address the host resolves to must be public unicast (no loopback, link-local, private,
  shared, metadata, multicast, reserved; IPv4-mapped IPv6 judged as IPv4) unless the
  allow-list (``SLMESH_PUSH_ALLOW``) names it; plain http only with ``SLMESH_PUSH_ALLOW_HTTP``
  and only to addresses the allow-list names. It runs when a config is set (the SDK's
  ``push_url_validator``; a name that does not resolve yet passes there) and again at each
  delivery.
- The connection goes to the address that was validated (the request names the IP; TLS still
  verifies the certificate for the host name through SNI), so a second DNS answer cannot
  rebind it; redirects are not followed; connections are not pooled across host names.
- Delivery runs off the task's path, each (task, config) in order, a timeout per try,
  retries with exponential backoff on connection errors, timeouts, 429 and 5xx; other answers
  end it. Every event has one idempotency id (``Idempotency-Key``) kept across retries
  (at-least-once: receivers drop repeats).
- Delivery is durable where the task store has an outbox (:mod:`mesh.a2a.outbox`: the default
  SQLite store, and SQLAlchemy stores with the event log): the notification was committed with
  the task event, any replica delivers it, and one killed mid-delivery leaves it to the next.
- Receivers can check the sender: the config's token and authentication go out as the spec
  says, and with signing keys each notification carries ``X-Slmesh-Signature``, a compact JWS
  (the agent's key, published at ``/.well-known/jwks.json``) over the body's SHA-256, the
  idempotency id and the task id.

Elsewhere (the memory store, an SQLAlchemy store without the event log) notifications queue in
this process and die with it (see docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import socket
import ssl
import time
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from a2a.server.tasks import PushNotificationConfigStore
from a2a.server.tasks.push_notification_sender import (
    PushNotificationEvent,
    PushNotificationSender,
)
from a2a.types.a2a_pb2 import StreamResponse, TaskPushNotificationConfig
from a2a.utils.proto_utils import to_stream_response
from google.protobuf.json_format import MessageToDict

from mesh.a2a.outbox import Outbox, OutboxRow
from mesh.config import Settings
from mesh.trust import SigningKey

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
"""Longest push URL accepted."""

SIGNATURE_HEADER = "X-Slmesh-Signature"
"""Header carrying the notification's JWS (``typ`` :data:`SIGNATURE_TYPE`)."""

SIGNATURE_TYPE = "slmesh-push+jwt"
IDEMPOTENCY_HEADER = "Idempotency-Key"
TOKEN_HEADER = "X-A2A-Notification-Token"

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PushUrlError(ValueError):
    """A push URL the guard refuses; the message says why."""


class UnresolvedHostError(PushUrlError):
    """The push URL's host name does not resolve (now)."""


@dataclass(frozen=True)
class Target:
    """A validated push URL and the address the delivery connects to."""

    url: str
    host: str
    port: int
    address: IpAddress
    path: str
    scheme: str = "https"

    @property
    def pinned_url(self) -> str:
        """The URL with the validated address in place of the host name."""
        ip = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{self.scheme}://{ip}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _blocked(address: IpAddress) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return (
        not address.is_global
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address.is_private
    )


class PushPolicy:
    """The SSRF guard of push URLs (see the module docstring)."""

    def __init__(self, allow: Sequence[IpNetwork] = (), *, allow_http: bool = False) -> None:
        self.allow = tuple(allow)
        self.allow_http = allow_http

    @classmethod
    def from_settings(cls, settings: Settings) -> PushPolicy:
        return cls(parse_allow_list(settings.push_allow), allow_http=settings.push_allow_http)

    def _listed(self, address: IpAddress) -> bool:
        return any(address in net for net in self.allow if net.version == address.version)

    def _allowed(self, address: IpAddress) -> bool:
        return self._listed(address) or not _blocked(address)

    async def resolve(self, url: str) -> Target:
        """The target of ``url`` if every address it resolves to is allowed; else
        :class:`PushUrlError`."""
        if len(url) > MAX_URL_LENGTH:
            raise PushUrlError(f"push URL longer than {MAX_URL_LENGTH} characters")
        try:
            parts = urlsplit(url)
            port = parts.port or (80 if parts.scheme == "http" else 443)
        except ValueError as exc:
            raise PushUrlError(f"malformed push URL: {exc}") from exc
        plain = parts.scheme == "http" and self.allow_http
        if parts.scheme != "https" and not plain:
            raise PushUrlError(f"push URL must use https, not {parts.scheme or 'nothing'!r}")
        if parts.username is not None or parts.password is not None:
            raise PushUrlError("push URL may not carry user info")
        host = parts.hostname
        if not host:
            raise PushUrlError("push URL has no host")
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except (OSError, UnicodeError) as exc:
            raise UnresolvedHostError(f"push host {host!r} does not resolve") from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        refused = [a for a in addresses if not self._allowed(a)]
        if refused or not addresses:
            raise PushUrlError(
                f"push host {host!r} resolves to a non-public address "
                f"({refused[0] if refused else 'none'}); allow it with SLMESH_PUSH_ALLOW"
            )
        if plain and not all(self._listed(a) for a in addresses):
            raise PushUrlError(
                f"plain http push URLs may only reach addresses SLMESH_PUSH_ALLOW names, "
                f"not {host!r}"
            )
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return Target(
            url=url, host=host, port=port, address=addresses[0], path=path, scheme=parts.scheme
        )

    async def accepts(self, url: str) -> bool:
        """a2a-sdk's ``push_url_validator``: a refused URL is logged and answered as invalid
        params. A host name that does not resolve now is accepted (DNS down, a receiver not
        deployed yet): every delivery resolves and checks it again, and the connection goes
        only to an address that passed."""
        try:
            await self.resolve(url)
        except UnresolvedHostError as exc:
            log.info("push URL %.200s accepted unchecked for now: %s", url, exc)
        except PushUrlError as exc:
            log.warning("refused push URL %.200s: %s", url, exc)
            return False
        return True


def parse_allow_list(value: str) -> list[IpNetwork]:
    """``SLMESH_PUSH_ALLOW``: comma-separated addresses or CIDR networks."""
    networks = []
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"SLMESH_PUSH_ALLOW: {item!r} is not an address or network") from exc
    return networks


@dataclass(frozen=True)
class Delivery:
    """One notification to one config: the same id and body on every try."""

    task_id: str
    config: TaskPushNotificationConfig
    body: bytes
    idempotency_id: str


class _Retry(Exception):
    """A try failed in a way another try may fix."""


class PushSender(PushNotificationSender):
    """Delivers each event to the task's configs off the task's path: from the outbox when
    there is one, else from one in-process queue per (task, config)."""

    def __init__(
        self,
        config_store: PushNotificationConfigStore,
        policy: PushPolicy,
        *,
        keys: Sequence[SigningKey] = (),
        timeout_s: float = 10.0,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        ca_file: Path | None = None,
        outbox: Outbox | None = None,
        replica_id: str = "",
        poll_s: float = 1.0,
        max_in_flight: int = 32,
    ) -> None:
        self._store = config_store
        self.policy = policy
        self._key = keys[0] if keys else None
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._http = httpx.AsyncClient(
            verify=context,
            follow_redirects=False,
            timeout=httpx.Timeout(timeout_s),
            # A pooled connection was verified for one host name; another name on the same
            # address must not reuse it.
            limits=httpx.Limits(max_keepalive_connections=0),
            trust_env=False,
        )
        self._queues: dict[tuple[str, str], asyncio.Queue[Delivery]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self.outbox = outbox
        self._replica = replica_id or uuid.uuid4().hex
        self._poll_s = poll_s
        self._max_in_flight = max_in_flight
        # A try is bounded by the timeout; the lease outlives it so that only a dead (or
        # stalled) holder loses a row.
        self.lease_s = 2 * timeout_s + 1
        self._wake = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._closing = False
        self.delivered = 0
        self.failed = 0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: PushNotificationConfigStore,
        keys: Sequence[SigningKey],
        *,
        outbox: Outbox | None = None,
        replica_id: str = "",
    ) -> PushSender:
        return cls(
            store,
            PushPolicy.from_settings(settings),
            keys=keys,
            timeout_s=settings.push_timeout_s,
            max_attempts=settings.push_max_attempts,
            backoff_s=settings.push_backoff_s,
            ca_file=settings.push_ca_file,
            outbox=outbox,
            replica_id=replica_id,
            poll_s=settings.push_poll_s,
        )

    async def start(self) -> None:
        """Installs the outbox and starts delivering from it (rows other replicas left too)."""
        if self.outbox is None or self._pump is not None:
            return
        await self.outbox.install()
        self._pump = asyncio.get_running_loop().create_task(self._pump_outbox())

    async def send_notification(self, task_id: str, event: PushNotificationEvent) -> None:
        if self.outbox is not None:
            self._wake.set()  # its rows were committed with the event: deliver them now
            return
        try:
            configs = await self._store.get_info_for_dispatch(task_id)
        except Exception:  # the store failing must not fail the task (the SDK's contract)
            log.exception("push configs of task %s unreadable; nothing sent", task_id)
            return
        if not configs:
            return
        body = json.dumps(MessageToDict(to_stream_response(event)), separators=(",", ":"))
        event_key = uuid.uuid4().hex  # one per event, as the outbox's
        for config in configs:
            self._enqueue(Delivery(task_id, config, body.encode(), event_key))

    # -- in-process queues (no outbox) ------------------------------------------------

    def _enqueue(self, delivery: Delivery) -> None:
        key = (delivery.task_id, delivery.config.id or delivery.config.url)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
            self._spawn(self._drain(key, queue))
        queue.put_nowait(delivery)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        worker = asyncio.get_running_loop().create_task(work)
        self._workers.add(worker)
        worker.add_done_callback(self._worker_done)

    def _worker_done(self, worker: asyncio.Task[None]) -> None:
        self._workers.discard(worker)
        self._wake.set()  # a slot is free

    async def _drain(self, key: tuple[str, str], queue: asyncio.Queue[Delivery]) -> None:
        """Delivers one config's notifications in order, then ends when none is left."""
        while not queue.empty():
            delivery = queue.get_nowait()
            if await self.deliver(delivery):
                self.delivered += 1
            else:
                self.failed += 1
        del self._queues[key]

    async def deliver(self, delivery: Delivery) -> bool:
        """Tries one notification until it lands, is refused for good, or attempts run out."""
        for attempt in range(self._max_attempts):
            error = await self._attempt(delivery)
            if error is None:
                return True
            if not isinstance(error, _Retry) or attempt + 1 == self._max_attempts:
                self._log_failure(delivery, error)
                return False
            await asyncio.sleep(self._backoff(attempt))
        return False

    # -- the outbox ---------------------------------------------------------------

    async def _pump_outbox(self) -> None:
        """Claims due rows while there is room, delivers each in its own task, and sleeps until
        woken (an event committed, a slot freed, a retry due) or the poll interval ends."""
        assert self.outbox is not None
        while not self._closing:
            self._wake.clear()
            room = self._max_in_flight - len(self._workers)
            rows: list[OutboxRow] = []
            if room > 0:
                try:
                    rows = await self.outbox.claim(self._replica, self.lease_s, room)
                except Exception:  # the database away: the rows wait, delivery goes on later
                    log.exception("push outbox unreadable; trying again in %.1f s", self._poll_s)
            for row in rows:
                self._spawn(self._deliver_row(row))
            if rows and len(rows) == room:
                continue  # more may be due
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_s)

    async def _deliver_row(self, row: OutboxRow) -> None:
        assert self.outbox is not None
        try:
            config = next(
                (
                    c
                    for c in await self._store.get_info_for_dispatch(row.task_id)
                    if c.id == row.config_id
                ),
                None,
            )
            if config is None:
                log.info(
                    "push %s for task %s dropped: config %s was deleted",
                    row.event_key,
                    row.task_id,
                    row.config_id,
                )
                await self.outbox.done(row, self._replica)
                return
            body = MessageToDict(StreamResponse.FromString(row.event))
            delivery = Delivery(
                row.task_id,
                config,
                json.dumps(body, separators=(",", ":")).encode(),
                row.event_key,
            )
            error = await self._attempt(delivery)
            if error is None:
                self.delivered += 1
                await self.outbox.done(row, self._replica)
            elif isinstance(error, _Retry) and row.attempts + 1 < self._max_attempts:
                delay = self._backoff(row.attempts)
                await self.outbox.retry(row, self._replica, delay)
                asyncio.get_running_loop().call_later(delay, self._wake.set)
            else:
                self.failed += 1
                self._log_failure(delivery, error)
                await self.outbox.done(row, self._replica)
        except Exception:  # the row stays leased until its lease ends; then it is tried again
            log.exception("push %s for task %s: outbox update failed", row.event_key, row.task_id)

    # -- one try --------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        return min(self._backoff_s * 2.0**attempt, 30.0)

    async def _attempt(self, delivery: Delivery) -> Exception | None:
        """One try: None when it landed, else why not (:class:`_Retry` if another try may
        fix it)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._try(delivery)
        except (PushUrlError, _Retry, _GiveUp) as exc:
            return exc
        except TimeoutError:
            return _Retry(f"no answer within {self._timeout_s} s")
        return None

    def _log_failure(self, delivery: Delivery, error: Exception) -> None:
        if isinstance(error, PushUrlError):
            log.warning("push for task %s not sent: %s", delivery.task_id, error)
        elif isinstance(error, _Retry):
            log.warning(
                "push %s for task %s to %.200s failed after %d tries: %s",
                delivery.idempotency_id,
                delivery.task_id,
                delivery.config.url,
                self._max_attempts,
                error,
            )
        else:
            log.warning(
                "push %s for task %s to %.200s refused: %s",
                delivery.idempotency_id,
                delivery.task_id,
                delivery.config.url,
                error,
            )

    def _headers(self, delivery: Delivery, target: Target) -> dict[str, str]:
        headers = {
            "Host": target.host_header,
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: delivery.idempotency_id,
        }
        config = delivery.config
        if config.token:
            headers[TOKEN_HEADER] = config.token
        if config.HasField("authentication") and config.authentication.scheme:
            auth = config.authentication
            if auth.credentials:
                headers["Authorization"] = f"{auth.scheme} {auth.credentials}"
        if self._key is not None:
            claims = {
                "sha256": hashlib.sha256(delivery.body).hexdigest(),
                "id": delivery.idempotency_id,
                "task": delivery.task_id,
                "iat": int(time.time()),
            }
            headers[SIGNATURE_HEADER] = self._key.sign(
                json.dumps(claims, separators=(",", ":")).encode(), {"typ": SIGNATURE_TYPE}
            )
        return headers

    async def _try(self, delivery: Delivery) -> None:
        target = await self.policy.resolve(delivery.config.url)
        try:
            response = await self._http.post(
                target.pinned_url,
                content=delivery.body,
                headers=self._headers(delivery, target),
                extensions={"sni_hostname": target.host},
            )
        except (httpx.TransportError, ssl.SSLError) as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status < 300:
            return
        if status == 429 or status >= 500:
            raise _Retry(f"HTTP {status}")
        if 300 <= status < 400:
            raise _GiveUp(f"HTTP {status} redirect (not followed)")
        raise _GiveUp(f"HTTP {status}")

    async def aclose(self) -> None:
        """Stops claiming, waits briefly for deliveries under way, stops them, hands this
        replica's leases back (another replica takes them at once) and closes the client."""
        self._closing = True
        self._wake.set()
        if self._pump is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self._workers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*self._workers, return_exceptions=True), self._timeout_s
                )
        for worker in list(self._workers):
            worker.cancel()
        if self.outbox is not None:
            try:
                await self.outbox.release(self._replica)
            except Exception:  # noqa: BLE001 - the leases then end by themselves
                log.warning("push outbox leases of %s not released; they expire", self._replica)
        await self._http.aclose()


class _GiveUp(Exception):
    """A try failed in a way no retry fixes (a 4xx, a redirect)."""
