"""The planner's Ray workers are entry points too: their setup hook calls mesh.a2a.install()
before a step runner (whose module imports the mesh client) is unpickled there."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh.config import Settings
from mesh.planner.runtime import RayOptions, RayRuntime

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def test_step_runners_run_a2a_sdk_without_span_wrappers(tmp_path: Path) -> None:
    runtime = RayRuntime(
        Settings(data_dir=tmp_path), RayOptions(runners=2, num_cpus=1, namespace="install-test")
    )
    runtime.start()
    try:
        assert await runtime.ready()
    finally:
        await runtime.stop()
