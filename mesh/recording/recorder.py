"""The opt-in call recorder (S1 of the conversion loop): each model call, redacted, into the store.

The recording wrapper (:mod:`mesh.recording.executor`) hands every finished call of an SLM
agent (completed, failed or rejected) to :meth:`Recorder.submit`, which only appends to an
in-memory queue: the reply never waits on recording. A background task takes the queue in
batches, looks up the names in each call's input (from the agent named by
``SLMESH_RECORD_NAMES_FROM``, over the mesh), then redacts and writes the batch in one
transaction in a worker thread. A call whose names cannot be looked up is dropped and counted,
never written unredacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from a2a.types import a2a_pb2 as pb

from mesh.a2a.client import parts_value
from mesh.config import Settings
from mesh.recording.redact import Redaction
from mesh.recording.store import CallRecord, CallStore

log = logging.getLogger(__name__)

NameFinder = Callable[[str], Awaitable[list[str]]]
"""Finds the person names in a text (``[]`` when there are none); raises when it cannot tell."""

QUEUE_LIMIT = 10_000
"""Calls waiting to be written; beyond it new ones are dropped (and counted), never waited on."""
LOOKUPS_IN_FLIGHT = 16
"""Name lookups outstanding at the name source at once: the source is an SLM agent serving its
own traffic too; a whole batch at once would queue past the lookup deadline and drop calls."""
LOOKUP_TIMEOUT_S = 60.0
"""A lookup waits this long for the name source (it answers in batches; under load, slowly)."""
BATCH = 256


def name_fields(value: Any) -> list[str]:
    """String values of name-like keys (``name``, ``customer_name``) in a JSON value."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and (key == "name" or key.endswith("_name")):
                found.append(item)
            else:
                found += name_fields(item)
    elif isinstance(value, list):
        for item in value:
            found += name_fields(item)
    return found


@dataclass(frozen=True)
class PendingCall:
    """A finished call before redaction (memory only); ``names`` are already known names."""

    record: CallRecord
    names: tuple[str, ...] = ()


class MeshNames:
    """Asks an extraction agent over the mesh (registry discovery) for the names in a text."""

    def __init__(self, settings: Settings, agent: str, timeout_s: float = LOOKUP_TIMEOUT_S) -> None:
        if not settings.registry:
            raise ValueError(
                f"SLMESH_RECORD_NAMES_FROM={agent} needs SLMESH_REGISTRY to find that agent"
            )
        self.settings = settings
        self.agent = agent
        self.timeout_s = timeout_s
        self._client: Any = None
        self._view: Any = None
        self._lock = asyncio.Lock()

    async def __call__(self, text: str) -> list[str]:
        async with self._lock:
            if self._client is None:
                from mesh.a2a.discovery import watched_client

                self._client, self._view = await watched_client(self.settings)
        response = await self._client.send_text(self.agent, text, timeout=self.timeout_s)
        task = response.task
        if task.status.state != pb.TaskState.TASK_STATE_COMPLETED or not task.artifacts:
            raise LookupError(
                f"{self.agent} could not extract names: {pb.TaskState.Name(task.status.state)}"
            )
        return name_fields(parts_value(task.artifacts[-1].parts))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._view is not None:
            await self._view.stop()


class Recorder:
    """Redacts and stores calls off the request path; one per agent process."""

    def __init__(
        self,
        store: CallStore,
        names: NameFinder | None = None,
        close_names: Callable[[], Awaitable[None]] | None = None,
        *,
        names_from_output: bool = False,
    ) -> None:
        self.store = store
        self.names = names
        self.names_from_output = names_from_output
        """The agent is the name source: only its completed calls name the names, others are
        dropped."""
        self._close_names = close_names
        self._queue: asyncio.Queue[PendingCall] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.written = 0
        self.dropped: Counter[str] = Counter()
        self._names_down = False
        self._lookups = asyncio.Semaphore(LOOKUPS_IN_FLIGHT)

    @classmethod
    def from_settings(cls, settings: Settings, agent: str) -> Recorder | None:
        """The recorder ``SLMESH_RECORD_DB`` asks for, or None when recording is off."""
        if settings.record_db is None:
            return None
        store = CallStore(settings.record_db)
        source = settings.record_names_from
        if source is None or source == agent:
            # The extractor itself knows the names: they are its own output's name fields.
            if source is None:
                log.warning(
                    "recording calls of %s to %s; names in inputs are not looked up "
                    "(set SLMESH_RECORD_NAMES_FROM=extractor)",
                    agent,
                    settings.record_db,
                )
            return cls(store, names_from_output=source is not None)
        finder = MeshNames(settings, source)
        return cls(store, finder, finder.aclose)

    def submit(self, call: PendingCall) -> None:
        """Queues a finished call; returns at once (called on the request path)."""
        if self._queue is None:
            self._queue = asyncio.Queue(QUEUE_LIMIT)
            self._worker = asyncio.create_task(self._run(), name="call-recorder")
        try:
            self._queue.put_nowait(call)
        except asyncio.QueueFull:
            self.dropped["queue_full"] += 1

    async def flush(self) -> None:
        """Waits until every queued call is written or dropped."""
        if self._queue is not None:
            await self._queue.join()

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Writes what is queued (up to ``timeout_s``), then stops."""
        if self._queue is not None and self._worker is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout_s)
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._close_names is not None:
            await self._close_names()
        self.store.close()
        if self.dropped:
            log.warning("call recorder: %d written, dropped %s", self.written, dict(self.dropped))

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            batch = [await queue.get()]
            while len(batch) < BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                names = await asyncio.gather(*(self._names(call) for call in batch))
                ready = [
                    (call, found)
                    for call, found in zip(batch, names, strict=True)
                    if found is not None
                ]
                if ready:  # regexes and SQLite in a thread: the event loop serves requests
                    self.written += await asyncio.to_thread(self._write, ready)
            except Exception:  # a full disk or locked file must not kill the agent
                log.exception("call recorder: could not write %d calls", len(batch))
                self.dropped["write_failed"] += len(batch)
            finally:
                for _ in batch:
                    queue.task_done()

    def _write(self, calls: list[tuple[PendingCall, list[str]]]) -> int:
        return self.store.add_many(redact_record(call.record, names) for call, names in calls)

    async def _names(self, call: PendingCall) -> list[str] | None:
        """The names to redact in the call; None when they cannot be known (drop the call)."""
        names = list(call.names)
        if (
            self.names_from_output
            and call.record.state != "completed"
            and call.record.input.strip()
        ):
            self.dropped["names_unavailable"] += 1
            return None
        if self.names is not None and call.record.input.strip():
            try:
                async with self._lookups:
                    names += await self.names(call.record.input)
            # Unreachable or failing name source (any error): never write unredacted.
            except Exception as exc:  # noqa: BLE001 - any failure drops the call, logged below
                self.dropped["names_unavailable"] += 1
                if not self._names_down:
                    log.warning(
                        "call recorder: cannot look up names (%s); dropping calls until it answers",
                        exc,
                    )
                    self._names_down = True
                return None
            self._names_down = False
        return names


def redact_record(record: CallRecord, names: Iterable[str] = ()) -> CallRecord:
    """The record with PII replaced in input, output and error, consistently across the three."""
    redaction = Redaction(names)
    return replace(
        record,
        input=redaction(record.input) or "",
        output=redaction(record.output),
        error=redaction(record.error),
    )
