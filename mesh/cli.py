"""``slmesh``: run one service, bring the local mesh up and down, inspect it, talk to agents."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from mesh.config import ServiceSpec, Settings, SpecError, registry_credential
from mesh.convert.cli import convert_app
from mesh.errors import MeshError
from mesh.tables import Column, print_table
from mesh.tls import TlsFiles
from mesh.trust import TrustError

if TYPE_CHECKING:
    from mesh.migrations import Schema

app = typer.Typer(
    help="slmesh: a mesh of specialized small-language-model agents behind A2A.\n\n"
    "Every command reads SLMESH_* environment variables (see docs/configuration.md).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(
    help="Benchmarks; results are written to docs/benchmarks.md.", no_args_is_help=True
)
db_app = typer.Typer(
    help="Versioned schema migrations of the PostgreSQL databases replicas share: the tools "
    "agent's order database (SLMESH_ORDERS_DATABASE) and the planner's run store (the task "
    "store's database).",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")
app.add_typer(convert_app, name="convert")
app.add_typer(db_app, name="db")
console = Console()
T = TypeVar("T")
err = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from mesh import __version__

        console.print(f"slmesh {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    """slmesh: a mesh of specialized small-language-model agents behind A2A."""
    from mesh.a2a import install

    install()  # before any command imports a2a-sdk (mesh.a2a.sdk_spans)


def _settings() -> Settings:
    try:
        return Settings()
    except ValueError as exc:
        err.print(f"[red]invalid SLMESH_* configuration:[/red] {exc}")
        raise typer.Exit(2) from exc


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", soft_wrap=True)  # one line, whatever the width
    return typer.Exit(code)


def _registry_address(settings: Settings, registry: str | None) -> str:
    """--registry, else SLMESH_REGISTRY, else the mesh that `slmesh up` started."""
    from mesh.launch import MeshState, state_path

    if registry:
        return registry
    if settings.registry:
        return settings.registry
    state = MeshState.load(state_path(settings))
    if state is None:
        raise _fail("no registry: start the mesh with `slmesh up`, or pass --registry HOST:PORT")
    return state.registry


@app.command()
def serve(
    service: Annotated[
        Path, typer.Argument(help="A service folder (services/<name>) or its agent.yaml.")
    ],
) -> None:
    """Run one service in the foreground (what a container runs) until SIGTERM/SIGINT.

    Ports, registry address, task store and token come from SLMESH_* variables.
    """
    settings = _settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        spec = ServiceSpec.load(service)
    except SpecError as exc:
        raise _fail(str(exc), 2) from exc
    from mesh import telemetry

    telemetry.configure(spec.name, settings, version=spec.version)
    if spec.kind == "registry":
        from mesh.a2a.signing import CardTrust
        from mesh.registry.service import serve_registry

        try:
            cards = CardTrust.from_settings(settings)
        except TrustError as exc:
            raise _fail(str(exc), 2) from exc
        asyncio.run(serve_registry(settings, cards.check_json if cards.active else None))
        return
    from mesh.a2a.server import AgentServer, load_executor

    async def main() -> None:
        executor = load_executor(spec, settings)
        if settings.record_db is not None:  # the conversion loop's call recorder, opt-in
            from mesh.recording.executor import recorded

            executor = recorded(executor, settings)
        server = AgentServer(spec, settings, executor=executor)
        await server.run_until_signalled()

    try:
        asyncio.run(main())
    except SpecError as exc:
        raise _fail(str(exc), 2) from exc
    except TrustError as exc:  # a signing key or trust bundle that cannot be used
        raise _fail(str(exc), 2) from exc
    except MeshError as exc:
        raise _fail(str(exc)) from exc


def _trace_cli(settings: Settings) -> None:
    """Client spans of this command: where OTEL_TRACES_EXPORTER (or SLMESH_OTEL_ENABLED) sends
    them, else to the local mesh's tracing UI when `slmesh up` started one (so a task's trace
    starts here). A command serves no /metrics, so it records none."""
    from mesh import telemetry
    from mesh.launch import MeshState, state_path

    if settings.exporters("traces"):
        telemetry.configure("slmesh-cli", settings.model_copy(update={"prometheus": False}))
        return
    state = MeshState.load(state_path(settings))
    if state is not None and state.ui is not None and not settings.otel_disabled():
        local = settings.model_copy(
            update={
                "otel_traces_exporter": "otlp",
                "otel_metrics_exporter": "none",
                "otel_logs_exporter": "none",
                "otlp_protocol": "grpc",
                "prometheus": False,
            }
        )
        telemetry.configure("slmesh-cli", local, endpoint=f"http://127.0.0.1:{state.ui.grpc_port}")


def _talk(settings: Settings, call: Coroutine[Any, Any, T]) -> T:
    """Runs one conversation with the mesh (traced when telemetry is on); errors become a
    message and exit code 1 instead of a traceback."""
    _trace_cli(settings)
    try:
        return asyncio.run(call)
    except MeshError as exc:
        raise _fail(str(exc)) from exc
    except Exception as exc:
        raise _fail(f"{type(exc).__name__}: {exc}") from exc
    finally:
        _flush_telemetry()


def _flush_telemetry() -> None:
    from mesh import telemetry

    telemetry.shutdown()  # exports what the command traced before the process exits


def _parse_replicas(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        name, sep, count = value.partition("=")
        if not sep or not count.isdigit() or int(count) < 1:
            raise _fail(f"--replicas expects NAME=COUNT with COUNT >= 1, got {value!r}", 2)
        out[name] = int(count)
    return out


@app.command()
def up(
    services: Annotated[
        Path, typer.Option(help="Folder holding one sub-folder per service.")
    ] = Path("services"),
    replicas: Annotated[
        list[str], typer.Option("--replicas", "-r", help="NAME=COUNT, repeatable.")
    ] = [],  # noqa: B006 - typer needs the literal default; nothing mutates it
    detach: Annotated[
        bool,
        typer.Option("--detach", "-d", help="Return once healthy; stop later with `slmesh down`."),
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for every service to be healthy.")
    ] = 120.0,
) -> None:
    """Start the local mesh: the registry and every service as separate OS processes.

    Waits until all are healthy, prints their endpoints and records them in
    SLMESH_DATA_DIR/mesh.json. Without --detach it stays in the foreground and stops
    the mesh on Ctrl-C.
    """
    from mesh.launch import Launcher, LaunchError, LaunchInterrupted, state_path

    settings = _settings()
    launcher = Launcher(settings, services, _parse_replicas(replicas))
    try:
        with console.status("starting the mesh…"):
            state = launcher.up(timeout_s=timeout)
    except LaunchInterrupted as exc:
        raise _fail(str(exc), 128 + exc.signum) from exc
    except (LaunchError, SpecError) as exc:
        raise _fail(str(exc)) from exc
    print_up(console, state)
    console.print(f"state: {state_path(settings)}  logs: {launcher.log_dir}")
    if state.ui_url:
        console.print(
            f"traces: [bold]{state.ui_url}[/bold] (Phoenix, project {settings.otel_project}); "
            "`slmesh trace TASK_ID` prints one in the terminal"
        )
    if detach:
        console.print("mesh running in the background; stop it with [bold]slmesh down[/bold]")
        return
    console.print("mesh running; Ctrl-C stops it")
    stop = False

    def _stop(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stop:
        time.sleep(0.2)
    launcher.down()
    console.print("mesh stopped")


@app.command()
def down(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a graceful drain.")] = 30.0,
) -> None:
    """Stop exactly the processes `slmesh up` started (agents drain first, registry last)."""
    from mesh.launch import Launcher

    launcher = Launcher(_settings(), Path("services"))
    stopped = launcher.down(timeout_s=timeout)
    if not stopped:
        console.print("no running mesh found")
        return
    console.print(f"stopped {len(stopped)} processes: " + ", ".join(p.replica_id for p in stopped))
    if launcher.stopped_ui:
        console.print("stopped the tracing UI")


@app.command()
def agents(
    registry: Annotated[
        str | None, typer.Option(help="Registry HOST:PORT (default: the local mesh).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List agents and replicas from the registry, with their load and health."""
    import grpc
    from google.protobuf.json_format import MessageToDict

    from mesh.registry.client import RegistryClient

    settings = _settings()
    address = _registry_address(settings, registry)

    async def fetch() -> list[Any]:
        async with RegistryClient(
            address, token=registry_credential(settings), tls=TlsFiles.from_settings(settings)
        ) as client:
            return await client.list()

    try:
        entries = asyncio.run(fetch())
    except grpc.aio.AioRpcError as exc:
        raise _fail(f"registry {address} unreachable: {exc.code().name} {exc.details()}") from exc
    if as_json:
        print(
            json.dumps(
                [MessageToDict(e, preserving_proto_field_name=True) for e in entries], indent=2
            )
        )
        return
    print_agents(console, address, entries, time.time())
    if not entries:
        console.print("no agents registered")


