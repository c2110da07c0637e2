"""The local mesh: registry and every service as separate OS processes (``slmesh up``).

The launcher picks free ports, starts each service with ``python -m mesh serve <dir>``,
records it in a state file as soon as it is started, and waits until each reports healthy;
``slmesh down``, ``agents`` and ``send`` find the mesh there. ``down`` stops exactly the PIDs
recorded there. Interrupted while starting (SIGINT, SIGTERM, a service that fails), ``up``
stops what it started; killed outright, it leaves a state file that ``down`` stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from mesh.config import ServiceSpec, Settings, discover_services

STATE_FILE = "mesh.json"


@dataclass
class Process:
    """One started service replica."""

    service: str
    replica_id: str
    pid: int
    log: str
    http_port: int = 0
    grpc_port: int = 0

    @property
    def http_url(self) -> str:
        return f"http://localhost:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"localhost:{self.grpc_port}"


@dataclass
class MeshState:
    """What ``up`` started; the contract between ``up`` and the other commands."""

    registry: str
    processes: list[Process] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    ui: Process | None = None
    """The tracing UI (Phoenix): http_port serves the UI and its API, grpc_port takes OTLP."""

    @property
    def ui_url(self) -> str | None:
        return f"http://127.0.0.1:{self.ui.http_port}" if self.ui else None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> MeshState | None:
        if not path.is_file():
            return None
        raw = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            registry=raw["registry"],
            started_at=raw.get("started_at", 0.0),
            processes=[Process(**p) for p in raw["processes"]],
            ui=Process(**raw["ui"]) if raw.get("ui") else None,
        )


def state_path(settings: Settings) -> Path:
    return settings.data_dir / STATE_FILE


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LaunchError(RuntimeError):
    """A service did not come up; the message names it and points at its log."""


class LaunchInterrupted(LaunchError):
    """``up`` got SIGINT or SIGTERM while starting services (and stopped them)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(
            f"interrupted by {signal.Signals(signum).name} while starting the mesh; "
            "stopped every service it had started"
        )


