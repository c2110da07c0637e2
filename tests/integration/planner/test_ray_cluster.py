"""The planner joins an existing Ray cluster, as the README's "Joining a Ray cluster" says.

``ray start --head`` runs on 127.0.0.1 with token authentication on, its own ports and
temporary folder (and ``HOME``, so no token lands in the real ``~/.ray``), stopped by PID. A
planner given ``RAY_ADDRESS``, ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN_PATH`` runs an
order lookup on it; one without the token exits with one line saying what to set. CI cost:
about 40 s (the cluster's start, ~12 s, and one planner start are most of it).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from a2a.types import a2a_pb2 as pb
from google.protobuf import struct_pb2
from google.protobuf.json_format import ParseDict

from mesh.a2a.client import MeshClient, parts_value
from mesh.a2a.discovery import snapshot
from tests.support.procs import ROOT, ServiceProcess, free_port, start_registry, start_service

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

RAY = Path(sys.executable).with_name("ray")
#: Ray binds every node address to 127.0.0.1 (Ray's switch for single-machine clusters).
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
#: Ports `ray start` would otherwise take at fixed defaults (dashboard 8265, client 10001...).
PORT_FLAGS = (
    "--dashboard-port",
    "--ray-client-server-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
    "--node-manager-port",
    "--object-manager-port",
)


@dataclass
class RayHead:
    address: str
    token_path: Path
    home: Path
    popen: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    """``ray start --head --block`` with token auth; its process group is killed at the end."""
    # A short folder: Ray's Unix sockets live under it (sun_path holds 107 bytes).
    root = Path(tempfile.mkdtemp(prefix="slray", dir="/tmp"))
    token_path = root / "token"
    token_path.write_text(secrets.token_hex(32))
    home = root / "home"
    home.mkdir()
    address = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        **LOOPBACK_ONLY,
        "HOME": str(home),
        "PYTHONPATH": str(ROOT),  # the step runners' workers import mesh (an image: installed)
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_path),
    }
    env.pop("RAY_ADDRESS", None)
    ports = [arg for flag in PORT_FLAGS for arg in (flag, str(free_port()))]
    log = root / "ray-start.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            [str(RAY), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
             "--port", address.rsplit(":", 1)[1], "--temp-dir", str(root / "t"),
             "--num-cpus", "1", "--include-dashboard", "false", "--disable-usage-stats", *ports],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    head = RayHead(address, token_path, home, popen, log)
    try:
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in log.read_text(errors="replace"):
            assert popen.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
        yield head
    finally:
        # The whole group: `ray start`, the GCS, the raylet and its workers (a throwaway cluster).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()
        shutil.rmtree(root, ignore_errors=True)


def _data_request(body: dict[str, Any]) -> pb.SendMessageRequest:
    part = pb.Part(data=ParseDict(body, struct_pb2.Value()), media_type="application/json")
    message = pb.Message(role=pb.Role.ROLE_USER, message_id=secrets.token_hex(8), parts=[part])
    return pb.SendMessageRequest(message=message)


def _planner_env(head: RayHead, registry: str, **extra: str) -> dict[str, str]:
    """What the README tells a user to export, plus the test's loopback and HOME."""
    return {
        **LOOPBACK_ONLY,
        "HOME": str(head.home),
        "SLMESH_REGISTRY": registry,
        "RAY_ADDRESS": head.address,
        **extra,
    }


def _ray_processes_in_session(sid: int) -> list[str]:
    """Ray daemons (gcs_server, raylet) in the session a process leads: its own Ray."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.getsid(int(entry.name)) != sid:
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "gcs_server" in cmdline or "raylet" in cmdline:
                found.append(cmdline)
    return found


async def test_the_planner_runs_a_ticket_on_an_existing_token_cluster(
    ray_head: RayHead, tmp_path: Path
) -> None:
    procs: list[ServiceProcess] = []
    try:
        registry = start_registry(tmp_path)
        procs.append(registry)
        env = {"SLMESH_REGISTRY": registry.grpc_target}
        procs.append(start_service(ROOT / "services" / "tools", tmp_path, env=env))
        planner = start_service(
            ROOT / "services" / "planner",
            tmp_path,
            env=_planner_env(
                ray_head,
                registry.grpc_target,
                RAY_AUTH_MODE="token",
                RAY_AUTH_TOKEN_PATH=str(ray_head.token_path),
            ),
            ready_timeout=120.0,
        )
        procs.append(planner)
        assert _ray_processes_in_session(planner.popen.pid) == []

        lookup = {
            "plan": {
                "steps": [
                    {
                        "id": "order",
                        "skill": "execute_tool",
                        "input": {"name": "get_order", "arguments": {"order_id": "$input.id"}},
                    }
                ],
                "output": "$order",
            },
            "input": {"id": "ORD-621221"},
        }
        async with MeshClient(await snapshot(registry.grpc_target, "planner")) as client:
            task = (await client.send_message("planner", _data_request(lookup), timeout=90)).task
        assert task.status.state == pb.TaskState.TASK_STATE_COMPLETED, task.status
        result = parts_value(task.artifacts[-1].parts)
        assert result["ok"] is True, result
        assert result["order"]["order_id"] == "ORD-621221"
        assert f"connected ({ray_head.address})" in planner.output()
    finally:
        for proc in reversed(procs):
            proc.terminate()


def test_a_planner_without_the_token_exits_with_one_line_saying_what_to_set(
    ray_head: RayHead, tmp_path: Path
) -> None:
    registry = start_registry(tmp_path)
    try:
        planner = start_service(
            ROOT / "services" / "planner",
            tmp_path,
            env=_planner_env(ray_head, registry.grpc_target, RAY_AUTH_MODE="token"),
            wait=False,
        )
        assert planner.popen.wait(60) == 1
        output = planner.output()
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert errors == [
            f"error: cannot join the Ray cluster at {ray_head.address}: it needs a token the "
            "planner lacks; set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN, "
            "or in a file named by RAY_AUTH_TOKEN_PATH (`ray get-auth-token` on the head node "
            "prints it)"
        ]
        assert "Traceback" not in output
    finally:
        registry.kill()