@app.command()
def trust(
    key_files: Annotated[
        list[Path], typer.Argument(help="PEM private key files (SLMESH_SIGNING_KEYS).")
    ],
    agent: Annotated[list[str], typer.Option(help="Agent name the keys speak for (repeatable).")],
) -> None:
    """Print a trust bundle (JWK Set) pinning the public parts of signing keys to agent names.

    Merge the "keys" of several agents into one file for SLMESH_TRUST_BUNDLE. Make a key with
    `openssl genpkey -algorithm ed25519 -out agent-key.pem`.
    """
    from mesh.trust import load_signing_keys

    try:
        keys = load_signing_keys(key_files)
    except TrustError as exc:
        raise _fail(str(exc), 2) from exc
    print(json.dumps({"keys": [k.public_jwk(agent) for k in keys]}, indent=2))


def print_up(out: Console, state: Any) -> None:
    """`slmesh up`'s table of started replicas (a :class:`mesh.launch.MeshState`)."""
    rows = [
        (p.replica_id, str(p.pid), p.http_url if p.http_port else "-", p.grpc_url)
        for p in state.processes
    ]
    columns = [
        Column("replica"),
        Column("pid", give_way=2),
        Column("JSON-RPC + REST", give_way=1),
        Column("gRPC"),
    ]
    print_table(out, columns, rows, f"slmesh up — registry {state.registry}")


