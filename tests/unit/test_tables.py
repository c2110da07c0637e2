"""Every CLI table rendered at 80 and 120 columns: names and addresses whole, nothing wider
than the terminal, columns that give way named."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console

from mesh.cli import print_agents, print_up
from mesh.convert.cli import _print_report
from mesh.launch import MeshState, Process
from mesh.planner.console import RunResult, print_results
from mesh.proto.slmesh.registry.v1 import registry_pb2
from mesh.telemetry.phoenix import SpanNode, build_tree, render_tree

WIDTHS = [80, 120]
AGENTS = ["classifier", "extractor", "tool-caller", "responder", "tools", "intent-student"]


def _console(width: int) -> Console:
    return Console(width=width, record=True, color_system=None, file=io.StringIO())


def _text(console: Console) -> str:
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= console.width, text
    return text


@pytest.mark.parametrize("width", WIDTHS)
def test_agents_keeps_every_name_and_address_whole(width: int) -> None:
    now = 1_800_000_000.0
    entries = []
    for i, agent in enumerate(AGENTS):
        beat = Timestamp()
        beat.FromSeconds(int(now) - 1)
        entries.append(
            registry_pb2.Replica(
                agent=agent,
                replica_id=f"{agent}-0",
                endpoints=[
                    registry_pb2.Endpoint(transport="GRPC", url=f"grpc://localhost:{45100 + i}"),
                    registry_pb2.Endpoint(
                        transport="JSONRPC", url=f"http://localhost:{45200 + i}/"
                    ),
                ],
                load=registry_pb2.Load(in_flight=i),
                last_heartbeat=beat,
            )
        )
    out = _console(width)
    print_agents(out, "localhost:45000", entries, now)
    text = _text(out)
    for i, agent in enumerate(AGENTS):
        assert f"{agent}-0" in text
        assert f"localhost:{45100 + i}" in text
    if width >= 120:
        assert all(f"localhost:{45200 + i}" in text for i in range(len(AGENTS)))
        assert "not shown" not in text
    else:
        assert "not shown at 80 columns: JSON-RPC, beat" in text


@pytest.mark.parametrize("width", WIDTHS)
def test_up_keeps_every_replica_and_address_whole(width: int) -> None:
    state = MeshState(
        registry="localhost:45000",
        processes=[
            Process(name, f"{name}-0", 40000 + i, "log", 45100 + i, 45200 + i)
            for i, name in enumerate(["registry", *AGENTS])
        ],
    )
    out = _console(width)
    print_up(out, state)
    text = _text(out)
    for i, name in enumerate(["registry", *AGENTS]):
        assert f"{name}-0" in text
        assert f"localhost:{45200 + i}" in text  # gRPC as grpc clients dial it: host:port
        assert f"http://localhost:{45100 + i}" in text


@pytest.mark.parametrize("width", WIDTHS)
def test_trace_shows_durations_and_details_at_any_width(width: int) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    spans = [
        SpanNode("a", None, "SendStreamingMessage planner", t0, t0 + timedelta(seconds=42), "OK",
                 {"mesh.transport": "GRPC", "a2a.task.state": "TASK_STATE_COMPLETED"}),
        SpanNode("b", "a", "invoke_agent planner", t0, t0 + timedelta(seconds=41), "OK", {}),
        SpanNode("c", "b", "execute_plan support_ticket", t0, t0 + timedelta(seconds=40), "OK", {}),
        SpanNode("d", "c", "step intent", t0, t0 + timedelta(seconds=1), "OK", {}),
        SpanNode("e", "d", "SendMessage classifier", t0, t0 + timedelta(seconds=1), "OK",
                 {"mesh.transport": "GRPC"}),
        SpanNode("f", "e", "invoke_agent classifier", t0, t0 + timedelta(seconds=1), "ERROR", {}),
    ]  # fmt: skip
    out = _console(width)
    out.print(render_tree(build_tree("0123456789abcdef", spans), width))
    text = _text(out)
    assert "          invoke_agent classifier" in text
    assert "42000.0" in text
    assert "state=TASK_STATE_COMPLETED" in text
    assert ("█" in text) == (width >= 120)


@pytest.mark.parametrize("width", WIDTHS)
def test_run_results_keep_agent_and_model_names_whole(width: int) -> None:
    ticket = {
        "message": "Where is my order ORD-317970? It still has not arrived after two weeks.",
        "intent": "track_shipment",
        "tool_call": {"name": "track_shipment", "arguments": {"order_id": "ORD-317970"}},
        "tool_result": {"ok": True},
        "reply": "Your order ORD-317970 shipped with UPS and is on its way to you. The "
        "tracking number is 1Z999AA10123456784 and it should arrive within three business "
        "days, weather permitting.",
    }
    stats = {"calls": 4, "errors": 0, "p50_ms": 12.5, "p99_ms": 80.1, "mean_ms": 20.2}
    model = {"parameters": 22_700_000, "calls": 4, "input_tokens": 812, "output_tokens": 64}
    result = RunResult(
        task_id="t",
        result={"tickets": [ticket]},
        metadata={
            "agents": {agent: stats for agent in AGENTS},
            "cost": {
                "models": [
                    {"model": f"models/{agent}-encoder", **model, "flops": 3.2e10}
                    for agent in AGENTS
                ],
                "flops": 1.9e11,
            },
        },
    )
    out = _console(width)
    print_results(result, out)
    text = _text(out)
    assert "track_shipment" in text
    assert "permitting." in text  # the reply is the product: folded, never cut
    for agent in AGENTS:
        assert f" {agent} " in text
        assert f"models/{agent}-encoder" in text


@pytest.mark.parametrize("width", WIDTHS)
def test_convert_clusters_keep_names_whole(width: int) -> None:
    report = {
        "calls": 40,
        "kept": 38,
        "dropped": {"rejected": 1, "invalid": 1},
        "min_size": 8,
        "clusters": [
            {
                "id": 1,
                "name": "classify_intent",
                "size": 38,
                "trainable": True,
                "output_kind": "label",
                "agents": {"classifier": 1.0},
                "models": {"all-MiniLM-L6-v2": 1.0},
                "examples": [{"input": "please refund order ORD-100", "output": "refund"}],
            }
        ],
    }
    out = _console(width)
    _print_report(report, out)
    text = _text(out)
    assert "classify_intent" in text
    assert "classifier" in text
