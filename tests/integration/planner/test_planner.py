"""The planner as a real process on Ray, calling real agent processes through the registry."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import yaml
from a2a.client import ClientConfig, create_client
from a2a.helpers.proto_helpers import new_text_message
from a2a.types import a2a_pb2 as pb
from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict, ParseDict

from mesh.a2a.client import MeshClient, StaticReplicas, parts_value, restore_ints
from mesh.a2a.discovery import snapshot
from mesh.planner.store import RUNS_SCHEMA, STEPS_TABLE
from tests.conftest import ECHO_SERVICE
from tests.support.postgres import FAST_LEASES, connect, drop_agent_tasks, postgres_up
from tests.support.procs import ROOT, ServiceProcess, start_registry, start_service

pytestmark = pytest.mark.integration

PLANNER = ROOT / "services" / "planner"
BINDINGS = ["GRPC", "JSONRPC", "HTTP+JSON"]
FAST = {"SLMESH_HEARTBEAT_INTERVAL_S": "0.5", "SLMESH_REGISTRY_TTL_S": "3"}


class Mesh:
    """Registry, two echo replicas and a planner, as processes; stopped by PID at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[ServiceProcess] = []

    def boot(self) -> None:
        self.registry = start_registry(self.tmp, env=FAST)
        self.procs.append(self.registry)
        self.address = self.registry.grpc_target
        self.echoes = [self.agent(ECHO_SERVICE) for _ in range(2)]
        self.planner = self.start_planner(self.tmp / "planner-data")

    def start(self, service: Path, **env: str) -> ServiceProcess:
        proc = start_service(service, self.tmp, env={**FAST, **env}, ready_timeout=90.0)
        self.procs.append(proc)
        return proc

    def agent(self, service: Path, **env: str) -> ServiceProcess:
        return self.start(service, SLMESH_REGISTRY=self.address, **env)

    def start_planner(self, data_dir: Path) -> ServiceProcess:
        return self.agent(PLANNER, SLMESH_DATA_DIR=str(data_dir))

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.kill()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    world = Mesh(tmp_path_factory.mktemp("planner-mesh"))
    try:
        world.boot()
        yield world
    finally:
        world.stop()


def _config(binding: str) -> ClientConfig:
    def channel(url: str) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(url.split("://", 1)[-1])

    return ClientConfig(supported_protocol_bindings=[binding], grpc_channel_factory=channel)


def data_request(body: dict[str, Any]) -> pb.SendMessageRequest:
    part = pb.Part(data=ParseDict(body, struct_pb2.Value()), media_type="application/json")
    return pb.SendMessageRequest(
        message=pb.Message(role=pb.Role.ROLE_USER, message_id=str(time.time_ns()), parts=[part])
    )


def fan_out(items: list[str], **step: Any) -> dict[str, Any]:
    """An explicit plan: echo every item in parallel, then count them (fan-in)."""
    return {
        "plan": {
            "steps": [
                {
                    "id": "each",
                    "for_each": "$input.items",
                    "input": "$item",
                    "plan": {
                        "steps": [{"id": "say", "skill": "echo", "input": "$input", **step}],
                        "output": "$say",
                    },
                },
                {"id": "count", "fn": "identity", "input": {"n": "$input.n", "echoed": "$each"}},
            ],
            "output": "$count",
        },
        "input": {"items": items, "n": len(items)},
    }


async def planner_client(mesh: Mesh) -> MeshClient:
    return MeshClient(await snapshot(mesh.address, "planner"))


def result_of(task: pb.Task) -> Any:
    return parts_value(task.artifacts[-1].parts)


def error_of(task: pb.Task) -> str:
    return status_text(task.status)


def status_text(status: pb.TaskStatus) -> str:
    return " ".join(p.text for p in status.message.parts if p.HasField("text"))


