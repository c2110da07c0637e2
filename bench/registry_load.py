"""``slmesh bench registry``: the registry on PostgreSQL under many replicas and watchers, one
registry process vs two.

Each configuration gets a PostgreSQL database of its own (created on the local server, dropped
after) and real registry processes (``SLMESH_REGISTRY_DATABASE``). The load generator is a
process of its own (this module with ``--generate``): it registers ``--replicas`` simulated
replicas spread over the registries, heartbeats each every ``--interval-s`` (phases spread
evenly, load unchanged: the registry's common case, a touch of the row and no watch event),
and opens ``--watchers`` Watch streams (all agents) spread over the registries. Two measured
phases follow a warm-up: heartbeats only, then heartbeats plus ``--changes`` replica changes a
second (probe replicas whose heartbeat carries a new load: one UPDATED event each, delivered
to every watcher). It samples the registries' and their PostgreSQL backends' CPU time
(``/proc``) at each phase boundary, the registries' memory at the end, every heartbeat's
latency and, per change, the time from sending it to each watcher receiving it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mesh.reports import machine_facts as _machine  # noqa: E402 - after the sys.path entry
from mesh.reports import write_section  # noqa: E402 - as above

SECTION = "## Registry under load"
PROBES = 10
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used, or None if unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def _rss_mb(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MiB of a process."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


# -- the load generator (its own process) ----------------------------------------------------


async def _generate(args: argparse.Namespace) -> dict[str, Any]:
    import asyncpg

    from mesh.proto.slmesh.registry.v1 import registry_pb2 as pb
    from mesh.registry import RegistryClient

    addresses: list[str] = args.registries.split(",")
    pids = [int(p) for p in args.pids.split(",")]
    clients = [RegistryClient(a, timeout_s=10) for a in addresses]
    admin = await asyncpg.connect(args.database)

    async def backends() -> list[int]:
        rows = await admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'slmesh-registry'"
        )
        return [r["pid"] for r in rows]

    def replica(rid: str) -> pb.Replica:
        return pb.Replica(
            agent=f"agent-{hash(rid) % 20}",
            replica_id=rid,
            endpoints=[pb.Endpoint(transport="GRPC", url=f"{rid}:50051")],
            skills=["s"],
        )

    ids = [f"sim-{i}" for i in range(args.replicas)]
    probes = [f"probe-{i}" for i in range(PROBES)]
    for start in range(0, len(ids) + len(probes), 100):
        batch = (ids + probes)[start : start + 100]
        await asyncio.gather(*(clients[hash(r) % len(clients)].register(replica(r)) for r in batch))

    sent: dict[int, float] = {}
    watch_lat: list[float] = []
    synced = 0
    all_synced = asyncio.Event()

    ended: list[str] = []

    async def watcher(client: RegistryClient) -> None:
        try:
            await follow(client)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a watch the registry ended: counted
            ended.append(f"{type(exc).__name__}: {exc}"[:200])

    async def follow(client: RegistryClient) -> None:
        nonlocal synced
        async with contextlib.aclosing(client.watch()) as stream:
            async for event in stream:
                if event.type == pb.WatchEvent.SYNCED:
                    synced += 1
                    if synced == args.watchers:
                        all_synced.set()
                    continue
                key = event.replica.load.in_flight
                if event.replica.replica_id.startswith("probe-") and key in sent:
                    watch_lat.append((time.perf_counter() - sent[key]) * 1000)

    watches = [
        asyncio.create_task(watcher(clients[i % len(clients)])) for i in range(args.watchers)
    ]
    await asyncio.wait_for(all_synced.wait(), 120)

    phase = "warmup"
    hb_lat: dict[str, list[float]] = {"warmup": [], "heartbeats": [], "changes": []}
    failed = 0

    async def beat(i: int) -> None:
        nonlocal failed
        rid, client = ids[i], clients[hash(ids[i]) % len(clients)]
        await asyncio.sleep(args.interval_s * i / len(ids))
        next_at = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            try:
                if not await client.heartbeat(rid, pb.Load()):
                    await client.register(replica(rid))
            except Exception:  # noqa: BLE001 - counted; the beat goes on
                failed += 1
            hb_lat[phase].append((time.perf_counter() - t0) * 1000)
            # A replica late for its beat beats once, then keeps its period (no catch-up burst).
            next_at = max(next_at + args.interval_s, time.perf_counter())
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    async def change(k: int) -> None:
        rid = probes[k % PROBES]
        sent[k] = time.perf_counter()
        await clients[hash(rid) % len(clients)].heartbeat(rid, pb.Load(in_flight=k))

    async def keep_probes_alive() -> None:
        while True:
            await asyncio.gather(
                *(clients[hash(r) % len(clients)].heartbeat(r, None) for r in probes)
            )
            await asyncio.sleep(args.interval_s)

    beats = [asyncio.create_task(beat(i)) for i in range(len(ids))]
    alive = asyncio.create_task(keep_probes_alive())
    await asyncio.sleep(args.warmup_s)

    def sample(backend_pids: list[int]) -> dict[str, Any]:
        return {
            "at": time.perf_counter(),
            "registries": [_cpu_s(p) for p in pids],
            "postgres": [_cpu_s(p) for p in backend_pids],
            "generator": time.process_time(),
        }

    marks = []
    phase = "heartbeats"
    pg_pids = await backends()
    marks.append(sample(pg_pids))
    await asyncio.sleep(args.phase_s)
    marks.append(sample(pg_pids))
    phase = "changes"
    k = 1
    start = time.perf_counter()
    while time.perf_counter() - start < args.phase_s:
        asyncio.create_task(change(k))  # noqa: RUF006 - short; awaited by the phase's end
        k += 1
        await asyncio.sleep(max(0.0, start + k / args.changes - time.perf_counter()))
    await asyncio.sleep(1.0)  # the last changes' watch events
    marks.append(sample(pg_pids))
    rss = [_rss_mb(p) for p in pids]
    for task in [*beats, alive, *watches]:
        task.cancel()
    await asyncio.gather(*beats, alive, *watches, return_exceptions=True)
    for client in clients:
        await client.close()
    await admin.close()
    return {
        "marks": marks,
        "rss": rss,
        "heartbeat_ms": {k: v for k, v in hb_lat.items() if k != "warmup"},
        "watch_ms": watch_lat,
        "changes": k - 1,
        "failed": failed,
        "watches_ended": ended,
        "unreadable_postgres": any(c is None for m in marks for c in m["postgres"]),
    }


# -- the run ---------------------------------------------------------------------------------


async def _admin(statement: str) -> None:
    from tests.support.postgres import admin_execute

    await admin_execute(statement)


def _configuration(count: int, tmp: Path, args: dict[str, Any]) -> dict[str, Any]:
    from tests.support.procs import start_registry

    name = f"slmesh_bench_registry_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    database = f"postgresql://127.0.0.1:5432/{name}"
    procs = []
    try:
        env = {"SLMESH_REGISTRY_DATABASE": database, "SLMESH_LOG_LEVEL": "WARNING"}
        for i in range(count):
            folder = tmp / f"{count}-{i}"
            folder.mkdir(parents=True)
            procs.append(start_registry(folder, env=env))
        command = [
            sys.executable,
            "-m",
            "bench.registry_load",
            "--generate",
            "--registries",
            ",".join(p.grpc_target for p in procs),
            "--pids",
            ",".join(str(p.popen.pid) for p in procs),
            "--database",
            database,
            *[f"--{k.replace('_', '-')}={v}" for k, v in args.items()],
        ]
        done = subprocess.run(
            command,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"load generator failed:\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result
    finally:
        for proc in procs:
            proc.terminate(timeout=30)
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main(
    replicas: int = 1000,
    watchers: int = 50,
    interval_s: float = 2.0,
    changes: float = 20.0,
    warmup_s: float = 10.0,
    phase_s: float = 10.0,
    output: Path = ROOT / "docs" / "benchmarks.md",
) -> dict[int, dict[str, Any]]:
    from tests.support.postgres import postgres_up

    if not postgres_up():
        raise SystemExit("slmesh bench registry needs PostgreSQL on 127.0.0.1:5432")
    started = time.monotonic()
    loads = [os.getloadavg()[0]]
    args = {
        "replicas": replicas,
        "watchers": watchers,
        "interval_s": interval_s,
        "changes": changes,
        "warmup_s": warmup_s,
        "phase_s": phase_s,
    }
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="slmesh-bench-registry-") as folder:
        for count in (1, 2):
            results[count] = _configuration(count, Path(folder), args)
            loads.append(os.getloadavg()[0])
            print(json.dumps(summarize(results[count], args)), flush=True)
    text = render(results, args, loads, time.monotonic() - started)
    print(text)
    write_section(output, SECTION, text)
    return results


def _spent(marks: list[dict[str, Any]], i: int, key: str) -> float | None:
    """CPU seconds ``key``'s processes spent in phase ``i`` (None if unreadable)."""
    before, after = marks[i][key], marks[i + 1][key]
    if key == "generator":
        return float(after - before)
    if any(v is None for v in (*before, *after)) or len(before) != len(after):
        return None
    return float(sum(after) - sum(before))


