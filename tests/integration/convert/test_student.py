"""A LoRA student deployed by `slmesh convert deploy` serves as a real agent process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from a2a.helpers import get_data_parts
from a2a.types import a2a_pb2 as pb
from google.protobuf.json_format import MessageToDict
from typer.testing import CliRunner

from mesh.a2a.client import MeshClient, StaticReplicas, restore_ints
from mesh.cli import app
from mesh.convert.lora import StudentPlan, train_student
from mesh.slm.loading import load_model
from tests.support.procs import ServiceProcess
from tests.support.tiny_cluster import LABELS, record_cluster
from tests.support.tiny_slm import save_tiny_model

pytestmark = pytest.mark.integration


@pytest.fixture
def deployed(tmp_path: Path) -> tuple[Path, Path]:
    """``(service folder, base)``: a tiny student trained and deployed with the CLI."""
    base = save_tiny_model(tmp_path / "models" / "base", "llama", "char", hidden_size=32)
    store = record_cluster(tmp_path / "calls.db")
    train_student(
        store,
        "intents",
        str(base),
        tmp_path / "models" / "students" / "intents",
        plan=StudentPlan(
            steps=20, batch_size=8, warmup_steps=2, checkpoint_every_s=0, compare_base=False
        ),
    )
    store.close()
    services = tmp_path / "services"
    args = [
        "convert",
        "deploy",
        str(tmp_path / "models" / "students" / "intents"),
        "--name",
        "intents-student",
        "--services-dir",
        str(services),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(app, args).exit_code == 1  # refuses to overwrite
    return services / "intents-student", base


async def test_deployed_student_answers_a_label_with_its_own_usage(
    spawn: Callable[..., ServiceProcess], deployed: tuple[Path, Path]
) -> None:
    service, base = deployed
    agent = spawn(service, env={"SLMESH_TASK_STORE": "memory"})
    source = StaticReplicas.from_urls(
        "intents-student", agent.http_url, f"grpc://{agent.grpc_target}"
    )
    async with MeshClient(source) as client:
        response = await client.send_text(
            "intents-student", "please refund order ORD-5", timeout=60
        )
    task = response.task
    assert task.status.state == pb.TaskState.TASK_STATE_COMPLETED, task.status
    (artifact,) = task.artifacts
    (value,) = [restore_ints(v) for v in get_data_parts(artifact.parts)]
    assert value["label"] in LABELS
    usage = MessageToDict(artifact.metadata)["usage"]
    assert usage["model"] == "intents"
    assert int(usage["parameters"]) == load_model(str(base)).parameters  # merged: the base's count