@pytest.mark.parametrize("binding", BINDINGS)
async def test_official_client_runs_an_explicit_plan(mesh: Mesh, binding: str) -> None:
    client = await create_client(mesh.planner.http_url, _config(binding))
    try:
        events = [e async for e in client.send_message(data_request(fan_out(["a", "b", "c"])))]
        kinds = [e.WhichOneof("payload") for e in events]
        assert kinds[0] == "task"
        assert events[-1].status_update.status.state == pb.TaskState.TASK_STATE_COMPLETED
        progress = [
            restore_ints(MessageToDict(e.status_update.metadata)).get("slmesh")
            for e in events
            if e.HasField("status_update") and e.status_update.HasField("metadata")
        ]
        assert progress[0]["plan"]["source"] == "request"
        step_events = [ev for p in progress for ev in p["events"]]
        finished = {ev["step"] for ev in step_events if ev["event"] == "finished"}
        assert {"each[0].say", "each[1].say", "each[2].say", "count"} <= finished
        task = await client.get_task(pb.GetTaskRequest(id=events[0].task.id))
        assert task.status.state == pb.TaskState.TASK_STATE_COMPLETED
        assert result_of(task) == {"n": 3, "echoed": ["A", "B", "C"]}
        stats = restore_ints(MessageToDict(task.artifacts[-1].metadata))["agents"]
        assert stats["echo"]["calls"] == 3
        assert stats["echo"]["errors"] == 0
        listed = await client.list_tasks(pb.ListTasksRequest())
        assert task.id in {t.id for t in listed.tasks}
    finally:
        await client.close()


@pytest.mark.parametrize("binding", BINDINGS)
async def test_official_client_subscribes_to_and_cancels_a_running_plan(
    mesh: Mesh, binding: str
) -> None:
    client = await create_client(mesh.planner.http_url, _config(binding))
    try:
        stream = client.send_message(data_request(fan_out(["sleep:20"] * 3)))
        first = await anext(stream)
        task_id = first.task.id
        subscription = client.subscribe(pb.SubscribeToTaskRequest(id=task_id))
        assert (await asyncio.wait_for(anext(subscription), 10)).WhichOneof("payload") in {
            "task",
            "status_update",
        }
        canceled = await client.cancel_task(pb.CancelTaskRequest(id=task_id))
        assert canceled.status.state == pb.TaskState.TASK_STATE_CANCELED
        await stream.aclose()
        await subscription.aclose()
        task = await client.get_task(pb.GetTaskRequest(id=task_id))
        assert task.status.state == pb.TaskState.TASK_STATE_CANCELED
    finally:
        await client.close()


async def test_steps_are_spread_over_replicas_and_results_keep_their_order(mesh: Mesh) -> None:
    items = [f"item {i}" for i in range(40)]
    async with await planner_client(mesh) as client:
        response = await client.send_message("planner", data_request(fan_out(items)), timeout=120)
    assert response.task.status.state == pb.TaskState.TASK_STATE_COMPLETED, error_of(response.task)
    assert result_of(response.task)["echoed"] == [i.upper() for i in items]
    per_replica = []
    for echo in mesh.echoes:
        async with MeshClient(StaticReplicas.from_urls("echo", echo.http_url)) as client:
            per_replica.append(
                len((await client.list_tasks("echo", pb.ListTasksRequest(page_size=100))).tasks)
            )
    assert all(n > 0 for n in per_replica), per_replica


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (
            {"plan": {"steps": [{"id": "a", "skill": "no_such_skill"}]}},
            "unknown skill 'no_such_skill'",
        ),
        (
            {
                "plan": {
                    "steps": [
                        {"id": "a", "fn": "identity", "input": "$b"},
                        {"id": "b", "fn": "identity", "input": "$a"},
                    ]
                }
            },
            "cycle",
        ),
        ({"plan": {"steps": [{"id": "a"}]}}, "invalid_plan"),
        ({"plan": {"steps": [{"id": "a", "fn": "__import__"}]}}, "unknown function"),
        ({"workflow": "nope", "input": {}}, "unknown_workflow"),
        ({"workflow": "support_batch", "input": {"messages": "not a list"}}, "bad_input"),
        ({"unrelated": True}, "no_workflow"),
    ],
)
async def test_bad_plans_are_rejected_and_the_planner_keeps_serving(
    mesh: Mesh, body: dict[str, Any], code: str
) -> None:
    async with await planner_client(mesh) as client:
        response = await client.send_message("planner", data_request(body), timeout=30)
        assert response.task.status.state == pb.TaskState.TASK_STATE_REJECTED
        assert code in error_of(response.task)
        ok = await client.send_message("planner", data_request(fan_out(["still here"])), timeout=30)
    assert result_of(ok.task)["echoed"] == ["STILL HERE"]