def print_agents(out: Console, address: str, entries: list[Any], now: float) -> None:
    """`slmesh agents`' table of registry entries; names and addresses are never cut."""
    rows = []
    for e in sorted(entries, key=lambda e: (e.agent, e.replica_id)):
        urls = {ep.transport: ep.url for ep in e.endpoints}
        age = now - e.last_heartbeat.ToSeconds() if e.HasField("last_heartbeat") else float("nan")
        rows.append(
            (
                e.agent,
                e.replica_id,
                _hostport(urls.get("GRPC")),
                _hostport(urls.get("JSONRPC")),
                str(e.load.in_flight),
                "[yellow]draining[/yellow]" if e.draining else "[green]serving[/green]",
                f"{age:.1f}s",
            )
        )
    columns = [
        Column("agent"),
        Column("replica"),
        Column("gRPC"),
        Column("JSON-RPC", give_way=2),
        Column("in-flight", give_way=1, justify="right"),
        Column("health"),
        Column("beat", give_way=3, justify="right"),
    ]
    print_table(out, columns, rows, f"agents in registry {address}")


def _hostport(url: str | None) -> str:
    return url.split("://", 1)[-1].rstrip("/") if url else "-"


@app.command()
def send(
    agent: Annotated[str, typer.Argument(help="Agent name as registered (see `slmesh agents`).")],
    text: Annotated[str | None, typer.Argument(help="Message text.")] = None,
    data: Annotated[
        str | None, typer.Option(help="JSON object sent as a data part instead of text.")
    ] = None,
    binding: Annotated[str, typer.Option(help="Transport: GRPC, JSONRPC or HTTP+JSON.")] = "GRPC",
    registry: Annotated[
        str | None, typer.Option(help="Registry HOST:PORT (default: the local mesh).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Deadline in seconds.")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print each event as JSON.")] = False,
) -> None:
    """Send one message to an agent and stream its events (status, artifacts) as they come."""
    from a2a.helpers.proto_helpers import new_message
    from a2a.types import a2a_pb2 as pb
    from google.protobuf import struct_pb2
    from google.protobuf.json_format import MessageToDict, ParseDict

    from mesh.a2a.client import DEFAULT_BINDINGS, MeshClient
    from mesh.a2a.discovery import snapshot

    if binding not in DEFAULT_BINDINGS:
        raise _fail(f"--binding must be one of {', '.join(DEFAULT_BINDINGS)}", 2)
    if (text is None) == (data is None):
        raise _fail("give either TEXT or --data JSON", 2)
    if data is not None:
        try:
            payload = json.loads(data)
        except json.JSONDecodeError as exc:
            raise _fail(f"--data is not valid JSON: {exc}", 2) from exc
        if not isinstance(payload, dict):
            raise _fail("--data must be a JSON object", 2)
        part = pb.Part(data=ParseDict(payload, struct_pb2.Value()), media_type="application/json")
    else:
        part = pb.Part(text=text or "")
    request = pb.SendMessageRequest(message=new_message([part]))
    settings = _settings()
    address = _registry_address(settings, registry)

    async def run() -> int:
        source = await snapshot(
            address, agent, registry_credential(settings), TlsFiles.from_settings(settings)
        )
        final = pb.TaskState.TASK_STATE_UNSPECIFIED
        async with MeshClient(source, settings, bindings=[binding]) as client:
            async for event in client.send_streaming_message(agent, request, timeout=timeout):
                if as_json:
                    print(json.dumps(MessageToDict(event)))
                else:
                    _print_event(event)
                kind = event.WhichOneof("payload")
                if kind == "task":
                    final = event.task.status.state
                elif kind == "status_update":
                    final = event.status_update.status.state
                elif kind == "message":
                    final = pb.TaskState.TASK_STATE_COMPLETED
        return 0 if final == pb.TaskState.TASK_STATE_COMPLETED else 1

    raise typer.Exit(_talk(settings, run()))


@app.command()
def run(
    text: Annotated[
        str | None, typer.Argument(help="One message; the planner routes it to a workflow.")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="Batch of messages: one per line (# comments), a .json list or .jsonl.",
        ),
    ] = None,
    workflow: Annotated[
        str | None, typer.Option(help="Run this workflow instead of letting the planner choose.")
    ] = None,
    sender: Annotated[
        str | None,
        typer.Option(
            help="TEXT's sender as your channel verified it (an email): lookups and changes "
            "then act on that customer's orders only; without it, lookups show the status only."
        ),
    ] = None,
    registry: Annotated[
        str | None, typer.Option(help="Registry HOST:PORT (default: the local mesh).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Deadline in seconds for the whole task.")] = 900.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON only.")] = False,
) -> None:
    """Send a task to the planner: live progress, then the results table and per-agent stats."""
    from mesh.a2a.client import MeshClient
    from mesh.a2a.discovery import snapshot
    from mesh.planner.console import PLANNER, print_results, read_messages, request_for, run_task

    if (text is None) == (file is None):
        raise _fail("give either TEXT or --file FILE", 2)
    messages = None
    if file is not None:
        try:
            messages = read_messages(file)
        except (OSError, ValueError, KeyError) as exc:
            raise _fail(f"cannot read {file}: {exc}", 2) from exc
        if not messages:
            raise _fail(f"{file} holds no messages", 2)
    elif not (text or "").strip():
        raise _fail("the message is empty", 2)
    if sender is not None and file is not None:
        raise _fail("--sender goes with TEXT; in a --file, write 'EMAIL | message' lines", 2)
    settings = _settings()
    address = _registry_address(settings, registry)
    out = Console(stderr=True) if as_json else console

    async def go() -> Any:
        source = await snapshot(
            address, PLANNER, registry_credential(settings), TlsFiles.from_settings(settings)
        )
        async with MeshClient(source, settings) as client:
            return await run_task(
                client,
                request_for(text, messages, workflow, sender),
                out,
                timeout,
                show_progress=not as_json,
            )

    started = time.monotonic()
    result = _talk(settings, go())
    if as_json:
        print(
            json.dumps(
                {
                    "task_id": result.task_id,
                    "completed": result.completed,
                    "result": result.result,
                    "metadata": result.metadata,
                    "error": result.error or None,
                },
                ensure_ascii=False,
            )
        )
    else:
        print_results(result, console)
        elapsed = time.monotonic() - started
        state = "completed" if result.completed else "did not complete"
        console.print(f"task {result.task_id} {state} in {elapsed:.1f} s")
        if result.error and not result.completed:
            err.print(f"[red]{result.error}[/red]")
        from mesh.launch import MeshState, state_path

        mesh_state = MeshState.load(state_path(settings))
        ui = mesh_state.ui_url if mesh_state is not None else None
        console.print(
            f"trace: slmesh trace {result.task_id}"
            + (f"  (or open {ui}, project {settings.otel_project})" if ui else "")
        )
    raise typer.Exit(0 if result.completed else 1)


