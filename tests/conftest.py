"""Shared fixtures: real processes, stopped by PID even when a test fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mesh.a2a import install
from tests.support.procs import ROOT, ServiceProcess, died_unexpectedly, start_service

ECHO_SERVICE = ROOT / "tests" / "support" / "echo_service"


def pytest_configure(config: pytest.Config) -> None:
    """The test session is an entry point: mesh.a2a.install() before any test module imports
    a2a-sdk, as the CLI does."""
    install()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Factory: ``spawn(service_dir, env=...)`` starts a service; all are stopped at teardown."""
    started: list[ServiceProcess] = []

    def _spawn(service: str | Path, **kwargs: Any) -> ServiceProcess:
        proc = start_service(service, tmp_path, **kwargs)
        started.append(proc)
        return proc

    yield _spawn
    for proc in started:
        proc.kill()


@pytest.fixture
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No telemetry variable (OTEL_*, nor its SLMESH_ aliases) comes from outside the test,
    into its settings or the processes it starts."""
    import os

    for name in list(os.environ):
        if name.startswith(("OTEL_", "SLMESH_OTEL", "SLMESH_OTLP", "SLMESH_TRACE")):
            monkeypatch.delenv(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failing test's report carries the logs of any service that died under it."""
    report = yield
    if report.failed:
        for i, text in enumerate(died_unexpectedly()):
            report.sections.append((f"service that died ({i + 1})", text))
    return report
