"""The tracing UI out of the box: `slmesh up` starts Phoenix, a task's trace shows up there,
in `slmesh trace`, and in a real headless Chromium.

Set ``SLMESH_DOCS_SCREENSHOTS=1`` to also write the screenshot to docs/img/trace-ui.png
(kept out of ordinary runs so a test run leaves the work tree clean).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mesh.launch import MeshState, stop_processes
from mesh.telemetry import phoenix
from tests.support.procs import ROOT

pytestmark = pytest.mark.skipif(
    not phoenix.available(), reason="the ui extra (arize-phoenix) is not installed"
)

CALL = '{"name": "get_order", "arguments": {"order_id": "ORD-621221"}}'


def slmesh(
    env: dict[str, str], *args: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mesh", *args],
        cwd=ROOT,
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


@dataclass
class Mesh:
    env: dict[str, str]
    state: MeshState
    task_id: str


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("ui")
    services = tmp / "services"
    for name in ("registry", "tools"):
        shutil.copytree(ROOT / "services" / name, services / name)
    env = {
        **os.environ,
        "SLMESH_DATA_DIR": str(tmp / "mesh"),
        "SLMESH_UI": "true",
        "COLUMNS": "200",
    }
    for name in list(env):
        if name == "SLMESH_REGISTRY" or name.startswith(("OTEL_", "SLMESH_OTEL")):
            env.pop(name)
    up = slmesh(env, "up", "--detach", "--services", str(services))
    state = MeshState.load(tmp / "mesh" / "mesh.json")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert state is not None
        assert state.ui is not None
        assert state.ui_url in up.stdout
        sent = slmesh(env, "send", "tools", "--data", CALL)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        task_id = next(
            line.split()[2] for line in sent.stdout.splitlines() if line.startswith("task id:")
        )
        yield Mesh(env, state, task_id)
        down = slmesh(env, "down")
        assert down.returncode == 0, down.stdout + down.stderr
        assert "stopped the tracing UI" in down.stdout, down.stdout + down.stderr
    finally:
        state = MeshState.load(tmp / "mesh" / "mesh.json")
        if state is not None:  # failed before `down`: stop what `up` started, by PID
            stop_processes(state.processes + ([state.ui] if state.ui else []), timeout_s=5)


def test_slmesh_trace_prints_the_task_tree(mesh: Mesh) -> None:
    shown = slmesh(mesh.env, "trace", mesh.task_id, "--json", "--wait", "30")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    found = json.loads(shown.stdout)
    spans = {s["name"]: s for s in found["spans"]}
    client = spans["SendStreamingMessage tools"]
    agent = spans["invoke_agent tools"]
    tool = spans["execute_tool get_order"]
    assert client["parent_id"] is None
    assert agent["parent_id"] == client["span_id"]
    assert tool["parent_id"] == agent["span_id"]
    assert agent["attributes"]["a2a.task.id"] == mesh.task_id
    assert agent["attributes"]["gen_ai.agent.name"] == "tools"
    assert tool["attributes"]["gen_ai.tool.name"] == "get_order"

    table = slmesh(mesh.env, "trace", mesh.task_id)
    assert table.returncode == 0, table.stderr
    assert "invoke_agent tools" in table.stdout
    assert "execute_tool get_order" in table.stdout
    assert found["trace_id"] in table.stdout


def _chromium() -> str | None:
    return (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )


@pytest.mark.skipif(
    _chromium() is None, reason="no headless Chromium (Debian: apt-get install chromium)"
)
def test_the_ui_shows_the_trace_in_a_real_browser(mesh: Mesh, tmp_path: Path) -> None:
    shown = slmesh(mesh.env, "trace", mesh.task_id, "--json", "--wait", "30")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    url = json.loads(shown.stdout)["url"]
    browser = [
        _chromium() or "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1600,1000",
        "--virtual-time-budget=20000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run([*browser, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for name in ("SendStreamingMessage tools", "invoke_agent tools", "execute_tool get_order"):
        assert name in dom.stdout, f"{name!r} is not on the trace page"
    shot = tmp_path / "trace-ui.png"
    taken = subprocess.run(
        [*browser, f"--screenshot={shot}", url], capture_output=True, text=True, timeout=180
    )
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.stat().st_size > 10_000, taken.stderr[-2000:]
    if os.environ.get("SLMESH_DOCS_SCREENSHOTS") == "1":
        (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, ROOT / "docs" / "img" / "trace-ui.png")