_stream_open: list[bool] = []
"""Non-empty while streamed chunks are being printed on one line."""


def _print_event(event: Any) -> None:
    from a2a.types import a2a_pb2 as pb

    from mesh.a2a.client import parts_value

    kind = event.WhichOneof("payload")
    if kind == "task":
        console.print(
            f"task id: {event.task.id}  [dim]{pb.TaskState.Name(event.task.status.state)}[/dim]"
        )
    elif kind == "status_update":
        status = event.status_update.status
        note = " ".join(p.text for p in status.message.parts if p.HasField("text"))
        console.print(f"[cyan]{pb.TaskState.Name(status.state)}[/cyan] {note}".rstrip())
    elif kind == "artifact_update":
        update = event.artifact_update
        artifact = update.artifact
        if update.append or (
            not update.last_chunk and all(p.HasField("text") for p in artifact.parts)
        ):
            # a streamed chunk: tokens as they are generated, on one line
            console.print(
                "".join(p.text for p in artifact.parts), end="", markup=False, highlight=False
            )
            _stream_open.append(True)
            return
        if _stream_open:
            console.print()
            _stream_open.clear()
        value = parts_value(artifact.parts)
        body = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
        console.print(f"[green]artifact {artifact.name}[/green]:")
        console.print(body, markup=False, highlight=False)
    elif kind == "message":
        console.print(
            " ".join(p.text for p in event.message.parts if p.HasField("text")), markup=False
        )


