"""`slmesh up / agents / send / down` as a user runs them: separate processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
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


def _echo_agent(services: Path, name: str, **options: object) -> None:
    """A test echo agent in ``services`` (``start_delay_s``: slow to start, like a big model)."""
    (services / name).mkdir()
    spec = {
        "name": name,
        "kind": "agent",
        "description": "Test agent.",
        "executor": "tests.support.echo:EchoExecutor",
        "skills": [{"id": name, "name": name, "description": "Echo."}],
        "options": options,
    }
    (services / name / "agent.yaml").write_text(json.dumps(spec), encoding="utf-8")


def _start_up(env: dict[str, str], services: Path, state_file: Path) -> subprocess.Popen[str]:
    """``slmesh up --detach`` in the background, once it has started (not readied) 3 services."""
    up = subprocess.Popen(
        [sys.executable, "-m", "mesh", "up", "--detach", "--services", str(services)],
        cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while (state := MeshState.load(state_file)) is None or len(state.processes) < 3:
        assert up.poll() is None, up.communicate()
        assert time.monotonic() < deadline, "slmesh up did not start its services"
        time.sleep(0.1)
    return up


def _running(state: MeshState) -> list[str]:
    return [
        p.replica_id for p in state.processes if Path(f"/proc/{p.pid}").exists() and _not_zombie(p)
    ]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_up_interrupted_mid_start_stops_what_it_started(
    mesh_env: dict[str, str], services: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    _echo_agent(services, "loading", start_delay_s=300)  # never ready while the test runs
    state_file = tmp_path / "mesh" / "mesh.json"
    up = _start_up(mesh_env, services, state_file)
    state = MeshState.load(state_file)
    assert state is not None
    assert sorted(p.replica_id for p in state.processes) == ["loading-0", "registry-0", "tools-0"]
    up.send_signal(sig)
    _, err = up.communicate(timeout=60)
    assert up.returncode == 128 + sig, err
    assert f"interrupted by {sig.name} while starting the mesh" in err
    assert _running(state) == []
    assert not state_file.exists()
    assert "no running mesh found" in slmesh(mesh_env, "down").stdout


def test_up_killed_mid_start_leaves_a_state_that_down_stops(
    mesh_env: dict[str, str], services: Path, tmp_path: Path
) -> None:
    _echo_agent(services, "loading", start_delay_s=300)
    state_file = tmp_path / "mesh" / "mesh.json"
    up = _start_up(mesh_env, services, state_file)
    up.kill()
    up.communicate(timeout=30)
    state = MeshState.load(state_file)
    assert state is not None
    assert len(_running(state)) == 3
    down = slmesh(mesh_env, "down")
    assert "stopped 3 processes" in down.stdout, down.stdout + down.stderr
    assert _running(state) == []


def test_up_with_a_failing_service_stops_the_others(
    mesh_env: dict[str, str], services: Path, tmp_path: Path
) -> None:
    _echo_agent(services, "broken", start_delay_s="not a number")
    up = slmesh(mesh_env, "up", "--detach", "--services", str(services))
    assert up.returncode == 1
    assert "broken-0 exited during start-up" in up.stderr
    assert not (tmp_path / "mesh" / "mesh.json").exists()
    logs = {p.name for p in (tmp_path / "mesh" / "logs").iterdir()}
    assert logs == {"registry-0.log", "broken-0.log", "tools-0.log"}
    assert "no running mesh found" in slmesh(mesh_env, "down").stdout


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
