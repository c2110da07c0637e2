"""``slmesh run``: send a task to the planner, show live progress, print what came back.

Kept apart from :mod:`mesh.cli` so the command stays a thin wrapper: this module reads the
planner's stream (status updates carrying ``slmesh`` progress metadata, then the ``result``
artifact) and renders the results table and per-agent statistics with rich.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from a2a.helpers.proto_helpers import new_message
from a2a.types import a2a_pb2 as pb
from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict, ParseDict
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mesh.a2a.client import MeshClient, parts_value, restore_ints
from mesh.support import SENDER_METADATA_KEY
from mesh.tables import Column, print_table

PLANNER = "planner"


Message = str | dict[str, Any]
"""A message's text, or ``{"text", "sender": {"email"}}`` with its verified sender."""

_SENDER_LINE = re.compile(r"^(?P<email>[^\s@|]+@[^\s@|]+\.[A-Za-z0-9-]+)\s*\|\s*(?P<text>.+)$")


def read_messages(path: Path) -> list[Message]:
    """Messages from a file: one per line (``#`` comments and blank lines skipped; a line
    ``EMAIL | text`` carries its sender), or a JSON list of strings (``.json``), or JSON
    lines with a ``message`` field and an optional ``sender`` email (``.jsonl``)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        value = json.loads(text)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{path}: expected a JSON list of strings")
        return value
    if path.suffix == ".jsonl":
        return [
            _message(str(row["message"]), row.get("sender"))
            for row in map(json.loads, filter(str.strip, text.splitlines()))
        ]
    messages: list[Message] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _SENDER_LINE.match(line.strip())
        if match:
            messages.append(_message(match["text"].strip(), match["email"]))
        else:
            messages.append(line.strip())
    return messages


def _message(text: str, sender: object) -> Message:
    if isinstance(sender, str) and sender:
        return {"text": text, "sender": {"email": sender}}
    return text


def message_text(message: Message) -> str:
    """The text of a message as :func:`read_messages` returns it."""
    return message if isinstance(message, str) else str(message["text"])


def request_for(
    text: str | None = None,
    messages: Sequence[Message] | None = None,
    workflow: str | None = None,
    sender: str | None = None,
) -> pb.SendMessageRequest:
    """A text request (routed by meaning) or a batch ``{"messages": [...]}`` request.

    ``sender`` is the text's sender as the channel verified it, sent as message metadata.
    """
    if messages is not None:
        body: dict[str, Any] = {"messages": list(messages)}
        if workflow:
            body = {"workflow": workflow, "input": body}
        part = pb.Part(data=ParseDict(body, struct_pb2.Value()), media_type="application/json")
    elif workflow:
        body = {"workflow": workflow, "input": {"message": text}}
        if sender:
            body["input"]["sender"] = {"email": sender}
        part = pb.Part(data=ParseDict(body, struct_pb2.Value()), media_type="application/json")
    else:
        part = pb.Part(text=text or "")
    message = new_message([part])
    if sender and not workflow:
        message.metadata.update({SENDER_METADATA_KEY: {"email": sender}})
    return pb.SendMessageRequest(message=message)


@dataclass
class RunResult:
    """What the stream told: the task, how it ended, the result and its statistics."""

    task_id: str = ""
    state: int = pb.TaskState.TASK_STATE_UNSPECIFIED
    result: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    plan: dict[str, Any] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.state == pb.TaskState.TASK_STATE_COMPLETED


async def run_task(
    client: MeshClient,
    request: pb.SendMessageRequest,
    console: Console,
    timeout: float,
    *,
    show_progress: bool = True,
) -> RunResult:
    """Streams the task from the planner with a live progress bar; returns how it ended."""
    out = RunResult()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeElapsedColumn(),
    )
    with Progress(
        *columns, console=console, transient=False, disable=not show_progress
    ) as progress:
        bar = progress.add_task("planning", total=None)
        async for event in client.send_streaming_message(PLANNER, request, timeout=timeout):
            kind = event.WhichOneof("payload")
            if kind == "task":
                out.task_id, out.state = event.task.id, event.task.status.state
                console.print(f"task id: {out.task_id}")
            elif kind == "status_update":
                status = event.status_update.status
                out.state = status.state
                meta = restore_ints(MessageToDict(event.status_update.metadata)).get("slmesh", {})
                if "plan" in meta:
                    out.plan = meta["plan"]
                    name = out.plan.get("workflow") or "plan"
                    progress.update(bar, description=f"{name} ({out.plan.get('source')})")
                counts = meta.get("progress")
                if counts:
                    progress.update(
                        bar, total=max(counts["dispatched"], 1), completed=counts["finished"]
                    )
                if status.HasField("message"):
                    out.error = " ".join(p.text for p in status.message.parts if p.HasField("text"))
            elif kind == "artifact_update":
                artifact = event.artifact_update.artifact
                out.result = parts_value(artifact.parts)
                out.metadata = (
                    restore_ints(MessageToDict(artifact.metadata))
                    if artifact.HasField("metadata")
                    else {}
                )
                steps = out.metadata.get("steps", {})
                if steps:
                    progress.update(
                        bar,
                        total=max(steps.get("dispatched", 1), 1),
                        completed=steps.get("finished"),
                    )
            elif kind == "message":
                out.result = parts_value(event.message.parts)
                out.state = pb.TaskState.TASK_STATE_COMPLETED
    return out


def _short(value: Any, width: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def _tool_cell(ticket: dict[str, Any]) -> str:
    call = ticket.get("tool_call")
    if not call:
        return "-"
    result = ticket.get("tool_result") or {}
    args = ", ".join(f"{v}" for v in (call.get("arguments") or {}).values())
    mark = "ok" if result.get("ok") else f"refused: {(result.get('error') or {}).get('code', '?')}"
    return f"{call.get('name')}({_short(args, 40)}) {mark}"


def print_results(result: RunResult, console: Console) -> None:
    """Results table (support tickets) or the JSON result, then per-agent statistics."""
    value = result.result
    tickets = None
    if isinstance(value, dict) and isinstance(value.get("tickets"), list):
        tickets = value["tickets"]
    elif isinstance(value, dict) and "reply" in value and "intent" in value:
        tickets = [value]
    if tickets is not None:
        rows = []
        for i, ticket in enumerate(tickets, 1):
            if "error" in ticket:
                error = ticket["error"]
                rows.append(
                    (
                        str(i),
                        "-",
                        "[red]failed[/red]",
                        _short(error.get("step"), 40),
                        _short(error.get("message"), 80),
                    )
                )
                continue
            rows.append(
                (
                    str(i),
                    _short(ticket.get("message"), 60),
                    str(ticket.get("intent")),
                    _tool_cell(ticket),
                    str(ticket.get("reply") or ""),
                )
            )
        columns = [
            Column("#", justify="right"),
            Column("message", fold=True, min_fold=14),
            Column("intent"),
            Column("tool call", fold=True, min_fold=14),
            Column("reply", fold=True, min_fold=14),
        ]
        print_table(console, columns, rows, "results", show_lines=True)
        summary = value.get("summary") if isinstance(value, dict) else None
        if summary:
            console.print(f"summary: {json.dumps(summary, ensure_ascii=False)}", markup=False)
    elif value is not None:
        console.print(
            json.dumps(value, indent=2, ensure_ascii=False), markup=False, highlight=False
        )
    agents = result.metadata.get("agents") or {}
    if agents:
        calls = [
            (
                agent,
                str(stats["calls"]),
                str(stats["errors"]),
                f"{stats['p50_ms']:.1f}",
                f"{stats['p99_ms']:.1f}",
                f"{stats['mean_ms']:.1f}",
            )
            for agent, stats in agents.items()
        ]
        columns = [Column("agent")] + [
            Column(header, justify="right", give_way=rank)
            for header, rank in (
                ("calls", 0),
                ("errors", 0),
                ("p50 ms", 0),
                ("p99 ms", 0),
                ("mean ms", 1),
            )
        ]
        print_table(console, columns, calls, "agent calls")
    print_cost(result.metadata.get("cost") or {}, console)


def _flops(value: float) -> str:
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} FLOP"


def print_cost(cost: dict[str, Any], console: Console) -> None:
    """The task's cost ledger: tokens and estimated FLOPs per model, and the SLM-first saving."""
    models = cost.get("models") or []
    if not models:
        return
    rows = [
        (
            str(row["model"]),
            f"{row['parameters']:,}" if row.get("parameters") else "?",
            str(row["calls"]),
            str(row["input_tokens"]),
            str(row["output_tokens"]),
            _flops(row["flops"]),
        )
        for row in models
    ]
    columns = [Column("model")] + [
        Column(header, justify="right", give_way=rank)
        for header, rank in (
            ("parameters", 0),
            ("calls", 1),
            ("input tok", 3),
            ("output tok", 2),
            ("FLOPs", 0),
        )
    ]
    print_table(console, columns, rows, "model cost (estimated FLOPs = 2 x parameters x tokens)")
    line = f"cost: {_flops(cost.get('flops') or 0)}"
    if cost.get("routed_steps"):
        line += (
            f"; SLM-first routing: {cost['first_choice_share']:.0%} of {cost['routed_steps']} "
            f"routed steps answered by the smallest model, {cost['escalations']} escalated"
        )
    if cost.get("ratio"):
        line += (
            "; all calls on the largest model offering each skill: "
            f"{_flops(cost['baseline_flops'])} ({cost['ratio']:.1f}x)"
        )
    console.print(line, markup=False, highlight=False)
