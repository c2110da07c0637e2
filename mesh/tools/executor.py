"""The tools agent: each A2A task carries one proposed tool call, checked and run here.

The task ends in one of three states. ``completed`` with a ``tool_result`` artifact when
the call ran, including calls the business rules refused (``ok: false`` in the result,
for the responder to explain). ``rejected`` when the call is malformed: per the A2A
spec that is the agent deciding not to perform the task, nothing was attempted, and
sending the same input again cannot succeed. ``failed`` when a well-formed call broke
while running (the database file could not be opened or written, the PostgreSQL
connection dropped), which a later retry may survive: the error says so
(``"retryable": true``), and nothing of the call was committed, or, if its commit
went through, a retry with the same key replays it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from typing import Any

from a2a.helpers import get_data_parts, get_message_text, new_data_part, new_text_part
from a2a.types import Message

from mesh.a2a.executor import FINISHED_STATES, Executor, Reporter, Request
from mesh.config import ServiceSpec, Settings
from mesh.telemetry import genai
from mesh.tools.catalog import (
    MalformedCallError,
    Policy,
    ToolCallError,
    parse_call,
)
from mesh.tools.database import DEFAULT_DATABASE, database_path, open_order_database
from mesh.tools.postgres import OrderDatabaseError, SchemaError

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_DATABASE",
    "JSON_MEDIA_TYPE",
    "RESULT_ARTIFACT",
    "ToolsExecutor",
    "database_path",
]

RESULT_ARTIFACT = "tool_result"
JSON_MEDIA_TYPE = "application/json"


class ToolsExecutor(Executor):
    """Validates and executes one tool call per task against the order database.

    The database is PostgreSQL when ``SLMESH_ORDERS_DATABASE`` is set, else the SQLite
    file of ``options.database`` (:mod:`mesh.tools.database`). It is made ready before the
    agent reports ready (or on the first request): a missing SQLite file is created (an
    older one migrated) in a worker thread, a PostgreSQL schema is checked (an older one
    stops the replica, naming ``slmesh db upgrade``) and an empty database gets the demo
    shop once. ``options.confirm_refund_above`` sets the amount above which a customer's
    refund needs confirmation (:class:`~mesh.tools.catalog.Policy`).
    """

    def __init__(self, spec: ServiceSpec, settings: Settings) -> None:
        self.database = open_order_database(spec, settings)
        try:
            self.policy = Policy.from_options(spec.options)
        except ValueError as exc:
            raise ValueError(f"service {spec.name!r}: {exc}") from exc
        self._database_ready = False
        self._database_lock = asyncio.Lock()

    async def execute(self, request: Request, task: Reporter) -> None:
        """Runs the call in the request's message and finishes the task."""
        await task.working()
        span = None
        try:
            payload = _call_payload(request.message)
            span = genai.start_tool(
                _tool_name(payload),
                _call_id(payload, task.task_id),
                arguments=payload.get("arguments") if isinstance(payload, dict) else None,
            )
            call = parse_call(payload)
            await self._ensure_database()
            execution = await self.database.run(call, policy=self.policy)
        except ToolCallError as exc:
            genai.end_tool(span, outcome="rejected", result=exc.to_dict())
            await task.reject(_error_message(task, exc.to_dict()))
            return
        except (sqlite3.Error, OSError, OrderDatabaseError) as exc:
            genai.end_tool(span, outcome="failed", error=exc)
            logger.exception("tool call failed in the order database %s", self.database)
            error = {
                "code": "database_error",
                "message": "the order database could not run the call; it may be retried "
                "(with the same idempotency_key)",
                "retryable": True,
            }
            await task.fail(_error_message(task, error))
            return
        except SchemaError as exc:
            genai.end_tool(span, outcome="failed", error=exc)
            error = {"code": "database_schema", "message": str(exc), "retryable": False}
            await task.fail(_error_message(task, error))
            return
        genai.end_tool(
            span,
            outcome="ok" if execution.result.get("ok", True) else "refused",
            result=execution.result,
            replayed=execution.replayed,
        )
        await task.artifact(
            [new_data_part(execution.result, media_type=JSON_MEDIA_TYPE)],
            name=RESULT_ARTIFACT,
            metadata={"tool": call.name, "replayed": execution.replayed},
        )
        await task.complete()

    async def warm_up(self) -> None:
        """Readies the order database before the agent reports ready (not on a first call);
        a :class:`~mesh.tools.postgres.SchemaError` stops the replica's start-up."""
        await self._ensure_database()

    async def aclose(self) -> None:
        """Closes the order database's connections (the server's drain calls it)."""
        await self.database.aclose()

    async def cancel(self, request: Request, task: Reporter) -> None:
        """Marks the task canceled.

        A database transaction already under way cannot be stopped; the database commits
        it whole or not at all, and a retry with its key replays it.
        """
        if request.task is not None and request.task.status.state in FINISHED_STATES:
            return
        await task.cancel()

    async def _ensure_database(self) -> None:
        if self._database_ready:
            return
        async with self._database_lock:
            if not self._database_ready:
                if await self.database.prepare():
                    logger.info("seeded the demo order database %s", self.database)
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
            "object {'name', 'arguments', 'idempotency_key'?, 'principal'?, 'confirmed'?, "
            "'ask_first'?, 'currency'?}"
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


def _error_message(updater: Reporter, error: dict[str, Any]) -> Message:
    return updater.agent_message(
        [
            new_text_part(f"{error['code']}: {error['message']}"),
            new_data_part({"error": error}, media_type=JSON_MEDIA_TYPE),
        ]
    )
