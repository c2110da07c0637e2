"""What tracing costs: hop throughput and planner steps/s with telemetry off vs on, in one run.

``slmesh bench tracing`` runs :func:`main`. It starts a local Phoenix (the ``ui`` extra) and
an OTLP receiver that drops what it gets (:func:`_sink`), then measures four modes in
rotating order within every round, so that other load on the machine hits all alike:

* ``off``: tracing off (no traces exporter: the default);
* ``sampled``: ``OTEL_TRACES_EXPORTER=otlp`` with the documented production sampling
  (``parentbased_traceidratio``, 10% of tasks), the OpenTelemetry SDK's tracer provider and
  batch span processor, OTLP/gRPC export to the dropping receiver;
* ``drop``: the same, 100% sampled (parent-based always-on): what the mesh's processes pay
  for every span;
* ``phoenix``: ``drop``'s export to Phoenix on the same machine, which parses and stores
  every span: what the machine pays when the backend shares its cores.

Rows: one A2A ``SendMessage`` hop per agent and transport (a fresh agent
``python -m mesh serve ...`` and one load-generating client process per round), and the
planner's fan-out plan (:data:`bench.planner.FAN_OUT`: a registry, an echo agent and the
planner engine on a local Ray instance, all fresh per round, each with the mode's
telemetry; Ray workers inherit it). Each mode's figure is the median of its rounds; the
driver only starts processes and writes the ``## Tracing overhead`` section.

Child roles (internal)::

    python -m bench.tracing client AGENT BINDING HTTP_URL GRPC_URL CONCURRENCY SECONDS
    python -m bench.tracing planner REGISTRY STEPS REPEATS
    python -m bench.tracing sink PORT
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mesh.reports import write_section

ROOT = Path(__file__).resolve().parents[1]
AGENTS = {
    "echo": ROOT / "tests" / "support" / "echo_service",
    "tools": ROOT / "services" / "tools",
    "classifier": ROOT / "services" / "classifier",
}
ROLES = {
    "echo": "`echo` is a trivial executor, so its row is the hop's own cost",
    "tools": "`tools` is the real tools agent doing a SQLite order lookup",
    "classifier": "`classifier` is the shipped classifier agent (an encoder SLM: one batched "
    "forward pass and one label per request)",
}
SECTION = "## Tracing overhead"
BINDINGS = ("GRPC", "JSONRPC")
MODES = ("off", "sampled", "drop", "phoenix")
"""Tracing off; on at 10% to a receiver that drops; on at 100% to it; on at 100% to a local
Phoenix."""
TARGETED = MODES[1:]
"""Modes held to the target."""
SAMPLED = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
"""The production overlay's sampling (deploy/k8s/overlays/prod)."""
TARGET_LOSS = 5.0
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _base_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "SLMESH_OTEL", "SLMESH_REGISTRY", "SLMESH_API_TOKEN"))
    }
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "SLMESH_LOG_LEVEL": "WARNING",
            "SLMESH_PROMETHEUS": "false",
        }
    )
    return env


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _serve(agent: str, env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    """A fresh agent process on free ports, ready to serve."""
    http_port, grpc_port = _free_port(), _free_port()
    env = {**env, "SLMESH_HTTP_PORT": str(http_port), "SLMESH_GRPC_PORT": str(grpc_port)}
    with open(log, "ab") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mesh", "serve", str(AGENTS[agent])],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        _wait(f"http://127.0.0.1:{http_port}/readyz", server, log)
    except BaseException:
        _stop(server)
        raise
    return server, http_port, grpc_port


def _child(args: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Runs a child role of this module and returns its ``RESULT`` JSON."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.tracing", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0 or "RESULT " not in done.stdout:
        raise RuntimeError(f"{args[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.rsplit("RESULT ", 1)[1].splitlines()[0]))


def _round(
    agent: str,
    binding: str,
    telemetry_env: dict[str, str],
    tmp: Path,
    tag: str,
    concurrency: int,
    duration: float,
    store: str,
    rate: float = 0.0,
) -> dict[str, Any]:
    """One hop round: a fresh agent and one client process, both with ``telemetry_env``."""
    env = {
        **_base_env(),
        "SLMESH_TASK_STORE": store,
        "SLMESH_DATA_DIR": str(tmp / f"data-{agent}-{tag}"),
        **telemetry_env,
    }
    server, http_port, grpc_port = _serve(agent, env, tmp / f"server-{agent}-{tag}.log")
    try:
        cpu0 = _cpu_s(server.pid)
        result = _child(
            [
                "client",
                agent,
                binding,
                f"http://127.0.0.1:{http_port}",
                f"grpc://127.0.0.1:{grpc_port}",
                str(concurrency),
                str(duration),
                str(rate),
            ],
            {**_base_env(), **telemetry_env},
            120 + duration,
        )
        # warm-up calls included; spans still queued at the end are exported after this reading
        result["server_cpu_us"] = (
            (_cpu_s(server.pid) - cpu0) / (result["requests"] + WARMUP[agent]) * 1e6
        )
        return result
    finally:
        _stop(server)


def _planner_round(
    telemetry_env: dict[str, str], tmp: Path, tag: str, steps: int, repeats: int
) -> dict[str, Any]:
    """One planner round: registry, echo agent and the engine's process, all fresh."""
    from tests.support.procs import start_registry

    (tmp / f"registry-{tag}").mkdir()
    registry = start_registry(tmp / f"registry-{tag}", env=_base_env())
    try:
        env = {
            **_base_env(),
            "SLMESH_TASK_STORE": "memory",
            "SLMESH_REGISTRY": registry.grpc_target,
            "SLMESH_DATA_DIR": str(tmp / f"data-planner-{tag}"),
            **telemetry_env,
        }
        echo, _, _ = _serve("echo", env, tmp / f"echo-planner-{tag}.log")
        try:
            time.sleep(1.0)  # registration
            cpu0 = _cpu_s(echo.pid)
            result = _child(
                ["planner", registry.grpc_target, str(steps), str(repeats)],
                {**_base_env(), **telemetry_env},
                600,
            )
            result["agent_cpu_us"] = (_cpu_s(echo.pid) - cpu0) / result["calls"] * 1e6
            return result
        finally:
            _stop(echo)
    finally:
        registry.kill()


WARMUP = {"echo": 200, "tools": 200, "classifier": 32}
"""Calls before the timed phase: connections, caches, the store, the order database, the grammar."""
PLANNER_WARMUP = 50
"""Fan-out items run once before the timed runs (actors, pooled clients, registry view)."""


def _rotation(i: int) -> tuple[str, ...]:
    """Round ``i``'s order of the modes: each mode goes first, second and last in turn."""
    k = i % len(MODES)
    return MODES[k:] + MODES[:k]


def main(
    concurrency: int = 16,
    duration: float = 5.0,
    rounds: int = 3,
    store: str = "sqlite",
    agents: tuple[str, ...] = ("echo", "tools", "classifier"),
    planner_steps: int = 1000,
    planner_repeats: int = 3,
    output: Path = Path("docs/benchmarks.md"),
) -> dict[str, Any]:
    """Rotates off / sampled / drop / Phoenix rounds per row; prints and writes the overhead
    tables. ``planner_steps=0`` leaves the planner out."""
    from mesh.telemetry import phoenix

    if not phoenix.available():
        raise SystemExit(
            "bench tracing exports to a local Phoenix: install the ui extra (pip install -e "
            "'.[ui]')"
        )
    started = time.monotonic()
    hops: dict[str, dict[str, list[dict[str, Any]]]] = {
        f"{a} {b}": {m: [] for m in MODES} for a in agents for b in BINDINGS
    }
    planner: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    paced: dict[str, dict[str, list[dict[str, Any]]]] = {}
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="slmesh-bench-tracing-") as tmp_name:
        tmp = Path(tmp_name)
        ui_http, ui_grpc, sink_port = _free_port(), _free_port(), _free_port()
        log = tmp / "phoenix.log"
        (tmp / "phoenix").mkdir()
        with open(log, "ab") as out:
            ui = subprocess.Popen(
                phoenix.command(),
                cwd=tmp / "phoenix",
                stdout=out,
                stderr=subprocess.STDOUT,
                env={
                    **_base_env(),
                    **phoenix.environment(tmp / "phoenix", "127.0.0.1", ui_http, ui_grpc),
                },
            )
            sink = subprocess.Popen(
                [sys.executable, "-m", "bench.tracing", "sink", str(sink_port)],
                cwd=ROOT,
                env=_base_env(),
                stdout=subprocess.PIPE,
                stderr=out,
                text=True,
            )
        try:
            _wait(f"http://127.0.0.1:{ui_http}/healthz", ui, log, timeout=180)
            drop = phoenix.exporter_environment(sink_port, "slmesh-bench")
            envs = {
                "off": {},
                "sampled": {**drop, **SAMPLED},
                "drop": drop,
                "phoenix": phoenix.exporter_environment(ui_grpc, "slmesh-bench"),
            }
            for i in range(rounds if planner_steps else 0):
                for mode in _rotation(i):
                    loads.append(os.getloadavg()[0])
                    r = _planner_round(
                        envs[mode], tmp, f"{mode}-{i}", planner_steps, planner_repeats
                    )
                    planner[mode].append(r)
                    print(
                        f"  planner fan-out tracing {mode:<7} round {i + 1}: "
                        f"{r['steps_per_s']:,.0f} steps/s (runs "
                        f"{', '.join(f'{x:,.0f}' for x in r['runs'])}); agent CPU/call "
                        f"{r['agent_cpu_us']:.0f} us",
                        flush=True,
                    )
            for agent in agents:
                for binding in BINDINGS:
                    for i in range(rounds):
                        for mode in _rotation(i):
                            loads.append(os.getloadavg()[0])
                            r = _round(
                                agent,
                                binding,
                                envs[mode],
                                tmp,
                                f"{mode}-{binding}-{i}",
                                concurrency,
                                duration,
                                store,
                            )
                            hops[f"{agent} {binding}"][mode].append(r)
                            print(
                                f"  {agent:<6} {binding:<8} tracing {mode:<7} round {i + 1}: "
                                f"{r['rps']:,.0f} req/s  p50 {r['p50_ms']:.2f} ms  CPU/req client "
                                f"{r['client_cpu_us']:.0f} us server {r['server_cpu_us']:.0f} us",
                                flush=True,
                            )
                    if agent != "echo":
                        continue
                    # The same hop at a fixed rate, half of what it sustains untraced: every mode
                    # does the same work per second, so CPU per request compares like with like.
                    rate = round(0.5 * _median(hops[f"{agent} {binding}"]["off"], "rps"), -1)
                    rows = paced[f"{agent} {binding}"] = {m: [] for m in MODES}
                    for i in range(rounds):
                        for mode in _rotation(i):
                            r = _round(
                                agent,
                                binding,
                                envs[mode],
                                tmp,
                                f"paced-{mode}-{binding}-{i}",
                                concurrency,
                                duration,
                                store,
                                rate,
                            )
                            r["rate"] = rate
                            rows[mode].append(r)
                            print(
                                f"  {agent:<6} {binding:<8} at {rate:,.0f}/s tracing {mode:<7} "
                                f"round {i + 1}: CPU/req client {r['client_cpu_us']:.0f} us server "
                                f"{r['server_cpu_us']:.0f} us",
                                flush=True,
                            )
            spans = _count_spans(f"http://127.0.0.1:{ui_http}", "slmesh-bench")
        finally:
            _stop(ui)
            sink.terminate()
            dropped = sink.communicate(timeout=30)[0].strip()
    elapsed = time.monotonic() - started
    text = render(
        hops,
        planner,
        paced,
        concurrency=concurrency,
        duration=duration,
        rounds=rounds,
        store=store,
        elapsed=elapsed,
        spans=spans,
        dropped=dropped,
        loads=loads,
        planner_steps=planner_steps,
        planner_repeats=planner_repeats,
    )
    print()
    print(text)
    write_section(Path(output), SECTION, text)
    print(f"written to {output}")
    return {"hops": hops, "planner": planner, "paced": paced}


def _count_spans(url: str, project: str) -> int | None:
    """How many spans Phoenix stored for the bench project (did the export really happen?)."""
    import httpx

    time.sleep(2.0)  # the last batches are in flight
    try:
        response = httpx.get(
            f"{url}/v1/projects/{project}/spans", params={"limit": 1000}, timeout=30
        )
        return len(response.json().get("data", [])) if response.status_code == 200 else None
    except httpx.HTTPError:
        return None


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _verdict(off: list[float], on: list[float]) -> tuple[float, str]:
    """Throughput loss of ``on`` vs ``off`` (medians, %) against the target, and how sure it is.

    Overlapping rounds make the size uncertain, not the loss imaginary: the CPU per request
    (steadier on a shared machine) says whether tracing costs anything.
    """
    loss = (statistics.median(off) - statistics.median(on)) / statistics.median(off) * 100
    verdict = "met" if loss <= TARGET_LOSS else "NOT met"
    if max(on) >= min(off) and max(off) >= min(on):
        verdict += "; the rounds overlap, so the size is uncertain"
    return loss, verdict


def _against(mode: str, verdict: str) -> str:
    """The verdict of a mode held to the target."""
    return f"target <= {TARGET_LOSS:g}%: {verdict}" if mode in TARGETED else verdict


def render(
    hops: dict[str, dict[str, list[dict[str, Any]]]],
    planner: dict[str, list[dict[str, Any]]],
    paced: dict[str, dict[str, list[dict[str, Any]]]],
    *,
    concurrency: int,
    duration: float,
    rounds: int,
    store: str,
    elapsed: float,
    spans: int | None,
    dropped: str,
    loads: list[float],
    planner_steps: int,
    planner_repeats: int,
) -> str:
    cpu = "unknown"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    out = [
        SECTION,
        "",
        (
            f"`slmesh bench tracing`, {when}. Four modes, in rotating order within each of "
            f"{rounds} rounds (so other load on the machine hits all alike); medians of the "
            "rounds. The traced modes use the OpenTelemetry SDK's `TracerProvider` and batch "
            "span processor (the mesh's only tracer provider); no mode serves /metrics "
            "(`SLMESH_PROMETHEUS=false`), so the rows differ by tracing alone. `off`: no traces "
            "exporter (the default). `sampled`: `OTEL_TRACES_EXPORTER=otlp` in every process, "
            "`OTEL_TRACES_SAMPLER=parentbased_traceidratio` with `OTEL_TRACES_SAMPLER_ARG=0.1` "
            "(the production overlay's sampling), OTLP/gRPC export to a receiver that drops what "
            "it gets. `drop`: the same, 100% sampled (parent-based always-on): the mesh's own "
            "cost per traced request (span work, propagation, encoding, sending). `phoenix`: "
            "`drop`'s export to a local Phoenix on the same 2 cores, which parses and stores "
            "every span: the tracer's cost plus the backend's ingest competing for the CPUs."
        ),
        "",
        (
            f"- Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}; 1-min load average at the start of the rounds: "
            f"median {statistics.median(loads):.2f}, range {min(loads):.2f}-{max(loads):.2f}; at "
            f"the end {' / '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min). The run took "
            f"{elapsed:.0f} s."
        ),
        "- Spans stored by Phoenix for the run's project: "
        f"{spans if spans is not None else 'unknown'}"
        f"{' (the API pages at 1000)' if spans == 1000 else ''}; the dropping receiver took "
        f"{dropped}.",
        "",
    ]
    verdicts = []
    if planner["off"]:
        out += [
            "### Planner steps/s",
            "",
            (
                f"The fan-out plan of `bench/planner.py` ({planner_steps:,} echo steps, one per "
                "item, then a fan-in step) run by the planner engine on a local Ray instance; "
                "registry, echo agent and engine process fresh per round, each with the mode's "
                "telemetry (the Ray workers that run the steps inherit it). Traced, each run is "
                "one trace: the `execute_plan` span, a `step` span per step in the Ray workers, "
                "the client `SendMessage echo` and the agent's `invoke_agent echo` per step. A "
                f"round's figure is the median of {planner_repeats} runs."
            ),
            "",
            "| tracing | steps/s (median) | rounds steps/s | echo agent CPU us/step | change |",
            "|---|---:|---|---:|---:|",
        ]
        base = [r["steps_per_s"] for r in planner["off"]]
        for mode in MODES:
            rows = planner[mode]
            if not rows:
                continue
            values = [r["steps_per_s"] for r in rows]
            median = statistics.median(values)
            change = (
                ""
                if mode == "off"
                else f"{(median - statistics.median(base)) / statistics.median(base) * 100:+.1f}%"
            )
            out.append(
                f"| {mode} | {statistics.median(values):,.0f} | "
                f"{', '.join(f'{v:,.0f}' for v in values)} "
                f"| {_median(rows, 'agent_cpu_us'):,.0f} | {change} |"
            )
            if mode != "off":
                loss, verdict = _verdict(base, values)
                verdicts.append(
                    f"- planner fan-out, {mode}: {loss:.1f}% fewer steps/s with tracing on "
                    f"({_against(mode, verdict)})"
                )
    out += [
        "",
        "### A2A hop",
        "",
        (
            f"One A2A `SendMessage` hop (mesh client -> agent, `{store}` task store; "
            f"{'; '.join(ROLES[a] for a in dict.fromkeys(b.split()[0] for b in hops))}) with "
            f"{concurrency} calls in flight for {duration:g} s per round; a fresh agent and client "
            "process per round. Traced, each request is one trace of two spans (client "
            f"`SendMessage {{agent}}`, server `invoke_agent {{agent}}`) plus an `execute_tool` "
            "span (tools) or a `text_completion` span (classifier). CPU us/req: process CPU time "
            "(all threads, the export thread included) per request, client + server = `hop CPU`."
        ),
        "",
        (
            "| agent, binding | tracing | req/s (median) | rounds req/s | p50 ms | client CPU "
            "us/req | server CPU us/req | hop CPU change | throughput change |"
        ),
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for binding, modes in hops.items():
        off = modes["off"]
        off_rps = _median(off, "rps")
        off_cpu = _median(off, "client_cpu_us") + _median(off, "server_cpu_us")
        for mode in MODES:
            rows = modes[mode]
            each = ", ".join(f"{r['rps']:,.0f}" for r in rows)
            cpu_on = _median(rows, "client_cpu_us") + _median(rows, "server_cpu_us")
            change = (
                ""
                if mode == "off"
                else f"{(cpu_on - off_cpu) / off_cpu * 100:+.0f}% ({cpu_on - off_cpu:+,.0f} us)"
            )
            tput = (
                "" if mode == "off" else f"{(_median(rows, 'rps') - off_rps) / off_rps * 100:+.1f}%"
            )
            out.append(
                f"| {binding} | {mode} | {_median(rows, 'rps'):,.0f} | {each} "
                f"| {_median(rows, 'p50_ms'):.2f} | {_median(rows, 'client_cpu_us'):,.0f} "
                f"| {_median(rows, 'server_cpu_us'):,.0f} | {change} | {tput} |"
            )
            if mode != "off":
                loss, verdict = _verdict([r["rps"] for r in off], [r["rps"] for r in rows])
                verdicts.append(
                    f"- {binding}, {mode}: {loss:.1f}% throughput loss with tracing on "
                    f"({_against(mode, verdict)}); hop CPU {cpu_on - off_cpu:+,.0f} us"
                )
    if paced:
        out += [
            "",
            "### A2A hop at a fixed rate",
            "",
            (
                "The echo hop again, its client starting one call every 1/rate s (open loop) at "
                "half the rate it sustains untraced, so that every mode does the same calls per "
                "second and the CPU per request compares like with like (in the closed loop above, "
                "a slower mode also serves fewer calls per event-loop iteration)."
            ),
            "",
            "| agent, binding | rate/s | tracing | client CPU us/req | server CPU us/req | hop CPU "
            "change |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for binding, modes in paced.items():
            off_cpu = _median(modes["off"], "client_cpu_us") + _median(
                modes["off"], "server_cpu_us"
            )
            for mode in MODES:
                rows = modes[mode]
                cpu_on = _median(rows, "client_cpu_us") + _median(rows, "server_cpu_us")
                change = (
                    ""
                    if mode == "off"
                    else f"{(cpu_on - off_cpu) / off_cpu * 100:+.0f}% ({cpu_on - off_cpu:+,.0f} us)"
                )
                out.append(
                    f"| {binding} | {rows[0]['rate']:,.0f} | {mode} | "
                    f"{_median(rows, 'client_cpu_us'):,.0f} "
                    f"| {_median(rows, 'server_cpu_us'):,.0f} | {change} |"
                )
                if mode != "off":
                    verdicts.append(
                        f"- {binding} at {rows[0]['rate']:,.0f} calls/s, {mode}: hop CPU "
                        f"{(cpu_on - off_cpu) / off_cpu * 100:+.0f}% ({cpu_on - off_cpu:+,.0f} us)"
                    )
    out += ["", "### Verdicts", "", *verdicts, "", NOTES.strip(), ""]
    return "\n".join(out)


NOTES = """
Spans per traced hop: one per process (client `SendMessage {agent}`, agent
`invoke_agent {agent}`); a2a-sdk's span decorators, FastAPI's request spans and contrib
instrumentations are off. Where a traced request's extra CPU goes with the SDK: the sampler
and span objects, attribute validation under a lock per call, a `ReadableSpan` copy handed to
the batch processor, protobuf objects built per span in its export thread, and the garbage
collector (spans kept alive until their export survive the young generations). The mesh
itself adds W3C extract/attach at the agent's gate (a version-00 `traceparent` parsed inline)
and inject in the client. The mesh used to ship a leaner tracer provider of its own that
wrote OTLP by hand; it needed SDK privates and supported no span processors, so it was
removed (issue 19), and its numbers no longer apply.
Sampling is the lever: `OTEL_TRACES_SAMPLER=parentbased_traceidratio` with
`OTEL_TRACES_SAMPLER_ARG=0.1` traces one task in ten end to end (parent-based: a sampled task
stays whole across every hop), and an untraced request of a traced process pays only the
sampling decision and the context propagation. An agent doing real work dilutes the same
absolute cost. `drop` is what the mesh's processes pay at 100%; the distance from `drop` to
`phoenix` is Phoenix parsing and storing every span on the same two cores, a cost a real
deployment pays on the backend's machines instead.
"""


# ---------------------------------------------------------------------------------------
# children: the hop load generator, the planner run, the dropping OTLP receiver
# ---------------------------------------------------------------------------------------


async def _load(
    agent: str,
    binding: str,
    http_url: str,
    grpc_url: str,
    concurrency: int,
    seconds: float,
    rate: float = 0.0,
) -> dict[str, Any]:
    """Closed loop (``concurrency`` calls in flight, as fast as they return) or, with ``rate``,
    open loop: one call started every ``1/rate`` s whatever the earlier ones do."""
    from a2a.helpers.proto_helpers import new_text_message
    from a2a.types import a2a_pb2 as pb
    from google.protobuf import struct_pb2
    from google.protobuf.json_format import ParseDict

    from mesh import telemetry
    from mesh.a2a.client import MeshClient, StaticReplicas
    from mesh.config import Settings

    settings = Settings()
    telemetry.configure("bench-client", settings)
    source = StaticReplicas.from_urls(agent, http_url, grpc_url)
    latencies: list[float] = []
    async with MeshClient(source, settings, bindings=[binding]) as client:
        if agent == "tools":
            call = {"name": "get_order", "arguments": {"order_id": "ORD-621221"}}
            part = pb.Part(data=ParseDict(call, struct_pb2.Value()), media_type="application/json")
            request = pb.SendMessageRequest(
                message=pb.Message(role=pb.Role.ROLE_USER, message_id="bench", parts=[part])
            )
        elif agent == "classifier":
            request = pb.SendMessageRequest(
                message=new_text_message("Where is my order ORD-621221? It never came.")
            )
        else:
            request = pb.SendMessageRequest(message=new_text_message("ping"))
        for _ in range(WARMUP[agent]):
            await client.send_message(agent, request)
        stop = time.monotonic() + seconds
        cpu0 = time.process_time()

        async def timed() -> None:
            t0 = time.perf_counter()
            await client.send_message(agent, request)
            latencies.append(time.perf_counter() - t0)

        async def worker() -> int:
            n = 0
            while time.monotonic() < stop:
                await timed()
                n += 1
            return n

        began = time.monotonic()
        if rate > 0:
            calls = []
            for i in range(int(rate * seconds)):
                delay = began + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                calls.append(asyncio.ensure_future(timed()))
            await asyncio.gather(*calls)
            counts = [len(calls)]
        else:
            counts = await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.monotonic() - began
        cpu = time.process_time() - cpu0
    traced = telemetry.enabled()
    telemetry.shutdown()
    total = sum(counts)
    latencies.sort()
    return {
        "rps": total / wall,
        "requests": total,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "client_cpu_us": cpu / total * 1e6 if total else 0.0,
        "tracing": traced,
    }


async def _plan(registry: str, steps: int, repeats: int) -> dict[str, Any]:
    """Timed fan-out runs, each inside an ``execute_plan`` span as the planner service opens."""
    from bench.planner import FAN_OUT, fan_out_seconds, start_engine
    from mesh import telemetry
    from mesh.config import Settings

    telemetry.configure("bench-planner", Settings())
    runtime, run = await start_engine(registry)
    tracer = telemetry.get_tracer()
    items = [f"item {i}" for i in range(steps)]
    try:
        await run(FAN_OUT, items[:PLANNER_WARMUP])
        rates = []
        for _ in range(repeats):
            with tracer.start_as_current_span("execute_plan bench"):
                rates.append(
                    steps / await fan_out_seconds(run, items, trace=telemetry.carrier() or None)
                )
    finally:
        await runtime.stop()
    traced = telemetry.enabled()
    telemetry.shutdown()
    return {
        "steps_per_s": statistics.median(rates),
        "runs": rates,
        "tracing": traced,
        "calls": PLANNER_WARMUP + steps * repeats,
    }


def _sink(port: int) -> None:
    """An OTLP/gRPC trace receiver that answers every export at once and keeps nothing.

    The request is not even parsed (raw bytes in, an empty ``ExportTraceServiceResponse`` out),
    so exporting to it costs the exporting process what any backend would and the machine
    almost nothing more. Prints what it received when terminated.
    """
    import signal
    from concurrent import futures

    import grpc

    received = {"requests": 0, "bytes": 0}

    def export(request: bytes, context: grpc.ServicerContext) -> bytes:
        received["requests"] += 1
        received["bytes"] += len(request)
        return b""

    handler = grpc.method_handlers_generic_handler(
        EXPORT_METHOD.split("/")[1],
        {EXPORT_METHOD.split("/")[2]: grpc.unary_unary_rpc_method_handler(export)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=(handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stopped = [False]
    signal.signal(signal.SIGTERM, lambda *_: stopped.__setitem__(0, True))
    while not stopped[0]:
        time.sleep(0.2)
    server.stop(1).wait()
    print(
        f"{received['requests']:,} export requests, {received['bytes'] / 1e6:,.1f} MB", flush=True
    )


def _child_main(argv: list[str]) -> None:
    from mesh.a2a import install

    install()  # a child process is an entry point: before any a2a-sdk import
    role = argv[0]
    if role == "sink":
        _sink(int(argv[1]))
        return
    if role == "planner":
        registry, steps, repeats = argv[1:4]
        result = asyncio.run(_plan(registry, int(steps), int(repeats)))
    elif role == "client":
        agent, binding, http_url, grpc_url, concurrency, seconds = argv[1:7]
        rate = float(argv[7]) if len(argv) > 7 else 0.0
        result = asyncio.run(
            _load(agent, binding, http_url, grpc_url, int(concurrency), float(seconds), rate)
        )
    else:
        raise SystemExit(f"unknown role {role!r}")
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
