"""The planner's SLM-first router and cost ledger, through real processes.

Two SLM agents offer one skill: a small model and a larger one (tiny random Llamas of
different widths, constrained to the same labels). The planner sends each step to the
small one and escalates to the large one when the small one's confidence is under its
card's threshold; the result carries every escalation and the task's cost ledger, and the
planner tells the conversion loop's dataset store which answers it used.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from a2a.types import a2a_pb2 as pb
from google.protobuf.json_format import MessageToDict

from mesh.a2a.client import MeshClient, StaticReplicas, restore_ints
from mesh.recording.store import CallStore
from mesh.registry import RegistryClient
from tests.integration.planner.test_planner import data_request, result_of
from tests.support.procs import ROOT, ServiceProcess, start_registry, start_service
from tests.support.tiny_slm import save_tiny_model

pytestmark = pytest.mark.integration

FAST = {"SLMESH_HEARTBEAT_INTERVAL_S": "0.5", "SLMESH_REGISTRY_TTL_S": "3"}
LABELS = [
    "order_status",
    "track_shipment",
    "cancel_order",
    "refund_request",
    "change_address",
    "general_question",
]
MESSAGES = [
    "Where is my order ORD-100231?",
    "Please cancel ORD-100232.",
    "Do you ship to Canada?",
    "Refund 19.99 for the broken mug",
]


def _agent_spec(folder: Path, name: str, model: Path, escalate_below: float | None) -> Path:
    options: dict[str, Any] = {
        "model": str(model),
        "prompt": "Classify.\nMessage: {input}\nIntent: ",
        "output": {"labels": LABELS},
        "max_new_tokens": 24,
    }
    if escalate_below is not None:
        options["escalate_below"] = escalate_below
    spec = {
        "name": name,
        "kind": "agent",
        "description": f"{name} (test)",
        "executor": "mesh.slm.executor:SLMExecutor",
        "skills": [{"id": "classify_intent", "name": "Classify intent", "description": "intent"}],
        "options": options,
    }
    folder.mkdir(parents=True)
    (folder / "agent.yaml").write_text(yaml.safe_dump(spec))
    return folder


class RouterMesh:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[ServiceProcess] = []
        self.record_db = tmp / "calls.sqlite"

    def start(self, service: Path, **env: str) -> ServiceProcess:
        proc = start_service(
            service,
            self.tmp,
            env={**FAST, "SLMESH_REGISTRY": self.address, **env},
            ready_timeout=90.0,
        )
        self.procs.append(proc)
        return proc

    def boot(self) -> None:
        registry = start_registry(self.tmp, env=FAST)
        self.procs.append(registry)
        self.address = registry.grpc_target
        self.small_model = save_tiny_model(self.tmp / "small", hidden_size=32, seed=1)
        large_model = save_tiny_model(self.tmp / "large", hidden_size=64, seed=2)
        self.start(_agent_spec(self.tmp / "svc-large", "intent-large", large_model, None))
        self.planner = self.start(
            ROOT / "services" / "planner",
            SLMESH_DATA_DIR=str(self.tmp / "planner"),
            SLMESH_RECORD_DB=str(self.record_db),
        )

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.kill()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterMesh]:
    world = RouterMesh(tmp_path_factory.mktemp("router-mesh"))
    try:
        world.boot()
        yield world
    finally:
        world.stop()


def _classify_all() -> pb.SendMessageRequest:
    return data_request(
        {
            "plan": {
                "steps": [
                    {
                        "id": "each",
                        "for_each": "$input.messages",
                        "input": "$item",
                        "plan": {
                            "steps": [
                                {"id": "intent", "skill": "classify_intent", "input": "$input"}
                            ],
                            "output": "$intent",
                        },
                    }
                ],
                "output": "$each",
            },
            "input": {"messages": MESSAGES},
        }
    )


async def _run(mesh: RouterMesh) -> tuple[list[Any], dict[str, Any]]:
    async with MeshClient(StaticReplicas.from_urls("planner", mesh.planner.http_url)) as client:
        response = await client.send_message("planner", _classify_all(), timeout=120)
    task = response.task
    assert task.status.state == pb.TaskState.TASK_STATE_COMPLETED, MessageToDict(task.status)
    return result_of(task), restore_ints(MessageToDict(task.artifacts[-1].metadata))


async def _registered(mesh: RouterMesh, agent: str, present: bool = True) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        async with RegistryClient(mesh.address) as client:
            found = bool(await client.list(agent=agent))
        if found == present:
            await asyncio.sleep(1.0)  # the planner's registry view follows within a watch event
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{agent} {'never registered' if present else 'still registered'}")


@contextlib.asynccontextmanager
async def _small_agent(mesh: RouterMesh, name: str, escalate_below: float) -> AsyncIterator[None]:
    """The small model as agent ``name`` beside the large one, while the block runs."""
    proc = mesh.start(_agent_spec(mesh.tmp / f"svc-{name}", name, mesh.small_model, escalate_below))
    try:
        await _registered(mesh, name)
        yield
    finally:
        proc.terminate()
        await _registered(mesh, name, present=False)


async def test_a_confident_small_model_answers_every_step(mesh: RouterMesh) -> None:
    async with _small_agent(mesh, "intent-small", -50.0):
        labels, meta = await _run(mesh)
    assert len(labels) == len(MESSAGES)
    assert all(label["label"] in LABELS for label in labels)
    assert set(meta["agents"]) == {"intent-small"}
    cost = meta["cost"]
    assert cost["routed_steps"] == len(MESSAGES)
    assert cost["first_choice_share"] == 1.0
    assert cost["escalations"] == 0
    assert meta["escalations"] == []
    [row] = cost["models"]
    small_params, large_params = _params(mesh, "small"), _params(mesh, "large")
    assert row["parameters"] == small_params
    assert row["calls"] == len(MESSAGES)
    assert row["flops"] == 2 * small_params * (row["input_tokens"] + row["output_tokens"])
    # Same tokenizer and prompt: the baseline prices the same tokens with the larger model.
    assert cost["ratio"] == pytest.approx(large_params / small_params, rel=1e-3)


async def test_an_unsure_small_model_escalates_to_the_larger_one(mesh: RouterMesh) -> None:
    async with _small_agent(mesh, "intent-strict", -1e-6):
        labels, meta = await _run(mesh)
    assert all(label["label"] in LABELS for label in labels)
    cost = meta["cost"]
    assert cost["escalations"] == len(MESSAGES)
    assert cost["first_choice_share"] == 0.0
    escalations = meta["escalations"]
    assert {(e["from"], e["to"]) for e in escalations} == {("intent-strict", "intent-large")}
    assert all(e["reason"].startswith("low confidence: mean logprob") for e in escalations)
    assert sorted(e["step"] for e in escalations) == [
        f"each[{i}].intent" for i in range(len(MESSAGES))
    ]
    assert {row["parameters"] for row in cost["models"]} == {
        _params(mesh, "small"),
        _params(mesh, "large"),
    }
    assert cost["ratio"] < 1  # every step paid for both models: escalation is not free
    # The dataset store learns which answers were used (the large model's) and which were passed
    # over.
    with CallStore(mesh.record_db) as store:
        verdicts = store.verdicts()
    assert sorted(verdicts.values()).count(False) >= len(MESSAGES)
    assert sorted(verdicts.values()).count(True) >= len(MESSAGES)


def _params(mesh: RouterMesh, name: str) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(mesh.tmp / name))
    return sum(p.numel() for p in model.parameters())