@app.command()
def train(
    agent: Annotated[
        str,
        typer.Argument(
            help=(
                "classifier, extractor, tool-caller, responder, planner, or base (the conversion "
                "loop's student base)."
            )
        ),
    ],
    minutes: Annotated[
        float | None, typer.Option(help="Train for this long instead of the recipe's steps.")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Train for this many steps.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (data and weights).")] = 0,
    out: Annotated[
        Path | None,
        typer.Option(
            help=(
                "Model folder (default: the spec's model for the kind it serves, else models/AGENT "
                "for a micro-SLM or models/AGENT-encoder for an encoder)."
            )
        ),
    ] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help=(
                "Continue training this saved model (e.g. models/AGENT) instead of random weights; "
                "its steps and time are added to the record."
            )
        ),
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate (default: the recipe's).")
    ] = None,
    precision: Annotated[
        str,
        typer.Option(
            help="auto (bf16 autocast where the CPU has native bf16, else float32), bf16 or fp32."
        ),
    ] = "auto",
    kind: Annotated[
        str,
        typer.Option(
            help=(
                "auto (what the agent's spec serves), micro (a causal micro-SLM from scratch) or "
                "encoder (a LoRA adapter and head on the packaged all-MiniLM-L6-v2; classifier and "
                "extractor)."
            )
        ),
    ] = "auto",
) -> None:
    """Train an agent's model on its synthetic task data (progress bar, fixed seed).

    Reproduces the shipped weights with the defaults: a causal micro-SLM from scratch under
    models/<agent>/, or, for an agent served by an encoder (classifier, extractor), its LoRA
    adapter and head under the spec's model folder. Scores the held-out test split (unseen
    names, values and phrasings) through the serving runtime. With --init-from, a saved
    micro-SLM is trained further (a warm restart).
    """
    from mesh.train.run import main as train_main

    argv = [agent, "--seed", str(seed), "--precision", precision, "--kind", kind]
    if minutes is not None:
        argv += ["--minutes", str(minutes)]
    if steps is not None:
        argv += ["--steps", str(steps)]
    if out is not None:
        argv += ["--out", str(out)]
    if init_from is not None:
        argv += ["--init-from", str(init_from)]
    if lr is not None:
        argv += ["--lr", str(lr)]
    try:
        train_main(argv)
    except ValueError as exc:
        raise _fail(str(exc), 2) from exc


@app.command("eval")
def eval_models(
    agents: Annotated[
        list[str] | None,
        typer.Argument(
            help="Agents to score (default: every SLM agent and the planner SLM), or `support`: "
            "the whole support desk on the hand-written set (eval/support/) through a mesh."
        ),
    ] = None,
    count: Annotated[int, typer.Option(help="Examples per split.")] = 200,
    output: Annotated[
        Path | None,
        typer.Option(
            help="Write the table here (e.g. docs/models.md); `support` replaces only its "
            "marked section."
        ),
    ] = None,
    kind: Annotated[
        str,
        typer.Option(
            help=(
                "auto (the model each agent's spec serves), micro (the causal micro-SLM) or "
                "encoder (the fine-tuned encoder)."
            )
        ),
    ] = "auto",
    planner: Annotated[
        str | None,
        typer.Option(help="support: the planner's HTTP URL (e.g. http://localhost:8000)."),
    ] = None,
    registry: Annotated[
        str | None,
        typer.Option(help="support: registry HOST:PORT (default: the local mesh of `slmesh up`)."),
    ] = None,
    start: Annotated[
        bool,
        typer.Option(
            "--start",
            help="support: start a private mesh with a fresh data dir (a fresh order database), "
            "run the set, stop it.",
        ),
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, help="support: items in flight at once.")] = 8,
    timeout: Annotated[float, typer.Option(help="support: seconds per item.")] = 180.0,
    items_file: Annotated[
        Path | None,
        typer.Option(
            "--set",
            help="support: score this file of items instead (same format; every item is "
            "reported, e.g. the development set eval/support/dev.yaml). Not with --output.",
        ),
    ] = None,
) -> None:
    """Score the shipped models on seen, validation and unseen (test) data, constraints on;
    or, with `support`, the support desk end to end on the hand-written evaluation set."""
    if agents == ["support"]:
        _eval_support(planner, registry, start, concurrency, timeout, output, items_file)
        return
    from mesh.train.models_doc import main as eval_main

    if kind not in ("auto", "micro", "encoder"):
        raise _fail(f"--kind must be auto, micro or encoder, not {kind!r}")
    eval_main(agents, count=count, output=output, kind=kind)


def _eval_support(
    planner: str | None,
    registry: str | None,
    start: bool,
    concurrency: int,
    timeout: float,
    output: Path | None,
    items_file: Path | None = None,
) -> None:
    """`slmesh eval support`: the set through a planner; failures of the open part, the table."""
    from mesh.support import evaluation

    if items_file is not None and output is not None:
        raise _fail("--output writes the evaluation set's scores; it cannot take --set", 2)
    try:
        items = (
            evaluation.load_set()
            if items_file is None
            else evaluation.load_items(items_file, "open")
        )
    except (OSError, ValueError) as exc:
        raise _fail(f"cannot read the evaluation set: {exc}", 2) from exc
    if sum(bool(x) for x in (planner, registry, start)) > 1:
        raise _fail("give at most one of --planner, --registry and --start", 2)
    done = [0]

    def progress(item: Any, outcome: Any) -> None:
        done[0] += 1
        if done[0] % 25 == 0 or done[0] == len(items):
            err.print(f"{done[0]}/{len(items)} items")

    def go(registry_address: str | None) -> Any:
        return asyncio.run(
            evaluation.evaluate(
                items,
                planner_url=planner,
                registry=registry_address,
                concurrency=concurrency,
                timeout_s=timeout,
                progress=progress,
            )
        )

    if start:
        err.print("starting a private mesh…")
        with evaluation.private_mesh() as private:
            run = go(private)
    else:
        run = go(None if planner else _registry_address(_settings(), registry))
    evaluation.print_report(run, console)
    if output is not None:
        block = evaluation.render_block(
            run.summaries,
            when=run.when,
            machine=evaluation.machine_description(),
            seconds=run.seconds,
        )
        evaluation.write_block(output, block)
        console.print(f"wrote the support-eval section of {output}")


