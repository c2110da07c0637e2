"""The main job as `make run` runs it: the whole mesh as processes, the demo batch through the
planner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mesh.launch import MeshState, stop_processes
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
    messages = [
        line for line in DEMO.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    tickets = out["result"]["tickets"]
    assert [t["message"] for t in tickets] == messages
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
