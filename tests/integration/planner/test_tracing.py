"""One trace per planner task: planner -> Ray step workers -> agent hops, across real processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from a2a.types import a2a_pb2 as pb

from mesh.a2a.client import MeshClient, StaticReplicas
from tests.conftest import ECHO_SERVICE
from tests.integration.planner.test_planner import PLANNER, data_request, result_of
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.procs import ServiceProcess, start_registry, start_service

pytestmark = pytest.mark.integration


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


def _traced(otlp: OtlpReceiver) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


async def test_a_planner_task_is_one_trace_through_ray_and_agents(
    tmp_path: Path, otlp: OtlpReceiver
) -> None:
    procs: list[ServiceProcess] = []
    try:
        registry = start_registry(tmp_path)
        procs.append(registry)
        env = {"SLMESH_REGISTRY": registry.grpc_target, **_traced(otlp)}
        procs.append(start_service(ECHO_SERVICE, tmp_path, env=env))
        planner = start_service(PLANNER, tmp_path, env=env, ready_timeout=90.0)
        procs.append(planner)
        body = {
            "plan": {
                "steps": [
                    {"id": "first", "skill": "echo", "input": "hello"},
                    {"id": "second", "skill": "echo", "input": "$first"},
                    {"id": "shout", "fn": "identity", "input": {"said": "$second"}},
                ],
                "output": "$shout",
            }
        }
        async with MeshClient(StaticReplicas.from_urls("planner", planner.http_url)) as client:
            response = await client.send_message("planner", data_request(body), timeout=60)
        assert response.task.status.state == pb.TaskState.TASK_STATE_COMPLETED
        assert result_of(response.task) == {"said": "HELLO"}
        task_id = response.task.id
        spans = await _wait_for(
            otlp,
            lambda got: (
                {"step first", "step second", "step shout", "execute_plan plan", "create_plan"}
                <= {s.name for s in got}
                and sum(s.name == "invoke_agent echo" for s in got) >= 2
            ),
        )
    finally:
        for proc in procs:
            proc.kill()

    root = next(
        s
        for s in spans
        if s.name == "invoke_agent planner" and s.attributes.get("a2a.task.id") == task_id
    )
    trace = [s for s in spans if s.trace_id == root.trace_id]
    by_id = {s.span_id: s for s in trace}
    named = {s.name: s for s in trace}
    assert root.parent_id == ""  # the caller had no trace: the planner's server span starts it
    execute = named["execute_plan plan"]
    assert by_id[execute.parent_id] is root
    assert execute.attributes["mesh.plan.source"] == "request"
    assert named["create_plan"].parent_id == root.span_id
    for step in ("first", "second", "shout"):  # spans made in the Ray worker process
        assert named[f"step {step}"].parent_id == execute.span_id
    assert named["step first"].attributes["gen_ai.agent.name"] == "echo"
    agent_hops = [s for s in trace if s.name == "invoke_agent echo"]
    assert len(agent_hops) == 2
    assert all(s.service == "echo" for s in agent_hops)
    for hop in agent_hops:  # agent span <- client span <- step span
        client_span = by_id[hop.parent_id]
        assert client_span.service == "planner"
        assert by_id[client_span.parent_id].name in {"step first", "step second"}


async def _wait_for(otlp: OtlpReceiver, done: object, timeout: float = 30.0) -> list[ReceivedSpan]:
    deadline = time.monotonic() + timeout
    while True:
        spans = otlp.snapshot()
        if done(spans):  # type: ignore[operator]
            return spans
        assert time.monotonic() < deadline, sorted({s.name for s in spans})
        await asyncio.sleep(0.2)