def _bench_module(name: str) -> Any:
    """bench/ lives beside the package in a source checkout, not inside the wheel."""
    import importlib

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    try:
        return importlib.import_module(f"bench.{name}")
    except ImportError as exc:
        raise _fail(
            f"bench/{name}.py not found: run benchmarks from a source checkout ({exc})"
        ) from exc


@app.command()
def trace(
    task_id: Annotated[
        str, typer.Argument(help="An A2A task id (as printed by `slmesh send` / `run`).")
    ],
    url: Annotated[
        str | None, typer.Option(help="Phoenix base URL (default: the local mesh's UI).")
    ] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the trace to arrive.")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the spans as JSON.")] = False,
) -> None:
    """Print a task's trace as a span tree with a waterfall, read from the tracing UI's API."""
    import httpx

    from mesh.launch import MeshState, state_path
    from mesh.telemetry import phoenix

    settings = _settings()
    if url is None:
        state = MeshState.load(state_path(settings))
        url = state.ui_url if state is not None else None
    if url is None:
        raise _fail(
            "no tracing UI: start the mesh with `slmesh up` (with the ui extra), or pass --url"
        )
    deadline = time.monotonic() + wait
    found: phoenix.Trace | None = None
    while True:
        # Each process exports its spans in batches about every second, so a trace arrives in
        # pieces: wait until it stops growing across one export interval (or the deadline).
        try:
            latest: phoenix.Trace | None = phoenix.task_trace(url, settings.otel_project, task_id)
        except phoenix.TraceNotFoundError as exc:
            if found is None and time.monotonic() >= deadline:
                raise _fail(str(exc)) from exc
            latest = found
        except httpx.HTTPError as exc:
            raise _fail(f"tracing UI {url} unreachable: {exc}") from exc
        settled = found is not None and latest is not None and len(latest.spans) == len(found.spans)
        found = latest
        if found is not None and (settled or time.monotonic() >= deadline):
            break
        time.sleep(1.5 if found is not None else 0.5)
    if as_json:
        spans = [
            {
                "name": s.name,
                "span_id": s.span_id,
                "parent_id": s.parent_id,
                "start": s.start.isoformat(),
                "duration_ms": round(s.duration_ms, 3),
                "status": s.status,
                "attributes": s.attributes,
            }
            for s in found.spans
        ]
        print(
            json.dumps(
                {
                    "trace_id": found.trace_id,
                    "url": f"{url.rstrip('/')}/redirects/traces/{found.trace_id}",
                    "spans": spans,
                },
                indent=2,
                default=str,
            )
        )
        return
    console.print(phoenix.render_tree(found, console.width))
    console.print(f"{len(found.spans)} spans; open {url.rstrip('/')} to browse the trace")


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="PostgreSQL URL of the database (default: the one the settings name for the schema).",
        show_default=False,
    ),
]
SchemaName = Annotated[
    str | None,
    typer.Option(
        "--schema",
        help="orders (SLMESH_ORDERS_DATABASE) or planner (the planner's run store: "
        "SLMESH_TASK_STORE with SLMESH_TASK_EVENTS=database); default: each whose database is "
        "set (orders with --url).",
        show_default=False,
    ),
]


def _schemas(url: str | None, name: str | None) -> list[tuple[Schema, str]]:
    """(schema, database URL) pairs the db commands work on."""
    from mesh.planner.schema import RUNS_SCHEMA, shared_runs
    from mesh.tools.postgres import ORDERS

    settings = _settings()
    known = {
        "orders": (
            ORDERS,
            settings.orders_database.get_secret_value() if settings.orders_database else None,
            "SLMESH_ORDERS_DATABASE=postgresql://...",
        ),
        "planner": (
            RUNS_SCHEMA,
            settings.task_store if shared_runs(settings) else None,
            "SLMESH_TASK_STORE=postgresql+asyncpg://... with SLMESH_TASK_EVENTS=database",
        ),
    }
    if name is not None and name not in known:
        raise _fail(f"unknown schema {name!r}: use {' or '.join(known)}", 2)
    if url:
        return [(known[name or "orders"][0], url)]
    chosen = [name] if name else list(known)
    found = [(known[n][0], target) for n in chosen if (target := known[n][1])]
    if not found:
        needed = " or ".join(known[n][2] for n in chosen)
        raise _fail(
            f"no PostgreSQL database to migrate: set {needed}, or pass --url (SQLite databases "
            "need no command: their services create and migrate their files themselves)",
            2,
        )
    return found