@contextlib.contextmanager
def _deferred_signals() -> Iterator[list[int]]:
    """SIGINT and SIGTERM only noted while the mesh starts (the list gets the signal), so
    that ``up`` acts on them where its state file is consistent: never between starting a
    process and recording it. Outside the main thread (no handlers there) a no-op."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {
        sig: signal.signal(sig, lambda signum, _: received.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Launcher:
    """Starts and stops a local mesh."""

    def __init__(
        self,
        settings: Settings,
        services_dir: Path,
        replicas: dict[str, int] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.services_dir = services_dir
        self.replicas = replicas or {}
        self.log_dir = settings.data_dir / "logs"
        self.state: MeshState | None = None
        self._service_env: dict[str, str] = dict(env or {})
        """Extra environment of every service (the tracing UI's exporter settings, a caller's)."""
        self.stopped_ui = False
        self._signals: list[int] = []
        """SIGINT/SIGTERM received while ``up`` starts services (acted on between steps)."""

    def specs(self) -> list[ServiceSpec]:
        specs = discover_services(self.services_dir)
        if not specs or specs[0].kind != "registry":
            raise LaunchError(f"no registry service under {self.services_dir}")
        unknown = set(self.replicas) - {s.name for s in specs}
        if unknown:
            raise LaunchError(f"--replicas names unknown services: {', '.join(sorted(unknown))}")
        return specs

    def up(self, timeout_s: float = 60.0) -> MeshState:
        """Starts the registry, then every agent replica; returns once all are healthy."""
        existing = MeshState.load(state_path(self.settings))
        if existing and any(
            _alive(p.pid) for p in existing.processes + ([existing.ui] if existing.ui else [])
        ):
            raise LaunchError(
                f"a mesh is already running (state in {state_path(self.settings)}); run `slmesh "
                "down` first"
            )
        specs = self.specs()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        registry_port = free_port(self.settings.host)
        self.state = MeshState(registry=f"localhost:{registry_port}")
        with _deferred_signals() as self._signals:
            try:
                if self.settings.ui:
                    self._spawn_ui()
                reg = self._spawn(specs[0], 0, grpc_port=registry_port, http_port=0)
                self._wait_grpc_health(reg, timeout_s)
                started = [
                    self._spawn(
                        spec,
                        i,
                        grpc_port=free_port(self.settings.host),
                        http_port=free_port(self.settings.host),
                    )
                    for spec in specs[1:]
                    for i in range(self.replicas.get(spec.name, 1))
                ]
                deadline = time.monotonic() + timeout_s
                for proc in started:
                    self._wait_http_ready(proc, deadline)
                if self.state.ui is not None:
                    self._wait_http_ready(self.state.ui, deadline, path="/healthz")
                self._check_signals()
            except BaseException:
                self.down()  # a second Ctrl-C is only noted: the stop runs to its end
                raise
            finally:
                self._signals = []
        return self.state

    def _check_signals(self) -> None:
        if self._signals:
            raise LaunchInterrupted(self._signals[0])

    def _spawn_ui(self) -> None:
        """Starts the tracing UI first (it takes the longest) and points every service at it."""
        from mesh.telemetry import phoenix

        assert self.state is not None
        if not phoenix.available():
            return
        workdir = (self.settings.data_dir / "phoenix").resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        http_port, grpc_port = free_port(self.settings.host), free_port(self.settings.host)
        log = self.log_dir / "phoenix.log"
        env = {
            **os.environ,
            **phoenix.environment(workdir, "127.0.0.1", http_port, grpc_port),
            "PYTHONUNBUFFERED": "1",
        }
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                phoenix.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=workdir,
                start_new_session=True,
            )
        self.state.ui = Process("phoenix", "phoenix", popen.pid, str(log), http_port, grpc_port)
        self.state.save(state_path(self.settings))
        self._check_signals()
        self._service_env.update(
            phoenix.exporter_environment(grpc_port, self.settings.otel_project)
        )

    def add(self, spec: ServiceSpec, timeout_s: float = 60.0) -> Process:
        """Starts one more agent replica in the running mesh (e.g. a freshly deployed student)."""
        assert self.state is not None, "add() needs a mesh started by up()"
        index = sum(p.service == spec.name for p in self.state.processes)
        proc = self._spawn(
            spec,
            index,
            grpc_port=free_port(self.settings.host),
            http_port=free_port(self.settings.host),
        )
        self._wait_http_ready(proc, time.monotonic() + timeout_s)
        return proc

    def _spawn(self, spec: ServiceSpec, index: int, *, grpc_port: int, http_port: int) -> Process:
        assert self.state is not None
        assert spec.path is not None
        replica_id = f"{spec.name}-{index}"
        log = self.log_dir / f"{replica_id}.log"
        env = {
            **os.environ,
            "SLMESH_HOST": self.settings.host,
            "SLMESH_GRPC_PORT": str(grpc_port),
            "SLMESH_HTTP_PORT": str(http_port),
            "SLMESH_METRICS_PORT": str(http_port),  # the registry's /metrics (it has no HTTP)
            "SLMESH_REPLICA_ID": replica_id,
            "SLMESH_DATA_DIR": str(self.settings.data_dir.resolve()),
            "PYTHONUNBUFFERED": "1",
            **self._service_env,
        }
        if spec.kind == "agent":
            env["SLMESH_REGISTRY"] = self.state.registry
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "mesh", "serve", str(spec.path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        proc = Process(spec.name, replica_id, popen.pid, str(log), http_port, grpc_port)
        self.state.processes.append(proc)
        self.state.save(state_path(self.settings))
        self._check_signals()
        return proc

    def _check_alive(self, proc: Process) -> None:
        self._check_signals()
        if not _alive(proc.pid):
            tail = Path(proc.log).read_text(encoding="utf-8", errors="replace")[-2000:]
            raise LaunchError(f"{proc.replica_id} exited during start-up; log {proc.log}:\n{tail}")

    def _wait_grpc_health(self, proc: Process, timeout_s: float) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        from mesh.tls import TlsFiles

        deadline = time.monotonic() + timeout_s
        target, tls = f"127.0.0.1:{proc.grpc_port}", TlsFiles.from_settings(self.settings)
        with (
            tls.probe_channel(target, self.settings.advertise_host)
            if tls
            else grpc.insecure_channel(target) as channel
        ):
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                self._check_alive(proc)
                with contextlib.suppress(grpc.RpcError):
                    # types-grpcio-health-checking's HealthStub declares none of its methods.
                    reply = stub.Check(  # type: ignore[attr-defined]  # see above
                        health_pb2.HealthCheckRequest(), timeout=1.0
                    )
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                time.sleep(0.1)
        raise LaunchError(f"{proc.replica_id} not healthy after {timeout_s:.0f}s; see {proc.log}")

    def _wait_http_ready(self, proc: Process, deadline: float, path: str = "/readyz") -> None:
        from mesh.tls import TlsFiles

        tls = (
            None
            if self.state is not None and proc is self.state.ui
            else TlsFiles.from_settings(self.settings)
        )
        verify: ssl.SSLContext | bool = True
        if tls is not None:
            verify = tls.client_context()
            verify.check_hostname = (
                False  # a process we just started on loopback; the CA check stays
            )
        url = f"{'https' if tls else 'http'}://127.0.0.1:{proc.http_port}{path}"
        while time.monotonic() < deadline:
            self._check_alive(proc)
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1.0, verify=verify).status_code == 200:
                    return
            time.sleep(0.1)
        raise LaunchError(f"{proc.replica_id} not ready in time; see {proc.log}")

    def down(self, timeout_s: float = 20.0) -> list[Process]:
        """SIGTERM every recorded process (agents first, registry last), SIGKILL stragglers."""
        state = self.state or MeshState.load(state_path(self.settings))
        if state is None:
            return []
        ordered = sorted(state.processes, key=lambda p: p.service == "registry")
        stopped = stop_processes(ordered, timeout_s)
        if state.ui is not None:  # last: the services' final spans go out on their way down
            self.stopped_ui = bool(stop_processes([state.ui], timeout_s))
        with contextlib.suppress(FileNotFoundError):
            state_path(self.settings).unlink()
        self.state = None
        return stopped


def stop_processes(processes: list[Process], timeout_s: float) -> list[Process]:
    """Graceful stop of our own processes, verified by command line so a reused PID is spared."""
    ours = [p for p in processes if _is_ours(p.pid)]
    agents = [p for p in ours if p.service != "registry"]
    last = [p for p in ours if p.service == "registry"]
    for group in (agents, last):
        for proc in group:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(_alive(p.pid) for p in group):
            time.sleep(0.05)
        for proc in group:
            # Each service leads its own process group (start_new_session): a hard stop takes
            # its children too, e.g. the planner's Ray processes.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    return ours


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        if status.read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def _is_ours(pid: int) -> bool:
    if not _alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (not Linux): trust the state file
    return b"serve" in cmdline and (b"mesh" in cmdline or b"phoenix.server.main" in cmdline)
