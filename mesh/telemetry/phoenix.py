"""The local tracing UI (Arize Phoenix) and reading a task's trace back from it.

``slmesh up`` starts Phoenix as its own process (the ``ui`` extra installs it), offline:
no telemetry of its own, no external resources, no sandbox providers, no agent assistant,
its database under ``SLMESH_DATA_DIR/phoenix``. It takes OTLP over gRPC and HTTP and serves
the UI and a REST API on one HTTP port; every mesh process exports its traces there.

:func:`task_trace` finds the trace that holds an A2A task (by the ``a2a.task.id`` attribute
that agent and client spans carry) and returns its spans as a tree; :func:`render_tree`
draws it as a waterfall with durations.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from mesh.telemetry import names

PHOENIX_MODULE = "phoenix.server.main"


def available() -> bool:
    """Whether Phoenix is installed in this environment (``pip install 'slmesh[ui]'``)."""
    return importlib.util.find_spec("phoenix") is not None


def command() -> list[str]:
    """The command line that serves Phoenix with this interpreter."""
    return [sys.executable, "-m", PHOENIX_MODULE, "serve"]


def environment(workdir: Path, host: str, http_port: int, grpc_port: int) -> dict[str, str]:
    """Phoenix's settings for a local, offline instance."""
    return {
        "PHOENIX_HOST": host,
        "PHOENIX_PORT": str(http_port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_WORKING_DIR": str(workdir),
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
        "PHOENIX_ALLOWED_SANDBOX_PROVIDERS": "NONE",
        "PHOENIX_DISABLE_AGENT_ASSISTANT": "true",
        "PHOENIX_ENABLE_MCP_SERVER": "false",
    }


def exporter_environment(grpc_port: int, project: str | None = None) -> dict[str, str]:
    """What each mesh process needs to export its traces to a local Phoenix."""
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",  # Phoenix takes no OTLP metrics or logs
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{grpc_port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "1000",  # spans show up within a second
    }
    if project:
        env["SLMESH_OTEL_PROJECT"] = project
    return env


class TraceNotFoundError(LookupError):
    """No trace in the backend holds the task (yet: spans are exported in batches)."""


@dataclass
class SpanNode:
    """One span of a trace, with its children in start order."""

    span_id: str
    parent_id: str | None
    name: str
    start: datetime
    end: datetime
    status: str
    attributes: dict[str, Any]
    children: list[SpanNode] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return (self.end - self.start).total_seconds() * 1000

    def attribute(self, dotted: str) -> Any:
        """An attribute by its dotted key (Phoenix returns them nested)."""
        value: Any = self.attributes
        if dotted in value:
            return value[dotted]
        for part in dotted.split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value


@dataclass
class Trace:
    trace_id: str
    roots: list[SpanNode]
    spans: list[SpanNode]


def _parse(raw: dict[str, Any]) -> SpanNode:
    return SpanNode(
        span_id=raw["context"]["span_id"],
        parent_id=raw.get("parent_id"),
        name=raw["name"],
        start=datetime.fromisoformat(raw["start_time"]),
        end=datetime.fromisoformat(raw["end_time"]),
        status=raw.get("status_code", "UNSET"),
        attributes=raw.get("attributes") or {},
    )


def _spans(http: httpx.Client, project: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query: list[tuple[str, str | int | float | bool | None]] = [
            *params,
            ("limit", "1000"),
            *([("cursor", cursor)] if cursor else []),
        ]
        response = http.get(f"/v1/projects/{project}/spans", params=query)
        if response.status_code == 404:
            raise TraceNotFoundError(f"no project {project!r} in the tracing backend yet")
        response.raise_for_status()
        body = response.json()
        out.extend(body.get("data", []))
        cursor = body.get("next_cursor")
        if not cursor:
            return out


def task_trace(base_url: str, project: str, task_id: str, *, timeout_s: float = 10.0) -> Trace:
    """The whole trace that holds A2A task ``task_id``, as a span tree."""
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s) as http:
        hits = _spans(http, project, [("attribute", f"{names.TASK_ID}:{_quoted(task_id)}")])
        if not hits:
            raise TraceNotFoundError(f"no span carries task {task_id} in project {project!r}")
        trace_id = hits[0]["context"]["trace_id"]
        raw = _spans(http, project, [("trace_id", trace_id)])
    return build_tree(trace_id, [_parse(r) for r in raw])


def _quoted(value: str) -> str:
    """A value Phoenix's attribute filter reads as a string even when it looks like a number."""
    return '"' + value.replace('"', '\\"') + '"'


def build_tree(trace_id: str, spans: list[SpanNode]) -> Trace:
    by_id = {s.span_id: s for s in spans}
    roots: list[SpanNode] = []
    for span in sorted(spans, key=lambda s: s.start):
        parent = by_id.get(span.parent_id or "")
        (parent.children if parent is not None else roots).append(span)
    return Trace(trace_id, roots, spans)


_DETAIL_KEYS = (
    names.TRANSPORT,
    names.TASK_STATE,
    names.USAGE_INPUT_TOKENS,
    names.USAGE_OUTPUT_TOKENS,
    names.BATCH_SIZE,
    names.TOOL_OUTCOME,
)


def render_tree(trace: Trace, width: int = 120) -> Any:
    """A rich Table for a ``width``-column terminal: the span tree (never cut), a waterfall
    bar (up to 40 columns; left out where the terminal has no room for 10), the duration
    and the key attributes (folded)."""
    from rich.text import Text

    from mesh.tables import Column, fit_table

    start = min(s.start for s in trace.spans)
    total = max((max(s.end for s in trace.spans) - start).total_seconds(), 1e-9)
    shown: list[tuple[int, SpanNode]] = []

    def walk(node: SpanNode, depth: int) -> None:
        shown.append((depth, node))
        for child in node.children:
            walk(child, depth + 1)

    for root in trace.roots:
        walk(root, 0)
    span_w = max(len("  " * depth + node.name) for depth, node in shown)
    ms_w = max(len(f"{node.duration_ms:.1f}") for _, node in shown)
    # The room the span, ms and details (24 wide, folded) columns leave, less the bar's rule.
    bar_w = min(40, width - (span_w + ms_w + 24 + 3 * 3 + 1) - 3)
    columns = [Column("span"), Column("waterfall"), Column("ms", justify="right")]
    columns.append(Column("details", fold=True, min_fold=24))
    if bar_w < 10:
        del columns[1]
    rows = []
    for depth, node in shown:
        style = "red" if node.status == "ERROR" else ""
        details = " ".join(
            f"{key.rsplit('.', 1)[-1]}={value}"
            for key in _DETAIL_KEYS
            if (value := node.attribute(key)) is not None
        )
        cells: list[Any] = [Text("  " * depth + node.name, style=style)]
        if bar_w >= 10:
            offset = int((node.start - start).total_seconds() / total * bar_w)
            length = max(1, int(node.duration_ms / 1000 / total * bar_w))
            cells.append(
                Text(" " * offset + "█" * min(length, bar_w - offset), style=style or "cyan")
            )
        rows.append([*cells, f"{node.duration_ms:.1f}", details])
    table, _ = fit_table(columns, rows, width, title=f"trace {trace.trace_id}")
    return table