async def test_text_is_routed_by_meaning_or_rejected(mesh: Mesh) -> None:
    async with await planner_client(mesh) as client:
        unrelated = await client.send_message(
            "planner",
            pb.SendMessageRequest(message=new_text_message("Integrate x squared from zero to one")),
            timeout=30,
        )
        assert unrelated.task.status.state == pb.TaskState.TASK_STATE_REJECTED
        assert "no_workflow" in error_of(unrelated.task)
        # The spec's planner SLM is not asked about text this far from every workflow.
        assert "planner_slm: not asked, the request is unrelated" in error_of(unrelated.task)
        # A support message routes to support_ticket, whose skills are not in this mesh: the
        # plan is refused before anything runs, naming the missing skill.
        support = await client.send_message(
            "planner",
            pb.SendMessageRequest(message=new_text_message("Where is my parcel ORD-123456?")),
            timeout=30,
        )
    assert support.task.status.state == pb.TaskState.TASK_STATE_REJECTED
    assert "unknown skill 'classify_intent'" in error_of(support.task)


async def test_a_failing_step_fails_the_task_and_names_the_step(mesh: Mesh) -> None:
    plan = {
        "plan": {
            "steps": [
                {"id": "slow", "skill": "echo", "input": "sleep:3", "timeout_s": 0.5, "retries": 1},
                {"id": "after", "fn": "identity", "input": "$slow"},
            ]
        }
    }
    async with await planner_client(mesh) as client:
        response = await client.send_message("planner", data_request(plan), timeout=60)
    assert response.task.status.state == pb.TaskState.TASK_STATE_FAILED
    message = error_of(response.task)
    assert "step slow failed" in message
    assert "deadline" in message


async def test_an_answer_that_breaks_the_expected_schema_fails_the_step(mesh: Mesh) -> None:
    plan = {
        "plan": {
            "steps": [
                {
                    "id": "ask",
                    "skill": "echo",
                    "input": "not json",
                    "retries": 1,
                    "expect": {"type": "object", "required": ["label"]},
                }
            ]
        }
    }
    async with await planner_client(mesh) as client:
        response = await client.send_message("planner", data_request(plan), timeout=60)
    assert response.task.status.state == pb.TaskState.TASK_STATE_FAILED
    assert "step ask failed" in error_of(response.task)
    assert "invalid output" in error_of(response.task)


async def test_a_map_with_continue_keeps_going_past_failed_items(mesh: Mesh) -> None:
    body = fan_out(["ok", "sleep:3 too slow", "fine"], timeout_s=1.0, retries=0)
    body["plan"]["steps"][0]["on_error"] = "continue"
    async with await planner_client(mesh) as client:
        response = await client.send_message("planner", data_request(body), timeout=60)
    assert response.task.status.state == pb.TaskState.TASK_STATE_COMPLETED
    echoed = result_of(response.task)["echoed"]
    assert echoed[0] == "OK"
    assert echoed[2] == "FINE"
    assert echoed[1]["error"]["step"] == "each[1].say"


async def test_cancel_stops_a_running_plan(mesh: Mesh) -> None:
    async with await planner_client(mesh) as client:
        stream = client.send_streaming_message(
            "planner", data_request(fan_out(["sleep:20"] * 4)), timeout=60
        )
        first = await anext(stream)
        task_id = first.task.id
        canceled = await client.cancel_task("planner", task_id, timeout=10)
        assert canceled.status.state == pb.TaskState.TASK_STATE_CANCELED
        await stream.aclose()
        task = await client.get_task("planner", task_id)
        assert task.status.state == pb.TaskState.TASK_STATE_CANCELED
        ok = await client.send_message(
            "planner", data_request(fan_out(["after cancel"])), timeout=30
        )
    assert result_of(ok.task)["echoed"] == ["AFTER CANCEL"]


async def test_killing_an_agent_replica_mid_run_loses_no_step(mesh: Mesh) -> None:
    """kill -9 one echo replica while a fan-out runs: every item still completes."""
    items = [f"sleep:0.4 n{i}" for i in range(24)]
    async with await planner_client(mesh) as client:
        run = asyncio.create_task(
            client.send_message("planner", data_request(fan_out(items)), timeout=180)
        )
        await asyncio.sleep(1.0)
        victim = mesh.echoes.pop(0)
        victim.kill()
        response = await run
    assert response.task.status.state == pb.TaskState.TASK_STATE_COMPLETED, error_of(response.task)
    assert result_of(response.task)["echoed"] == [i.upper() for i in items]


