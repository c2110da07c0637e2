"""``python -m mesh.probe``, the containers' HEALTHCHECK: exit 0 while the service serves."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.conftest import ECHO_SERVICE
from tests.support.procs import ROOT, ServiceProcess, free_port

pytestmark = pytest.mark.integration


def _probe(port: int) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SLMESH_GRPC_PORT": str(port)}
    return subprocess.run(
        [sys.executable, "-m", "mesh.probe"], env=env, check=False, timeout=60
    ).returncode


def test_probe_follows_the_grpc_health_service(spawn: Callable[..., ServiceProcess]) -> None:
    proc = spawn(ECHO_SERVICE, env={"SLMESH_TASK_STORE": "memory"})
    assert _probe(proc.grpc_port) == 0
    proc.terminate()
    assert _probe(proc.grpc_port) == 1
    assert _probe(free_port()) == 1