@db_app.command("upgrade")
def db_upgrade(
    url: DatabaseUrl = None,
    schema: SchemaName = None,
    revision: Annotated[str, typer.Option(help="Revision to migrate to.")] = "head",
) -> None:
    """Apply pending migrations: the order database's and the planner run store's (the
    migration Job / compose service).

    Run it before replicas of a new version start; running it again, or from several places
    at once, is safe."""
    from sqlalchemy.exc import DBAPIError

    from mesh.tools.postgres import describe

    for target_schema, target in _schemas(url, schema):
        try:
            done = asyncio.run(target_schema.upgrade(target, revision))
        except ValueError as exc:
            raise _fail(str(exc), 2) from exc
        except (DBAPIError, OSError) as exc:
            raise _fail(f"could not migrate {describe(target)}: {exc}") from exc
        where = f"{describe(target)} ({target_schema.name} schema)"
        if done.before == done.after:
            console.print(f"{where}: already at revision {done.after}", highlight=False)
        else:
            console.print(
                f"{where}: migrated from {done.before or 'an empty schema'} to revision "
                f"{done.after}",
                highlight=False,
            )


@db_app.command("current")
def db_current(url: DatabaseUrl = None, schema: SchemaName = None) -> None:
    """Print each database's revision and the one this slmesh needs.

    Exits 1 when a database needs `slmesh db upgrade`."""
    from sqlalchemy.exc import DBAPIError

    from mesh.tools.postgres import describe

    behind = False
    for target_schema, target in _schemas(url, schema):
        try:
            found = asyncio.run(target_schema.current(target))
        except ValueError as exc:
            raise _fail(str(exc), 2) from exc
        except (DBAPIError, OSError) as exc:
            raise _fail(f"could not read {describe(target)}: {exc}") from exc
        console.print(
            f"{describe(target)} ({target_schema.name} schema): revision "
            f"{found or 'none (empty)'}; this slmesh needs {target_schema.revision}",
            highlight=False,
        )
        behind = behind or target_schema.behind(found)
    if behind:
        raise _fail("a database is behind: run `slmesh db upgrade`")


@bench_app.command("slm")
def bench_slm(
    requests: Annotated[int, typer.Option(help="Concurrent requests per row.")] = 16,
    tokens: Annotated[int, typer.Option(help="New tokens per free-text request.")] = 48,
    threads: Annotated[int, typer.Option(help="torch threads.")] = 1,
    output: Annotated[Path, typer.Option(help="Markdown file to update.")] = Path(
        "docs/benchmarks.md"
    ),
) -> None:
    """SLM runtime throughput and latency, dynamic batching on vs off, in one run."""
    _bench_module("slm").main(requests=requests, tokens=tokens, threads=threads, output=output)


@bench_app.command("tracing")
def bench_tracing(
    concurrency: Annotated[int, typer.Option(help="Requests in flight.")] = 16,
    duration: Annotated[float, typer.Option(help="Seconds per round.")] = 5.0,
    rounds: Annotated[
        int, typer.Option(help="Rounds per mode (off / sampled / drop / phoenix rotate).")
    ] = 3,
    store: Annotated[
        str, typer.Option(help="The agents' task store: sqlite or memory.")
    ] = "sqlite",
    agent: Annotated[
        list[str], typer.Option("--agent", help="echo (trivial executor), tools, classifier (SLM).")
    ] = ["echo", "tools", "classifier"],  # noqa: B006 - typer's literal default; never mutated
    planner_steps: Annotated[
        int, typer.Option(help="Steps of the planner's fan-out plan; 0 leaves the planner out.")
    ] = 1000,
    planner_repeats: Annotated[int, typer.Option(help="Timed plan runs per planner round.")] = 3,
    output: Annotated[Path, typer.Option(help="Markdown file to update.")] = Path(
        "docs/benchmarks.md"
    ),
) -> None:
    """Hop throughput and planner steps/s, tracing off vs on with the OpenTelemetry SDK (10% and
    100% sampled, OTLP to a dropping receiver; 100% to a local Phoenix), in one run."""
    _bench_module("tracing").main(
        concurrency=concurrency,
        duration=duration,
        rounds=rounds,
        store=store,
        agents=tuple(agent),
        planner_steps=planner_steps,
        planner_repeats=planner_repeats,
        output=output,
    )


