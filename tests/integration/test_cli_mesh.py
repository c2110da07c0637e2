"""`slmesh up / agents / send / down` as a user runs them: separate processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.launch import MeshState, Process, stop_processes
from tests.support.procs import ROOT

ORDER = '{"name": "get_order", "arguments": {"order_id": "ORD-621221"}}'


def slmesh(
    env: dict[str, str], *args: str, timeout: float = 120
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
def services(tmp_path: Path) -> Path:
    """A services folder with just the registry and the tools agent (fast to start)."""
    root = tmp_path / "services"
    for name in ("registry", "tools"):
        shutil.copytree(ROOT / "services" / name, root / name)
    return root


@pytest.fixture
def mesh_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    # The tracing UI has its own end-to-end test (tests/e2e/test_tracing_ui.py).
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
        stop_processes(state.processes, timeout_s=5)


def test_up_agents_send_down(mesh_env: dict[str, str], services: Path, tmp_path: Path) -> None:
    up = slmesh(mesh_env, "up", "--detach", "--services", str(services), "--replicas", "tools=2")
    assert up.returncode == 0, up.stdout + up.stderr
    state = MeshState.load(tmp_path / "mesh" / "mesh.json")
    assert state is not None
    assert sorted(p.replica_id for p in state.processes) == ["registry-0", "tools-0", "tools-1"]
    assert len({p.pid for p in state.processes}) == 3

    listed = slmesh(mesh_env, "agents", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert sorted(e["replica_id"] for e in entries) == ["tools-0", "tools-1"]
    assert {e["endpoints"][0]["transport"] for e in entries} == {"GRPC"}

    for binding in ("GRPC", "JSONRPC", "HTTP+JSON"):
        sent = slmesh(mesh_env, "send", "tools", "--binding", binding, "--data", ORDER)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "task id:" in sent.stdout
        assert "Fitness Tracker" in sent.stdout

    rejected = slmesh(mesh_env, "send", "tools", "--data", '{"name": "get_order", "arguments": {}}')
    assert rejected.returncode == 1
    assert "TASK_STATE_REJECTED" in rejected.stdout

    again = slmesh(mesh_env, "up", "--detach", "--services", str(services))
    assert again.returncode == 1
    assert "already running" in again.stderr

    down = slmesh(mesh_env, "down")
    assert down.returncode == 0
    assert "stopped 3 processes" in down.stdout
    assert not any(Path(f"/proc/{p.pid}").exists() and _not_zombie(p) for p in state.processes)
    assert not (tmp_path / "mesh" / "mesh.json").exists()


def _not_zombie(proc: Process) -> bool:
    try:
        return Path(f"/proc/{proc.pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_cli_errors_are_clear(mesh_env: dict[str, str]) -> None:
    no_mesh = slmesh(mesh_env, "agents")
    assert no_mesh.returncode == 1
    assert "slmesh up" in no_mesh.stderr
    bad_json = slmesh(mesh_env, "send", "tools", "--registry", "127.0.0.1:1", "--data", "{nope")
    assert bad_json.returncode == 2
    assert "not valid JSON" in bad_json.stderr
    bad_replicas = slmesh(mesh_env, "up", "--replicas", "tools=zero")
    assert bad_replicas.returncode == 2
    assert "NAME=COUNT" in bad_replicas.stderr
    missing = slmesh(mesh_env, "serve", "services/does-not-exist")
    assert missing.returncode == 2
    assert "no service spec" in missing.stderr
    assert (
        "Run one service"
        in slmesh(mesh_env, "--help").stdout + slmesh(mesh_env, "serve", "--help").stdout
    )
