"""A real SLM agent process records its calls (SLMESH_RECORD_DB); `slmesh convert analyze` reads
them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from mesh.a2a.client import MeshClient, StaticReplicas
from mesh.recording.store import CallStore
from tests.support.procs import ROOT, ServiceProcess
from tests.support.tiny_slm import save_tiny_model

pytestmark = pytest.mark.integration

LABELS = ["refund_request", "order_status", "other"]
MESSAGES = [
    "Where is my order ORD-104233? Mail me at jane.doe@example.org",
    "Refund ORD-100001 please, call +44 20 7946 0958",
    "Card 4111-1111-1111-1111 was charged twice for ORD-100002",
]


def test_agent_records_redacted_calls_and_analyze_clusters_them(
    spawn: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    service = tmp_path / "classifier"
    save_tiny_model(service / "model", "llama", "char")
    spec = {
        "name": "classifier",
        "description": "Intent of a message (test model).",
        "executor": "mesh.slm.executor:SLMExecutor",
        "skills": [{"id": "classify_intent", "name": "Classify", "description": "Intent."}],
        "options": {
            "model": "./model",
            "prompt": "Classify the message.\nMessage: {input}\nIntent: ",
            "output": {"labels": LABELS},
            "threads": 1,
        },
    }
    (service / "agent.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    db = tmp_path / "calls.db"
    agent = spawn(service, env={"SLMESH_TASK_STORE": "memory", "SLMESH_RECORD_DB": str(db)})

    async def talk() -> list[str]:
        replicas = StaticReplicas.from_urls(
            "classifier", agent.http_url, f"grpc://{agent.grpc_target}"
        )
        async with MeshClient(replicas) as client:
            sent = [await client.send_text("classifier", text, timeout=30) for text in MESSAGES]
            sent.append(
                await client.send_text("classifier", MESSAGES[0], timeout=30)
            )  # a duplicate
        return [r.task.id for r in sent]

    task_ids = asyncio.run(talk())
    deadline = time.monotonic() + 10
    while CallStore(db).count() < len(task_ids) and time.monotonic() < deadline:
        time.sleep(0.05)  # the recorder writes after the reply, in the background
    rows = {r.task_id: r for r in CallStore(db).calls()}
    assert set(rows) == set(task_ids)
    stored = [rows[t].input for t in task_ids]
    assert stored[:3] == [
        "Where is my order ORD-104233? Mail me at user1@example.com",
        "Refund ORD-100001 please, call +1-202-555-0001",
        "Card 4000-0000-0000-0010 was charged twice for ORD-100002",
    ]
    for row in rows.values():
        assert row.state == "completed"
        assert row.valid
        assert row.output in LABELS
        assert row.agent == "classifier"
        assert row.skill == "classify_intent"
        assert row.model == "model"
        assert row.parameters
        assert row.input_tokens
        assert row.output_tokens
        assert row.latency_ms is not None
        assert row.latency_ms > 0
    raw = db.read_bytes() + (
        db.with_name("calls.db-wal").read_bytes() if db.with_name("calls.db-wal").exists() else b""
    )
    for secret in (b"jane.doe", b"7946", b"4111"):
        assert secret not in raw

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mesh",
            "convert",
            "analyze",
            "--db",
            str(db),
            "--json",
            "--min-size",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["calls"] == 4
    assert report["kept"] == 3
    assert report["dropped"]["duplicate"] == 1
    (cluster,) = report["clusters"]
    assert cluster["size"] == 3
    assert cluster["trainable"]
    assert cluster["output_kind"] == "labels"
    assert cluster["agents"] == {"classifier": 1.0}
    assert cluster["models"] == {"model": 1.0}
    assert cluster["name"].startswith("classify_intent")
    assert len(CallStore(db).cluster_calls(cluster["id"])) == 3