async def test_a_restarted_planner_resumes_without_rerunning_finished_steps(
    tmp_path: Path, mesh: Mesh
) -> None:
    """kill -9 the planner mid-plan; a new one on the same data dir finishes the accepted task."""
    tally = tmp_path / "tally"
    tally.mkdir()
    (tally / "agent.yaml").write_text(
        (ECHO_SERVICE / "agent.yaml")
        .read_text()
        .replace("name: echo", "name: tally")
        .replace("- id: echo", "- id: tally")
    )
    tally_proc = mesh.agent(tally, SLMESH_DATA_DIR=str(tmp_path / "tally-data"))
    data_dir = tmp_path / "planner-data"
    planner = mesh.start_planner(data_dir)
    steps = [{"id": f"s{i}", "skill": "tally", "input": f"sleep:0.8 step {i}"} for i in range(6)]
    for i in range(1, 6):
        steps[i]["when"] = f"$s{i - 1}"  # a chain: one step at a time
    body = {"plan": {"steps": steps, "output": "$s5"}}
    async with MeshClient(StaticReplicas.from_urls("planner", planner.http_url)) as client:
        first = await client.send_message(
            "planner",
            pb.SendMessageRequest(
                message=data_request(body).message,
                configuration=pb.SendMessageConfiguration(return_immediately=True),
            ),
            timeout=30,
        )
        task_id = first.task.id
    db = data_dir / "planner-planner.sqlite"
    deadline = time.monotonic() + 60
    while _done_steps(db, task_id) < 2:
        assert time.monotonic() < deadline, "the plan made no progress"
        await asyncio.sleep(0.1)
    planner.kill()
    done_before = _done_steps(db, task_id)
    restarted = mesh.start_planner(data_dir)
    async with MeshClient(StaticReplicas.from_urls("planner", restarted.http_url)) as client:
        deadline = time.monotonic() + 90
        while True:
            task = await client.get_task("planner", task_id)
            if task.status.state in (
                pb.TaskState.TASK_STATE_COMPLETED,
                pb.TaskState.TASK_STATE_FAILED,
            ):
                break
            assert time.monotonic() < deadline, (
                f"not resumed: {pb.TaskState.Name(task.status.state)}"
            )
            await asyncio.sleep(0.2)
    assert task.status.state == pb.TaskState.TASK_STATE_COMPLETED, error_of(task)
    assert result_of(task) == "SLEEP:0.8 STEP 5"
    async with MeshClient(StaticReplicas.from_urls("tally", tally_proc.http_url)) as client:
        calls = (await client.list_tasks("tally", pb.ListTasksRequest(page_size=100))).tasks
    # Steps recorded before the crash ran once; at most the one in flight at the kill ran twice.
    assert done_before >= 2
    assert 6 <= len(calls) <= 7


def _planner_named(tmp_path: Path, name: str) -> Path:
    """The planner's service folder under another agent name (its own tables, not listed as
    ``planner``)."""
    spec = yaml.safe_load((PLANNER / "agent.yaml").read_text())
    spec["name"] = name
    spec["options"]["workflows"] = str(PLANNER / spec["options"]["workflows"])
    if spec["options"].get("generator"):  # the planner SLM's folder, relative to the real spec
        spec["options"]["generator"]["model"] = str(
            (PLANNER / spec["options"]["generator"]["model"]).resolve()
        )
    folder = tmp_path / name
    folder.mkdir()
    (folder / "agent.yaml").write_text(yaml.safe_dump(spec))
    return folder


async def _shared_done_steps(planner: str, task_id: str) -> int:
    """Steps of a run recorded in the shared run store (PostgreSQL database ``test``)."""
    conn = await connect()
    try:
        found = await conn.fetchval(
            f"SELECT count(*) FROM {STEPS_TABLE} WHERE planner = $1 AND task_id = $2 "
            "AND status = 'ok'",
            planner,
            task_id,
        )
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()
    return int(found)


def _done_steps(db: Path, task_id: str) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT count(*) FROM steps WHERE task_id = ? AND status = 'ok'", (task_id,)
        ).fetchone()[0]