@bench_app.command("hop")
def bench_hop(
    requests: Annotated[int, typer.Option(help="Sequential requests per transport.")] = 2000,
    concurrency: Annotated[
        int, typer.Option(help="Requests in flight for the throughput phase.")
    ] = 16,
    duration: Annotated[
        float, typer.Option(help="Seconds of the throughput phase per transport.")
    ] = 5.0,
    output: Annotated[Path, typer.Option(help="Markdown file to update.")] = Path(
        "docs/benchmarks.md"
    ),
) -> None:
    """One A2A hop through the mesh client vs raw grpcio and plain a2a-sdk, in one run."""
    _bench_module("hop").main(
        requests=requests, concurrency=concurrency, duration=duration, output=output
    )


@bench_app.command("scale")
def bench_scale(
    steps: Annotated[
        int, typer.Option(help="Agent calls per configuration (split over --tasks).")
    ] = 480,
    tasks: Annotated[int, typer.Option(help="Planner tasks in flight.")] = 8,
    cpu_ms: Annotated[float, typer.Option(help="CPU milliseconds each agent call costs.")] = 20.0,
    rounds: Annotated[int, typer.Option(help="Measured rounds per replica count.")] = 2,
    output: Annotated[Path, typer.Option(help="Markdown file to update.")] = Path(
        "docs/benchmarks.md"
    ),
) -> None:
    """Throughput through the planner with 1, 2 and 4 replicas of a fixed-CPU-cost agent, in one
    run."""
    _bench_module("scale").main(
        steps=steps, tasks=tasks, cpu_ms=cpu_ms, rounds=rounds, output=output
    )


@bench_app.command("feed")
def bench_feed(
    ticks: Annotated[int, typer.Option(help="Task events per run.")] = 300,
    interval_ms: Annotated[float, typer.Option(help="Milliseconds between events.")] = 20.0,
    output: Annotated[Path, typer.Option(help="Markdown file to update.")] = Path(
        "docs/benchmarks.md"
    ),
) -> None:
    """How late task events reach a subscriber on another replica: a2a-sdk's polling vs
    LISTEN/NOTIFY, in one run (needs PostgreSQL on 127.0.0.1:5432)."""
    _bench_module("feed").main(ticks=ticks, interval_ms=interval_ms, output=output)


@bench_app.command("tasks")
def bench_tasks(
    tasks: Annotated[int, typer.Option(help="SendMessage calls to count.")] = 300,
    concurrency: Annotated[int, typer.Option(help="Calls in flight.")] = 4,
    plans: Annotated[
        int, typer.Option(help="Plans through a planner, to check the per-ticket model (0: none).")
    ] = 20,
    steps: Annotated[int, typer.Option(help="Agent steps per plan.")] = 5,
    output: Annotated[Path, typer.Option(help="Markdown file to update.")] = Path(
        "docs/benchmarks.md"
    ),
) -> None:
    """What one A2A task writes to the shared PostgreSQL task store: rows per table,
    transactions and CPU per task; then plans through a planner against that model (needs
    PostgreSQL on 127.0.0.1:5432)."""
    _bench_module("task_writes").main(
        tasks=tasks, concurrency=concurrency, plans=plans, steps=steps, output=output
    )


@bench_app.command("registry")
def bench_registry(
    replicas: Annotated[int, typer.Option(help="Simulated replicas heartbeating.")] = 1000,
    watchers: Annotated[int, typer.Option(help="Watch clients (all agents).")] = 50,
    interval_s: Annotated[float, typer.Option(help="Heartbeat period of each replica.")] = 2.0,
    changes: Annotated[float, typer.Option(help="Replica changes/s in the second phase.")] = 20.0,
    phase_s: Annotated[float, typer.Option(help="Seconds per measured phase.")] = 10.0,
    output: Annotated[Path, typer.Option(help="Markdown file to update.")] = Path(
        "docs/benchmarks.md"
    ),
) -> None:
    """The registry on PostgreSQL under many heartbeating replicas and watchers, one registry
    vs two: CPU, memory, heartbeat and watch latency (needs PostgreSQL on 127.0.0.1:5432)."""
    _bench_module("registry_load").main(
        replicas=replicas,
        watchers=watchers,
        interval_s=interval_s,
        changes=changes,
        phase_s=phase_s,
        output=output,
    )


@bench_app.command("planner")
def bench_planner(
    steps: Annotated[int, typer.Option(help="Width of the fan-out/fan-in plan.")] = 1000,
    chain: Annotated[int, typer.Option(help="Length of the chain of dependent steps.")] = 200,
    demo: Annotated[
        bool, typer.Option(help="Also run the demo through the whole local mesh.")
    ] = True,
    concurrency: Annotated[int, typer.Option(help="Demo tasks in flight.")] = 4,
    output: Annotated[Path, typer.Option(help="Markdown file to update.")] = Path(
        "docs/benchmarks.md"
    ),
) -> None:
    """Planner overhead per step and steps/s vs direct calls; Ray task vs actor dispatch; the
    demo."""
    _bench_module("planner").main(
        steps=steps, chain=chain, demo=demo, concurrency=concurrency, output=output
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