def summarize(result: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """Per-phase rates, CPU (cores busy), per-operation CPU and latencies."""
    marks = result["marks"]
    out: dict[str, Any] = {}
    for i, phase in enumerate(("heartbeats", "changes")):
        wall = marks[i + 1]["at"] - marks[i]["at"]
        registry = _spent(marks, i, "registries")
        postgres = _spent(marks, i, "postgres")
        lat = result["heartbeat_ms"][phase]
        out[phase] = {
            "wall_s": wall,
            "heartbeats_per_s": len(lat) / wall,
            "registry_cores": None if registry is None else registry / wall,
            "postgres_cores": None if postgres is None else postgres / wall,
            "generator_cores": _spent(marks, i, "generator") / wall,  # type: ignore[operator]
            "heartbeat_p50_ms": _pct(lat, 50),
            "heartbeat_p99_ms": _pct(lat, 99),
        }
    base, loaded = out["heartbeats"], out["changes"]
    deliveries = len(result["watch_ms"]) / loaded["wall_s"]
    out["deliveries_per_s"] = deliveries
    out["watch_p50_ms"] = _pct(result["watch_ms"], 50)
    out["watch_p99_ms"] = _pct(result["watch_ms"], 99)
    out["expected_deliveries"] = result["changes"] * args["watchers"]
    out["delivered"] = len(result["watch_ms"])
    hb_rate = base["heartbeats_per_s"]
    change_rate = result["changes"] / loaded["wall_s"]
    out["changes_per_s"] = change_rate
    if base["registry_cores"] is not None:
        out["registry_ms_per_heartbeat"] = base["registry_cores"] / hb_rate * 1000
        extra = (loaded["registry_cores"] or 0) - base["registry_cores"]
        out["registry_ms_per_change"] = extra / change_rate * 1000
    if base["postgres_cores"] is not None:
        out["postgres_ms_per_heartbeat"] = base["postgres_cores"] / hb_rate * 1000
    out["rss_mb"] = result["rss"]
    out["failed"] = result["failed"]
    out["watches_ended"] = result["watches_ended"]
    return out


def _f(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render(
    results: dict[int, dict[str, Any]], args: dict[str, Any], loads: list[float], elapsed: float
) -> str:
    machine = _machine()
    cores = os.cpu_count() or 1
    sums = {count: summarize(r, args) for count, r in results.items()}
    lines = [
        SECTION,
        "",
        f"`slmesh bench registry`, {datetime.now():%Y-%m-%d %H:%M}: {args['replicas']} simulated "
        f"replicas heartbeating every {args['interval_s']:g} s ("
        f"{args['replicas'] / args['interval_s']:.0f} heartbeats/s, load unchanged) and "
        f"{args['watchers']} Watch clients (all agents), against one registry and against two "
        "sharing PostgreSQL (`SLMESH_REGISTRY_DATABASE`, a database of the run's own for each). "
        "The load generator is a process of its own (one gRPC channel per registry, replicas "
        "and watchers spread evenly). After a "
        f"{args['warmup_s']:g} s warm-up, two {args['phase_s']:g} s phases: heartbeats only, "
        f"then heartbeats plus {args['changes']:g} replica changes/s (one UPDATED event each, "
        f"to all {args['watchers']} watchers). CPU is `/proc` user+system time over the phase, "
        "in cores busy (1.00 = one core), summed over the registry processes and, separately, "
        "their PostgreSQL backends; memory is each registry's resident set at the end (peak).",
        "",
        f"- Machine: {machine['cores']} cores ({machine['cpu']}), {machine['os']}; Python "
        f"{machine['python']}; PostgreSQL on the same host; registries, PostgreSQL and the "
        "load generator share the cores. Load average (1 min) at the start and after each "
        f"configuration: {' / '.join(f'{x:.2f}' for x in loads)}. The whole run took "
        f"{elapsed:.0f} s.",
        "",
        "| registries | phase | heartbeats/s | heartbeat p50 | heartbeat p99 | registry CPU "
        "(cores) | PostgreSQL CPU (cores) | generator CPU (cores) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for count, s in sums.items():
        for phase in ("heartbeats", "changes"):
            p = s[phase]
            lines.append(
                f"| {count} | {phase} | {p['heartbeats_per_s']:.0f} | "
                f"{p['heartbeat_p50_ms']:.1f} ms | {p['heartbeat_p99_ms']:.1f} ms | "
                f"{_f(p['registry_cores'])} | {_f(p['postgres_cores'])} | "
                f"{p['generator_cores']:.2f} |"
            )
    lines += [
        "",
        "| registries | watch deliveries/s | delivered / (changes x watchers) | watch p50 "
        "| watch p99 "
        "| registry CPU per heartbeat | PostgreSQL CPU per heartbeat | registry CPU per "
        "change | registry memory (MiB, each: now / peak) | failed calls | watches ended |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for count, s in sums.items():
        memory = ", ".join(f"{now:.0f} / {peak:.0f}" for now, peak in s["rss_mb"])
        lines.append(
            f"| {count} | {s['deliveries_per_s']:.0f} | {s['delivered']} / "
            f"{s['expected_deliveries']} | {s['watch_p50_ms']:.1f} ms | "
            f"{s['watch_p99_ms']:.1f} ms | {_f(s.get('registry_ms_per_heartbeat'))} ms | "
            f"{_f(s.get('postgres_ms_per_heartbeat'))} ms | "
            f"{_f(s.get('registry_ms_per_change'))} ms | {memory} | {s['failed']} | "
            f"{len(s['watches_ended'])} |"
        )
    lines += [
        "",
        "Watch latency is from sending the change (a Heartbeat carrying a new load) to a watcher "
        "receiving its event, so it includes that Heartbeat's round trip, the commit, NOTIFY, "
        "the registry reading its change log, and the stream. Per-operation CPU: a phase's "
        "CPU divided by its heartbeats/s; per change: the second phase's extra CPU over the "
        f"first divided by its changes/s, i.e. the change's write, its log row and its delivery "
        f"to all {args['watchers']} watchers. docs/scaling.md turns these into a capacity model.",
    ]
    if max(loads) > cores / 2:
        lines += [
            "",
            f"Caution: this machine is shared and was loaded (load average up to "
            f"{max(loads):.1f} on {cores} cores: other sessions' work and a model training), "
            "and the run itself needs more than its cores: latencies include waiting for a "
            "core, and CPU figures are what the processes got, not what they would use alone.",
        ]
    return "\n".join(lines) + "\n"


def _cli() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--generate", action="store_true")
    parser.add_argument("--registries", default="")
    parser.add_argument("--pids", default="")
    parser.add_argument("--database", default="")
    parser.add_argument("--replicas", type=int, default=1000)
    parser.add_argument("--watchers", type=int, default=50)
    parser.add_argument("--interval-s", type=float, default=2.0)
    parser.add_argument("--changes", type=float, default=20.0)
    parser.add_argument("--warmup-s", type=float, default=10.0)
    parser.add_argument("--phase-s", type=float, default=10.0)
    args = parser.parse_args()
    if args.generate:
        print(json.dumps(asyncio.run(_generate(args))))
    else:
        main()


if __name__ == "__main__":
    _cli()
