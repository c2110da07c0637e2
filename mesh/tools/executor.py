"""The tools agent: each A2A task carries one proposed tool call, checked and run here.

The task ends in one of three states. ``completed`` with a ``tool_result`` artifact when
the call ran, including calls the business rules refused (``ok: false`` in the result,
for the responder to explain). ``rejected`` when the call is malformed: per the A2A
spec that is the agent deciding not to perform the task, nothing was attempted, and
sending the same input again cannot succeed. ``failed`` when a well-formed call broke
while running (the database file could not be opened or written), which a later
retry may survive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

from a2a.helpers import get_data_parts, get_message_text, new_data_part, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.tasks import TaskUpdater
from a2a.types import Message

from mesh.a2a.tasks import FINISHED_STATES, open_task
from mesh.config import ServiceSpec, Settings
from mesh.telemetry import genai
from mesh.tools.catalog import (
    MalformedCallError,
    Policy,
    ToolCallError,
    execute_call,
    parse_call,
)
from mesh.tools.orders import create_demo_database

logger = logging.getLogger(__name__)

DEFAULT_DATABASE = "orders.sqlite"
RESULT_ARTIFACT = "tool_result"
JSON_MEDIA_TYPE = "application/json"


def database_path(spec: ServiceSpec, settings: Settings) -> Path:
    """``options.database`` of the spec; a relative path lives under ``settings.data_dir``."""
    option = spec.options.get("database", DEFAULT_DATABASE)
    if not isinstance(option, str) or not option.strip():
        raise ValueError(
            f"service {spec.name!r}: options.database must be a file path, got {option!r}"
        )
    path = Path(option)
    return path if path.is_absolute() else settings.data_dir / path


class ToolsExecutor(AgentExecutor):
    """Validates and executes one tool call per task against the order database.

    The demo database is created on the first request if the file is missing (an older
    file is migrated), in a worker thread like every other database access, so the event
    loop never blocks. ``options.confirm_refund_above`` sets the amount above which a
    customer's refund needs confirmation (:class:`~mesh.tools.catalog.Policy`).
    """

    def __init__(self, spec: ServiceSpec, settings: Settings) -> None:
        self.database = database_path(spec, settings)
        try:
            self.policy = Policy.from_options(spec.options)
        except ValueError as exc:
            raise ValueError(f"service {spec.name!r}: {exc}") from exc
        self._database_ready = False
        self._database_lock = asyncio.Lock()

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Runs the call in the request's message and finishes the task."""
        updater = await open_task(context, event_queue)
        await updater.start_work()
        span = None
        try:
            payload = _call_payload(context.message)
            span = genai.start_tool(
                _tool_name(payload),
                _call_id(payload, updater.task_id),
                arguments=payload.get("arguments") if isinstance(payload, dict) else None,
            )
            call = parse_call(payload)
            await self._ensure_database()
            execution = await asyncio.to_thread(
                execute_call, self.database, call, policy=self.policy
            )
        except ToolCallError as exc:
            genai.end_tool(span, outcome="rejected", result=exc.to_dict())
            await updater.reject(_error_message(updater, exc.to_dict()))
            return
        except (sqlite3.Error, OSError) as exc:
            genai.end_tool(span, outcome="failed", error=exc)
            logger.exception("tool call failed in the order database %s", self.database)
            error = {
                "code": "database_error",
                "message": "the order database could not run the call; it may be retried",
            }
            await updater.failed(_error_message(updater, error))
            return
        genai.end_tool(
            span,
            outcome="ok" if execution.result.get("ok", True) else "refused",
            result=execution.result,
            replayed=execution.replayed,
        )
        await updater.add_artifact(
            [new_data_part(execution.result, media_type=JSON_MEDIA_TYPE)],
            name=RESULT_ARTIFACT,
            metadata={"tool": call.name, "replayed": execution.replayed},
        )
        await updater.complete()

    async def warm_up(self) -> None:
        """Creates the demo database before the agent reports ready (not on a first call)."""
        await self._ensure_database()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Marks the task canceled.

        A database transaction already under way in its worker thread cannot be stopped;
        SQLite commits it whole or not at all, and a retry with its key replays it.
        """
        task = context.current_task
        if task is not None and task.status.state in FINISHED_STATES:
            return
        await (await open_task(context, event_queue)).cancel()

    async def _ensure_database(self) -> None:
        if self._database_ready:
            return
        async with self._database_lock:
            if not self._database_ready:
                created = await asyncio.to_thread(create_demo_database, self.database)
                if created:
                    logger.info("created the demo order database at %s", self.database)
                self._database_ready = True


def _call_payload(message: Message | None) -> object:
    """The call from the first data part, or else from the text parts read as JSON."""
    if message is None:
        raise MalformedCallError("the request carries no message")
    data = get_data_parts(message.parts)
    if data:
        return data[0]
    text = get_message_text(message).strip()
    if not text:
        raise MalformedCallError(
            "the message has no data part and no text; send the tool call as a JSON "
            "object {'name', 'arguments', 'idempotency_key'?, 'principal'?, 'confirmed'?}"
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedCallError(f"the message text is not a JSON tool call: {exc}") from exc


def _tool_name(payload: object) -> str:
    name = payload.get("name") if isinstance(payload, dict) else None
    return name if isinstance(name, str) and name else "unknown"


def _call_id(payload: object, task_id: str) -> str:
    """The call's idempotency key when it has one, else the task id (one call per task)."""
    key = payload.get("idempotency_key") if isinstance(payload, dict) else None
    return key if isinstance(key, str) and key else task_id


def _error_message(updater: TaskUpdater, error: dict[str, Any]) -> Message:
    return updater.new_agent_message(
        [
            new_text_part(f"{error['code']}: {error['message']}"),
            new_data_part({"error": error}, media_type=JSON_MEDIA_TYPE),
        ]
    )
