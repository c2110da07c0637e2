"""`slmesh convert demo` at a small scale: the whole conversion loop through real processes.

A private mesh serves and records a workload (S1), `convert analyze` clusters it (S2/S3),
`convert train` fits a LoRA student on the classifier's cluster (S4/S5), `convert deploy`
writes its spec and it joins the mesh, and the planner routes fresh messages SLM-first (S6).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mesh.launch import MeshState, stop_processes
from mesh.recording.store import CallStore
from tests.support.procs import ROOT

pytestmark = pytest.mark.integration


def test_the_conversion_loop_end_to_end(tmp_path: Path) -> None:
    work = tmp_path / "work"
    report = tmp_path / "conversion.md"
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("SLMESH_REGISTRY", None)
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "mesh",
                "convert",
                "demo",
                "--work",
                str(work),
                "--record",
                "150",
                "--extract",
                "30",
                "--serve",
                "40",
                "--output",
                str(report),
            ],
            cwd=ROOT,
            env=env,
            text=True,
            capture_output=True,
            timeout=900,
        )
    finally:
        state = MeshState.load(work / "mesh" / "mesh.json")
        if state is not None:  # the demo died before its own clean-up: stop its mesh by PID
            stop_processes(state.processes, timeout_s=10)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert not (work / "mesh" / "mesh.json").exists()  # the demo stopped its mesh

    # S1: both teachers' calls were recorded, redacted, and the planner's verdicts joined them.
    with CallStore(work / "calls.sqlite") as store:
        calls = list(store.calls())
        clusters = store.clusters()
    agents = {c.agent for c in calls}
    assert {"classifier", "extractor", "intent-student"} <= agents
    with_email = [c for c in calls if "@" in c.input]
    assert with_email
    assert all("@example.com" in c.input for c in with_email)
    assert any("user1@example.com" in c.input for c in with_email)
    assert any(c.accepted for c in calls if c.agent == "classifier")
    # S2/S3: the classifier's and the extractor's calls are different tasks.
    dominant = {max(c.summary["agents"], key=c.summary["agents"].get) for c in clusters}
    assert {"classifier", "extractor"} <= dominant

    # S4/S5 and deploy: a student with the teacher's skill and a calibrated threshold.
    training = json.loads((work / "intent-student" / "training.json").read_text())
    assert training["teacher"]["agent"] == "classifier"
    assert training["parameters"] < training["teacher"]["parameters"] / 5
    assert 0 <= training["metrics"]["heldout"]["agreement"] <= 1
    spec = yaml.safe_load((work / "services" / "intent-student" / "agent.yaml").read_text())
    assert [s["id"] for s in spec["skills"]] == ["classify_intent"]
    assert spec["options"]["escalate_below"] <= 0

    # S6: the report says how the routed traffic was served and what it cost.
    text = report.read_text()
    assert "## Demonstration" in text
    assert "cheaper" in text
    assert "40 messages: student served" in text
    assert "cost ratio" in done.stdout