async def test_the_planner_slm_writes_a_plan_when_no_workflow_matches(
    tmp_path: Path, mesh: Mesh
) -> None:
    """A planner whose spec names a planner SLM (here a tiny random model): its plan is
    constrained to the registered skills, so even an untrained model's plan runs."""
    from tests.support.tiny_slm import save_tiny_model

    service = tmp_path / "planner"
    shutil.copytree(PLANNER, service)
    spec = yaml.safe_load((service / "agent.yaml").read_text())
    spec["options"]["generator"] = {
        "model": str(save_tiny_model(tmp_path / "model", context=1024)),
        "max_steps": 3,
    }
    (service / "agent.yaml").write_text(yaml.safe_dump(spec))
    planner = mesh.agent(service, SLMESH_DATA_DIR=str(tmp_path / "data"))
    text = "Integrate x squared from zero to one"
    async with MeshClient(StaticReplicas.from_urls("planner", planner.http_url)) as client:
        events = [
            e
            async for e in client.send_streaming_message(
                "planner", pb.SendMessageRequest(message=new_text_message(text)), timeout=120
            )
        ]
    final = events[-1].status_update.status
    assert final.state == pb.TaskState.TASK_STATE_COMPLETED, [p.text for p in final.message.parts]
    plan_info = next(
        restore_ints(MessageToDict(e.status_update.metadata))["slmesh"]["plan"]
        for e in events
        if e.HasField("status_update") and "plan" in str(e.status_update.metadata)
    )
    assert plan_info["source"] == "planner_slm"
    artifact = next(e.artifact_update.artifact for e in events if e.HasField("artifact_update"))
    result = parts_value(artifact.parts)
    assert result["s0"] == text.upper()  # step 0 may only bind to the request text
    assert set(restore_ints(MessageToDict(artifact.metadata))["agents"]) <= {
        "echo",
        "tally",
    }  # what is registered


async def test_a_planner_task_is_taken_over_by_another_planner_replica(
    tmp_path: Path, mesh: Mesh
) -> None:
    """Two planner replicas share a PostgreSQL task store (and so their runs); the one running
    a chain is killed; the other claims the expired lease and resumes the run from its
    recorded steps, and a subscriber on it gets the completed result."""
    if not postgres_up():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    await RUNS_SCHEMA.upgrade("postgresql://127.0.0.1:5432/test")  # as `slmesh db upgrade`
    name = f"planner-{uuid.uuid4().hex[:8]}"
    folder = _planner_named(tmp_path, name)
    try:
        first, second = (
            mesh.agent(folder, SLMESH_DATA_DIR=str(tmp_path / f"data-{i}"), **FAST_LEASES)
            for i in range(2)
        )
        steps = [{"id": f"s{i}", "skill": "echo", "input": f"sleep:0.6 step {i}"} for i in range(5)]
        for i in range(1, 5):
            steps[i]["when"] = f"$s{i - 1}"
        body = {"plan": {"steps": steps, "output": "$s4"}}
        async with MeshClient(StaticReplicas.from_urls(name, first.http_url)) as client:
            task_id = (
                await client.send_message(
                    name,
                    pb.SendMessageRequest(
                        message=data_request(body).message,
                        configuration=pb.SendMessageConfiguration(return_immediately=True),
                    ),
                    timeout=30,
                )
            ).task.id
            deadline = time.monotonic() + 60
            while await _shared_done_steps(name, task_id) < 2:
                assert time.monotonic() < deadline, "the plan made no progress"
                await asyncio.sleep(0.1)
        first.kill_tree()
        recorded = await _shared_done_steps(name, task_id)
        client = await create_client(second.http_url, _config("GRPC"))
        try:
            notices, final = [], None
            async with asyncio.timeout(60):
                async for event in client.subscribe(pb.SubscribeToTaskRequest(id=task_id)):
                    if event.HasField("status_update"):
                        final = event.status_update.status
                        if status_text(final).startswith("taken over"):
                            notices.append(final)
            assert len(notices) == 1
            assert final is not None
            assert final.state == pb.TaskState.TASK_STATE_COMPLETED
            task = await client.get_task(pb.GetTaskRequest(id=task_id))
            assert result_of(task) == "SLEEP:0.6 STEP 4"
            assert MessageToDict(task.metadata)["slmesh.takeover"]["count"] == 1
            assert f"resuming task {task_id} ({recorded} steps already done)" in second.output()
        finally:
            await client.close()
    finally:
        await drop_agent_tasks(name)


