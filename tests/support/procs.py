"""Real service processes for integration tests: free ports, readiness, stop by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


STARTED: list[ServiceProcess] = []  # every service process of this test session


def died_unexpectedly(tail_lines: int = 60) -> list[str]:
    """Log tails of service processes that exited while no test was stopping them: the
    cause of a test's "connection refused" lives there, not in the test's traceback."""
    reports = []
    for proc in STARTED:
        if not proc.stopped and proc.popen.poll() is not None:
            proc.stopped = True  # reported once
            tail = "\n".join(proc.output().splitlines()[-tail_lines:])
            reports.append(
                f"{proc.log.name} (pid {proc.popen.pid}) exited with "
                f"{proc.popen.returncode}:\n{tail}"
            )
    return reports


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: each socket stays bound until all are picked (two
    :func:`free_port` calls in a row may get the same port back, and the service's second
    listener then fails to bind)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


@dataclass
class ServiceProcess:
    """A ``python -m mesh serve`` child; always stopped by PID (process group) at teardown."""

    popen: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log: Path
    stopped: bool = field(default=False, init=False)  # a test stopped it (not a crash)

    def __post_init__(self) -> None:
        STARTED.append(self)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM (graceful drain), then SIGKILL the group if it does not exit in time."""
        self.stopped = True
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        return self.popen.wait()

    def kill(self) -> None:
        self.stopped = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    def kill_tree(self) -> list[int]:
        """kill -9 of the service and every process it started, each by PID (Ray's head and
        workers leave the process group, so a group kill alone would let a worker finish the
        step it runs); returns the PIDs killed besides the service's own."""
        children = descendants(self.popen.pid)
        self.kill()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return children


def descendants(pid: int) -> list[int]:
    """PIDs of every living process below ``pid`` (Linux /proc), children first."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in parents.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def start_service(
    service: str | Path,
    tmp: Path,
    env: dict[str, str] | None = None,
    wait: bool = True,
    grpc_port: int | None = None,
    ready_timeout: float = 30.0,
) -> ServiceProcess:
    """Starts ``slmesh serve SERVICE`` with its own ports and data dir under ``tmp``."""
    http_port, spare = free_ports(2)
    grpc = grpc_port or spare
    log = tmp / f"{Path(service).name}-{http_port}.log"
    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "SLMESH_HTTP_PORT": str(http_port),
        "SLMESH_METRICS_PORT": str(http_port),  # the registry's /metrics (it has no HTTP)
        "SLMESH_GRPC_PORT": str(grpc),
        "SLMESH_DATA_DIR": str(tmp / "data"),
        **(env or {}),
    }
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "mesh", "serve", str(service)],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc = ServiceProcess(popen, http_port, grpc, log)
    if wait:
        try:
            wait_ready(proc, ready_timeout)
        except BaseException:
            proc.kill()
            raise
    return proc


def wait_ready(proc: ServiceProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"service exited with {proc.popen.returncode}:\n{proc.output()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(proc.http_url + "/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"service not ready in {timeout}s:\n{proc.output()}")


def start_registry(
    tmp: Path,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
    grpc_port: int | None = None,
) -> ServiceProcess:
    """``slmesh serve services/registry`` (gRPC only), ready once its health service answers;
    ``grpc_port`` restarts one where a killed one listened."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    proc = start_service(
        ROOT / "services" / "registry", tmp, env=env, wait=False, grpc_port=grpc_port
    )
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(proc.grpc_target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc.popen.poll() is not None:
                raise RuntimeError(
                    f"registry exited with {proc.popen.returncode}:\n{proc.output()}"
                )
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return proc
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError(f"registry not ready in {timeout}s:\n{proc.output()}")
            time.sleep(0.05)
