"""The main job as `make run` runs it: the whole mesh as processes, the demo batch through the
planner."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.launch import MeshState, stop_processes
from mesh.support.facts import LISTED_ORDERS
from tests.support.procs import ROOT

pytestmark = pytest.mark.integration

DEMO = ROOT / "demo" / "support_messages.txt"


def slmesh(
    env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mesh", *args],
        cwd=ROOT,
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


@pytest.fixture
def mesh_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {
        **os.environ,
        "SLMESH_DATA_DIR": str(tmp_path / "mesh"),
        "COLUMNS": "200",
        "SLMESH_UI": "false",
    }
    env.pop("SLMESH_REGISTRY", None)
    yield env
    state = MeshState.load(tmp_path / "mesh" / "mesh.json")
    if state is not None:  # the test failed before `down`: stop what `up` started, by PID
        stop_processes(state.processes, timeout_s=10)


def test_demo_batch_runs_through_every_agent(mesh_env: dict[str, str], tmp_path: Path) -> None:
    up = slmesh(mesh_env, "up", "--detach", timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    state = MeshState.load(tmp_path / "mesh" / "mesh.json")
    assert state is not None
    assert {p.service for p in state.processes} >= {
        "registry",
        "planner",
        "classifier",
        "extractor",
        "tool-caller",
        "tools",
        "responder",
    }

    ran = slmesh(mesh_env, "run", "--file", str(DEMO), "--json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    out = json.loads(ran.stdout)
    assert out["completed"]
    assert out["task_id"]
    lines = [
        line for line in DEMO.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    senders = [line.split(" | ", 1)[0] if " | " in line else None for line in lines]
    messages = [line.split(" | ", 1)[-1] for line in lines]
    tickets = out["result"]["tickets"]
    assert [t["message"] for t in tickets] == messages
    for ticket, sender in zip(tickets, senders, strict=True):
        assert_reply_states_the_tool_result(ticket, sender)
    assert_readme_shows_these_replies(tickets)
    labels = set(
        yaml.safe_load((ROOT / "services" / "classifier" / "agent.yaml").read_text())["options"][
            "output"
        ]["labels"]
    )
    for ticket in tickets:
        assert "error" not in ticket, ticket
        assert ticket["intent"] in labels
        assert isinstance(ticket["fields"], dict)
        assert "order_id" in ticket["fields"]
        assert ticket["reply"].strip()
        if ticket["tool_call"] is not None:
            assert isinstance(ticket["tool_result"], dict)
            assert "ok" in ticket["tool_result"]
    assert out["result"]["summary"]["tickets"] == len(messages)
    assert out["result"]["summary"]["failed"] == 0
    agents = out["metadata"]["agents"]
    assert agents["classifier"]["calls"] == len(messages) == agents["extractor"]["calls"]
    assert out["metadata"]["workflow"] == "support_batch"
    assert out["metadata"]["source"] == "workflow"

    # The table view a user sees, and one message routed by meaning.
    one = slmesh(mesh_env, "run", "Where is my order ORD-317970? It still hasn't arrived.")
    assert one.returncode == 0, one.stdout + one.stderr
    assert "task id: " in one.stdout
    assert "agent calls" in one.stdout
    assert "classifier" in one.stdout

    down = slmesh(mesh_env, "down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert MeshState.load(tmp_path / "mesh" / "mesh.json") is None


_STATUS_WORDS = ("placed", "shipped", "delivered", "cancelled", "refunded", "on its way")
_SIDE_EFFECTS = ("cancel_order", "refund_order", "update_shipping_address")


def assert_reply_states_the_tool_result(ticket: dict[str, Any], sender: str | None) -> None:
    """The reply states the tool result's facts, no other status, and acts for its sender.

    Independent of the product's own fact check: what each outcome must say is spelled out
    here from the tool result itself.
    """
    reply, call, result = ticket["reply"], ticket["tool_call"], ticket["tool_result"]
    assert reply.rstrip()[-1] in ".!?", reply
    assert not re.search(r"(?<![\w.-])([\w.@-]+)\s+\1(?![\w-]|\.\w)", reply), reply
    if call is None:  # nothing to act on: a question for the order number
        assert "order number" in reply, reply
        return
    expected = {"customer": sender} if sender else {"anonymous": True}
    assert call["principal"] == expected, ticket
    if call["name"] in _SIDE_EFFECTS:
        assert any(
            word in ticket["message"].lower() for word in ("cancel", "refund", "address", "send")
        ), ticket
    if not result["ok"]:
        assert result["error"]["message"] in reply, ticket
        return
    if call["name"] == "search_faq":
        answer = result["matches"][0]["answer"] if result["matches"] else "support@example.com"
        assert answer in reply, ticket
        return
    listed: list[str] = []  # earlier orders a listing names, each with its own status
    if result.get("limited"):
        order = result["order"]
        wanted = [order["order_id"], order["status"]]
        assert not any(v in reply for v in ("EUR", "USD", "GBP", "@")), reply
        status = order["status"]
    elif call["name"] == "get_order":
        order = result["order"]
        wanted = [
            order["order_id"],
            order["status"],
            order["product"],
            f"{order['amount']} {order['currency']}",
        ]
        status = order["status"]
        first = order["customer"]["name"].split()[0]
        assert reply.startswith((f"Hi {first},", "Hello,")), reply
    elif call["name"] == "track_shipment":
        wanted = [result["order_id"], result["carrier"], result["tracking_number"]]
        if result["status"] == "shipped":
            wanted.append(result["estimated_delivery"])
            status = "on its way"
        else:
            wanted.append(result["delivered_at"][:10])
            status = "delivered"
    elif call["name"] == "find_orders":
        latest = result["orders"][0]
        listed = [
            f"{o['order_id']} ({o['product']}, {o['status']})"
            for o in result["orders"][1:LISTED_ORDERS]
        ]
        wanted = [
            result["customer"]["email"],
            latest["order_id"],
            latest["status"],
            f"{result['count']} order",
            *listed,
        ]
        status = latest["status"]
    elif call["name"] == "cancel_order":
        wanted = [result["order_id"], "cancelled", f"{result['amount']} {result['currency']}"]
        status = "cancelled"
    elif call["name"] == "refund_order":
        wanted = [result["order_id"], f"{result['amount']} {result['currency']}", "refunded"]
        status = "refunded"
    else:
        wanted = [result["order_id"], result["shipping_address"]]
        status = ""
    missing = [value for value in wanted if value not in reply]
    assert not missing, (missing, ticket)
    said = reply.replace("placed the order", "")  # "the email address you placed the order with"
    for order in listed:
        said = said.replace(order, "")
    others = [w for w in _STATUS_WORDS if w != status and re.search(rf"\b{w}\b", said)]
    assert not others, (others, ticket)


def assert_readme_shows_these_replies(tickets: list[dict[str, Any]]) -> None:
    """The README's demo replies are what the demo prints, next to their real tool results."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- demo-replies:begin -->", 1)[1].split("<!-- demo-replies:end -->")[0]
    shown = re.findall(r"^> (.+)\n>\n> tool result: `(.+)`\n>\n> reply: (.+)$", block, re.M)
    assert len(shown) == 3, block
    by_message = {ticket["message"]: ticket for ticket in tickets}
    for message, result, reply in shown:
        ticket = by_message[message.split(" | ", 1)[-1]]
        assert ticket["reply"] == reply
        for key, value in json.loads(result).items():
            assert ticket["tool_result"][key] == value, (key, ticket["tool_result"])