async def test_an_answer_that_fails_its_check_is_replaced_by_the_fallback(mesh: Mesh) -> None:
    """A skill step's ``check`` refuses the agent's answer; with one provider the ``fallback``
    builds the value, and the escalation is on the result (agent answer, reason, target)."""
    from mesh.support.replies import write_reply

    facts = {
        "intent": "order_status", "tool": "get_order", "ok": True, "customer": "Ana Ruiz",
        "order_id": "ORD-123456", "status": "shipped", "product": "Desk Lamp",
        "amount": "34.50", "currency": "EUR",
    }  # fmt: skip
    plan = {
        "plan": {
            "steps": [
                {
                    "id": "draft",
                    "skill": "echo",
                    "input": "$input",
                    "check": "support.check_reply",
                    "fallback": "support.safe_reply",
                }
            ],
            "output": "$draft",
        },
        "input": facts,
    }
    async with await planner_client(mesh) as client:
        response = await client.send_message("planner", data_request(plan), timeout=60)
    task = response.task
    assert task.status.state == pb.TaskState.TASK_STATE_COMPLETED, error_of(task)
    assert result_of(task) == write_reply(facts)
    metadata = restore_ints(MessageToDict(task.artifacts[-1].metadata))
    [escalation] = metadata["escalations"]
    assert escalation["step"] == "draft"
    assert escalation["from"] == "echo"
    assert escalation["to"] == "fn:support.safe_reply"
    assert "check support.check_reply" in escalation["reason"]
    assert metadata["cost"]["escalations"] == 1


async def test_a_check_or_fallback_naming_no_planner_function_is_refused(mesh: Mesh) -> None:
    body = {
        "plan": {"steps": [{"id": "a", "skill": "echo", "check": "os.system"}]},
        "input": "x",
    }
    async with await planner_client(mesh) as client:
        response = await client.send_message("planner", data_request(body), timeout=30)
    assert response.task.status.state == pb.TaskState.TASK_STATE_REJECTED
    assert "unknown function 'os.system'" in error_of(response.task)


async def test_an_answer_that_fails_its_check_with_no_fallback_fails_the_step(mesh: Mesh) -> None:
    plan = {
        "plan": {
            "steps": [
                {"id": "draft", "skill": "echo", "input": "$input", "check": "support.check_reply"}
            ],
            "output": "$draft",
        },
        "input": {"intent": "order_status", "tool": "get_order", "ok": False},
    }
    async with await planner_client(mesh) as client:
        response = await client.send_message("planner", data_request(plan), timeout=60)
    assert response.task.status.state == pb.TaskState.TASK_STATE_FAILED
    assert "check support.check_reply" in error_of(response.task)


async def test_a_planner_task_pushes_its_updates_to_a_webhook(
    tmp_path: Path, mesh: Mesh, receiver: tuple[int, Path, Path, Path]
) -> None:
    """The planner is served by the shared agent server: with push on, a plan's task sends
    its updates, signed, to the config given with the request (through its SQLite outbox)."""
    port, log, ca, key_file = receiver
    name = f"planner-{uuid.uuid4().hex[:8]}"
    planner = mesh.agent(
        _planner_named(tmp_path, name),
        SLMESH_DATA_DIR=str(tmp_path / "data"),
        SLMESH_PUSH_NOTIFICATIONS="true",
        SLMESH_PUSH_ALLOW="127.0.0.1",
        SLMESH_PUSH_CA_FILE=str(ca),
        SLMESH_SIGNING_KEYS=str(key_file),
    )
    body = {"plan": {"steps": [{"id": "say", "skill": "echo", "input": "pushed"}]}}
    request = data_request(body)
    request.configuration.task_push_notification_config.url = f"https://127.0.0.1:{port}/ok"
    request.configuration.task_push_notification_config.token = "planner-token"
    async with MeshClient(StaticReplicas.from_urls(name, planner.http_url)) as client:
        task = (await client.send_message(name, request, timeout=60)).task
    assert task.status.state == pb.TaskState.TASK_STATE_COMPLETED, error_of(task)

    def hits() -> list[dict[str, Any]]:
        return [json.loads(line) for line in log.read_text().splitlines() if line]

    deadline = time.monotonic() + 20
    while not any("TASK_STATE_COMPLETED" in json.dumps(h["body"]) for h in hits()):
        assert time.monotonic() < deadline, hits()
        await asyncio.sleep(0.1)
    pushed = hits()
    assert {h["token"] for h in pushed} == {"planner-token"}
    assert all(h["verified"] for h in pushed)
    assert task.id in json.dumps(pushed[-1]["body"])
    assert "PUSHED" in json.dumps(pushed)  # the plan's result went out too
