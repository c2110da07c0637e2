"""What tracing costs a hop: throughput with telemetry off vs on (100% sampled, OTLP to Phoenix).

``slmesh bench tracing`` runs :func:`main`: it starts a local Phoenix (the ``ui`` extra), then,
for each transport, alternates rounds of the same load against a fresh echo agent
(``python -m mesh serve tests/support/echo_service``) with telemetry off and with telemetry on
(``SLMESH_OTEL_ENABLED=true``, the default parent-based always-on sampler, batch span
processor, OTLP/gRPC export to Phoenix, in the agent and in the client). Rounds alternate
off/on so that other load on the machine hits both alike; each mode's figure is the median of
its rounds. Every server and client is its own process; the driver only starts them and
writes the ``## Tracing overhead`` section of ``docs/benchmarks.md``.

Child role (internal): ``python -m bench.tracing client AGENT BINDING HTTP_URL GRPC_URL CONCURRENCY SECONDS``.
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

from bench.report import write_section

ROOT = Path(__file__).resolve().parents[1]
AGENTS = {"echo": ROOT / "tests" / "support" / "echo_service", "tools": ROOT / "services" / "tools",
          "classifier": ROOT / "services" / "classifier"}
"""echo: a trivial executor (the hop's own cost); tools: a SQLite order lookup; classifier: the
shipped micro-SLM classifying a message (continuous batching, constrained to its labels)."""
SECTION = "## Tracing overhead"
BINDINGS = ("GRPC", "JSONRPC")
TARGET_LOSS = 5.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "SLMESH_OTEL", "SLMESH_REGISTRY", "SLMESH_API_TOKEN"))}
    env.update({"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "SLMESH_LOG_LEVEL": "WARNING",
                "SLMESH_PROMETHEUS": "false"})
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


def _round(agent: str, mode: str, binding: str, telemetry_env: dict[str, str], tmp: Path,
           concurrency: int, duration: float, store: str) -> dict[str, Any]:
    """One round: a fresh agent and one client process, both with telemetry ``mode``."""
    http_port, grpc_port = _free_port(), _free_port()
    env = {**_base_env(), "SLMESH_HTTP_PORT": str(http_port), "SLMESH_GRPC_PORT": str(grpc_port),
           "SLMESH_TASK_STORE": store, "SLMESH_DATA_DIR": str(tmp / f"data-{agent}-{mode}-{binding}")}
    if mode == "on":
        env.update(telemetry_env)
    log = tmp / f"server-{agent}-{mode}-{binding}.log"
    with open(log, "ab") as out:
        server = subprocess.Popen([sys.executable, "-m", "mesh", "serve", str(AGENTS[agent])], env=env,
                                  stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        _wait(f"http://127.0.0.1:{http_port}/readyz", server, log)
        client_env = {**_base_env(), **(telemetry_env if mode == "on" else {})}
        cpu0 = _cpu_s(server.pid)
        done = subprocess.run(
            [sys.executable, "-m", "bench.tracing", "client", agent, binding, f"http://127.0.0.1:{http_port}",
             f"grpc://127.0.0.1:{grpc_port}", str(concurrency), str(duration)],
            env=client_env, cwd=ROOT, capture_output=True, text=True, timeout=120 + duration)
        if done.returncode != 0 or "RESULT " not in done.stdout:
            raise RuntimeError(f"client failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.rsplit("RESULT ", 1)[1].splitlines()[0])
        # warm-up calls included; spans still queued at the end are exported after this reading
        result["server_cpu_us"] = (_cpu_s(server.pid) - cpu0) / (result["requests"] + WARMUP[agent]) * 1e6
        return result
    finally:
        _stop(server)


WARMUP = {"echo": 200, "tools": 200, "classifier": 32}
"""Calls before the timed phase: connections, caches, the store, the order database, the grammar."""


def main(concurrency: int = 16, duration: float = 5.0, rounds: int = 3, store: str = "sqlite",
         agents: tuple[str, ...] = ("echo", "tools", "classifier"), output: Path = Path("docs/benchmarks.md")) -> dict[str, Any]:
    """Alternates off/on rounds per transport, prints and writes the overhead table."""
    from mesh.telemetry import phoenix

    if not phoenix.available():
        raise SystemExit("bench tracing exports to a local Phoenix: install the ui extra "
                         "(pip install -e '.[ui]')")
    started = time.monotonic()
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        f"{a} {b}": {"off": [], "on": []} for a in agents for b in BINDINGS}
    with tempfile.TemporaryDirectory(prefix="slmesh-bench-tracing-") as tmp_name:
        tmp = Path(tmp_name)
        ui_http, ui_grpc = _free_port(), _free_port()
        log = tmp / "phoenix.log"
        (tmp / "phoenix").mkdir()
        with open(log, "ab") as out:
            ui = subprocess.Popen(phoenix.command(), cwd=tmp / "phoenix", stdout=out, stderr=subprocess.STDOUT,
                                  env={**_base_env(), **phoenix.environment(tmp / "phoenix", "127.0.0.1",
                                                                            ui_http, ui_grpc)})
        try:
            _wait(f"http://127.0.0.1:{ui_http}/healthz", ui, log, timeout=180)
            telemetry_env = phoenix.exporter_environment(ui_grpc, "slmesh-bench")
            for agent in agents:
                for binding in BINDINGS:
                    for i in range(rounds):
                        for mode in (("off", "on") if i % 2 == 0 else ("on", "off")):
                            r = _round(agent, mode, binding, telemetry_env, tmp, concurrency, duration, store)
                            results[f"{agent} {binding}"][mode].append(r)
                            print(f"  {agent:<6} {binding:<8} tracing {mode:<3} round {i + 1}: "
                                  f"{r['rps']:,.0f} req/s  p50 {r['p50_ms']:.2f} ms  "
                                  f"CPU/req client {r['client_cpu_us']:.0f} us server "
                                  f"{r['server_cpu_us']:.0f} us", flush=True)
            spans = _count_spans(f"http://127.0.0.1:{ui_http}", "slmesh-bench")
        finally:
            _stop(ui)
    elapsed = time.monotonic() - started
    text = render(results, concurrency=concurrency, duration=duration, rounds=rounds, store=store,
                  elapsed=elapsed, spans=spans)
    print()
    print(text)
    write_section(Path(output), SECTION, text)
    print(f"written to {output}")
    return results


def _count_spans(url: str, project: str) -> int | None:
    """How many spans Phoenix stored for the bench project (did the export really happen?)."""
    import httpx

    time.sleep(2.0)  # the last batches are in flight
    try:
        response = httpx.get(f"{url}/v1/projects/{project}/spans", params={"limit": 1000}, timeout=30)
        return len(response.json().get("data", [])) if response.status_code == 200 else None
    except httpx.HTTPError:
        return None


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _spread(rows: list[dict[str, Any]]) -> tuple[float, float]:
    values = [r["rps"] for r in rows]
    return min(values), max(values)


def render(results: dict[str, dict[str, list[dict[str, Any]]]], *, concurrency: int, duration: float,
           rounds: int, store: str, elapsed: float, spans: int | None) -> str:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    out = [
        SECTION, "",
        (f"`slmesh bench tracing`, {when}: one A2A `SendMessage` hop (mesh client -> agent, "
         f"`{store}` task store; `echo` is a trivial executor, so its row is the hop's own cost; "
         "`tools` is the real tools agent doing a SQLite order lookup; `classifier` is the shipped "
         "micro-SLM agent, one constrained generation per request) "
         f"with {concurrency} calls in flight for {duration:g} s per round, "
         f"{rounds} rounds per mode alternating off/on; medians. Tracing on = "
         "`SLMESH_OTEL_ENABLED=true` in the client and the agent: 100% sampled (parent-based "
         "always-on), batch span processor, OTLP/gRPC export to a local Phoenix on the same "
         "machine (which stores the spans meanwhile). Each request is one trace of two spans "
         "(client `SendMessage {agent}`, server `invoke_agent {agent}`) plus an `execute_tool` "
         "span (tools) or a `text_completion` span (classifier)."),
        "",
        (f"- Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
         f"Python {platform.python_version()}; load average when written: "
         f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}. The run took {elapsed:.0f} s."),
        f"- Spans stored by Phoenix for the run's project: {spans if spans is not None else 'unknown'}"
        f"{' (the API pages at 1000)' if spans == 1000 else ''}.",
        ("- CPU us/req: process CPU time (all threads: the export thread included) per request; "
         "more stable than req/s on a shared machine. `hop CPU` is client + server."),
        "",
        ("| agent, binding | tracing | req/s (median) | rounds req/s | p50 ms | client CPU us/req "
         "| server CPU us/req | hop CPU change | throughput change |"),
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for binding, modes in results.items():
        off, on = modes["off"], modes["on"]
        off_rps, on_rps = _median(off, "rps"), _median(on, "rps")
        off_cpu = _median(off, "client_cpu_us") + _median(off, "server_cpu_us")
        on_cpu = _median(on, "client_cpu_us") + _median(on, "server_cpu_us")
        for mode, rows in (("off", off), ("on", on)):
            each = ", ".join(f"{r['rps']:,.0f}" for r in rows)
            change = "" if mode == "off" else f"{(on_cpu - off_cpu) / off_cpu * 100:+.0f}% ({on_cpu - off_cpu:+,.0f} us)"
            tput = "" if mode == "off" else f"{(on_rps - off_rps) / off_rps * 100:+.1f}%"
            out.append(f"| {binding} | {mode} | {_median(rows, 'rps'):,.0f} | {each} "
                       f"| {_median(rows, 'p50_ms'):.2f} | {_median(rows, 'client_cpu_us'):,.0f} "
                       f"| {_median(rows, 'server_cpu_us'):,.0f} | {change} | {tput} |")
        loss = (off_rps - on_rps) / off_rps * 100
        (off_lo, off_hi), (on_lo, on_hi) = _spread(off), _spread(on)
        overlap = on_hi >= off_lo and off_hi >= on_lo
        verdict = ("rounds overlap: within this machine's noise, not a measurement"
                   if overlap else ("met" if loss <= TARGET_LOSS else "NOT met"))
        verdicts.append(f"- {binding}: {loss:.1f}% throughput loss with tracing on (target <= "
                        f"{TARGET_LOSS:g}%: {verdict}); tracing CPU {on_cpu - off_cpu:+,.0f} us per request")
    out += ["", *verdicts, "", NOTES.strip(), ""]
    return "\n".join(out)


NOTES = """
What a hop's tracing costs and why the trivial hop misses the target. With telemetry off
nothing is installed and every hook is one attribute check (the off rows are the mesh's normal
numbers). On, a hop adds two spans and nothing else: no per-transport spans, no a2a-sdk internal
spans (its decorators stay off), no FastAPI request spans (turned off on agents); the context
goes out as one `traceparent` entry added to the fast paths' prebuilt metadata / request head,
and comes in through one extract at the admission gate. The rest is the Python SDK's own price,
measured in-process on this machine when idle: creating and ending one span ~29 us, encoding it
for OTLP ~29 us (on the batch processor's thread, but in the same process and under the same
GIL), extract ~6 us, inject ~2.5 us, a histogram record ~4 us: ~65 us on the client and ~90 us
on the server per hop, against ~300 us of CPU for the whole untraced echo hop. So at 100%
sampling a hop that does nothing costs 30-50% more CPU with tracing on, and Phoenix ingesting
~1,000 spans/s shares the same two cores. An agent doing real work dilutes the same absolute
cost: the tools agent's hop (a SQLite lookup in a thread) and above all a model generation
(~100 ms of CPU per classification here). To keep busy trivial hops cheap, sample:
`OTEL_TRACES_SAMPLER=parentbased_traceidratio` with `OTEL_TRACES_SAMPLER_ARG=0.1` traces one
task in ten end to end (parent-based: a sampled task stays whole across every hop).
"""


# ---------------------------------------------------------------------------------------
# child: the load generator
# ---------------------------------------------------------------------------------------


async def _load(agent: str, binding: str, http_url: str, grpc_url: str, concurrency: int,
                seconds: float) -> dict[str, Any]:
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
            request = pb.SendMessageRequest(message=pb.Message(role=pb.Role.ROLE_USER, message_id="bench",
                                                                parts=[part]))
        elif agent == "classifier":
            request = pb.SendMessageRequest(message=new_text_message("Where is my order ORD-621221? It never came."))
        else:
            request = pb.SendMessageRequest(message=new_text_message("ping"))
        for _ in range(WARMUP[agent]):
            await client.send_message(agent, request)
        stop = time.monotonic() + seconds
        cpu0 = time.process_time()

        async def worker() -> int:
            n = 0
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                await client.send_message(agent, request)
                latencies.append(time.perf_counter() - t0)
                n += 1
            return n

        began = time.monotonic()
        counts = await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.monotonic() - began
        cpu = time.process_time() - cpu0
    traced = telemetry.enabled()
    telemetry.shutdown()
    total = sum(counts)
    latencies.sort()
    return {"rps": total / wall, "requests": total, "p50_ms": latencies[len(latencies) // 2] * 1000,
            "client_cpu_us": cpu / total * 1e6 if total else 0.0, "tracing": traced}


def _child_main(argv: list[str]) -> None:
    if argv[0] != "client":
        raise SystemExit(f"unknown role {argv[0]!r}")
    agent, binding, http_url, grpc_url, concurrency, seconds = argv[1:7]
    result = asyncio.run(_load(agent, binding, http_url, grpc_url, int(concurrency), float(seconds)))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
