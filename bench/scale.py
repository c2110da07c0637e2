"""``slmesh bench scale``: throughput through the planner with 1, 2 and 4 replicas of one agent.

The agent (``bench/burn_service``, :class:`bench.burn.BurnExecutor`) spends a fixed CPU time
per request, as an SLM's forward passes do; the GIL makes one replica one core. The registry,
the planner (its own local Ray) and the replicas are real processes on 127.0.0.1; replicas
are added to the running mesh (the planner sees them through its registry watch) and each
configuration runs the same batch: ``--tasks`` planner tasks at once, each fanning out to
``--steps`` / ``--tasks`` burn steps. Throughput is burn steps per second, end to end.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mesh.reports import machine_facts, write_section  # noqa: E402 - after the sys.path entry above

SECTION = "## Scaling one agent"
BURN_SERVICE = ROOT / "bench" / "burn_service"
FAN = {
    "steps": [
        {
            "id": "each",
            "for_each": "$input",
            "input": "$item",
            "plan": {"steps": [{"id": "b", "skill": "burn", "input": "$input"}], "output": "$b"},
        }
    ],
    "output": "$each",
}


def _request(items: list[str]) -> Any:
    from a2a.helpers.proto_helpers import new_message
    from a2a.types import a2a_pb2 as pb
    from google.protobuf import struct_pb2
    from google.protobuf.json_format import ParseDict

    body = {"plan": FAN, "input": items}
    part = pb.Part(data=ParseDict(body, struct_pb2.Value()), media_type="application/json")
    return pb.SendMessageRequest(message=new_message([part]))


async def _batch(planner: Any, tasks: int, per_task: int, tag: str) -> float:
    """Runs ``tasks`` fan-out tasks at once; returns the wall time of the whole batch."""
    from a2a.types import a2a_pb2 as pb

    from mesh.a2a.client import parts_value

    async def one(t: int) -> None:
        items = [f"{tag}-{t}-{i}" for i in range(per_task)]
        reply = await planner.send_message("planner", _request(items), timeout=600)
        task = reply.task
        assert task.status.state == pb.TaskState.TASK_STATE_COMPLETED, task.status
        assert parts_value(task.artifacts[0].parts) == items or any(
            parts_value(a.parts) == items for a in task.artifacts
        ), "burn results missing"

    started = time.perf_counter()
    await asyncio.gather(*(one(t) for t in range(tasks)))
    return time.perf_counter() - started


async def _wait_replicas(registry: str, count: int) -> None:
    from mesh.registry import RegistryClient

    async with RegistryClient(registry) as client:
        for _ in range(600):
            if len([e for e in await client.list(agent="burn") if not e.draining]) == count:
                return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{count} burn replicas never registered")


def main(
    replicas: tuple[int, ...] = (1, 2, 4),
    steps: int = 480,
    tasks: int = 8,
    cpu_ms: float = 20.0,
    rounds: int = 2,
    output: Path = ROOT / "docs" / "benchmarks.md",
) -> dict[int, float]:
    from mesh.a2a.client import MeshClient
    from mesh.a2a.discovery import snapshot
    from tests.support.procs import ServiceProcess, start_registry, start_service

    per_task = max(1, steps // tasks)
    started = time.monotonic()
    results: dict[int, list[float]] = {}
    procs: list[ServiceProcess] = []
    with tempfile.TemporaryDirectory(prefix="slmesh-bench-scale-") as name:
        tmp = Path(name)
        service = tmp / "burn"
        service.mkdir()
        spec = (BURN_SERVICE / "agent.yaml").read_text(encoding="utf-8")
        (service / "agent.yaml").write_text(
            spec.replace("cpu_ms: 20", f"cpu_ms: {cpu_ms:g}"), encoding="utf-8"
        )
        registry = start_registry(tmp)
        procs.append(registry)
        env = {"SLMESH_REGISTRY": registry.grpc_target, "SLMESH_TASK_STORE": "memory"}
        try:
            planner = start_service(ROOT / "services" / "planner", tmp, env=env, ready_timeout=180)
            procs.append(planner)
            burns: list[ServiceProcess] = []

            async def measure(count: int) -> list[float]:
                await _wait_replicas(registry.grpc_target, count)
                source = await snapshot(registry.grpc_target, "planner")
                async with MeshClient(source) as client:
                    await _batch(client, tasks, max(1, per_task // 4), f"warm{count}")
                    return [
                        per_task * tasks / await _batch(client, tasks, per_task, f"r{count}-{r}")
                        for r in range(rounds)
                    ]

            for count in sorted(replicas):
                while len(burns) < count:
                    burns.append(
                        start_service(
                            service, tmp, env={**env, "SLMESH_REPLICA_ID": f"burn-{len(burns)}"}
                        )
                    )
                    procs.append(burns[-1])
                results[count] = asyncio.run(measure(count))
                print(
                    f"{count} replica(s): {', '.join(f'{x:.1f}' for x in results[count])} steps/s",
                    flush=True,
                )
        finally:
            for proc in reversed(procs):
                proc.terminate(timeout=30)
    best = {count: max(values) for count, values in results.items()}
    text = render(
        best,
        results,
        steps=per_task * tasks,
        tasks=tasks,
        cpu_ms=cpu_ms,
        elapsed=time.monotonic() - started,
    )
    print(text)
    write_section(output, SECTION, text)
    return best


def render(
    best: dict[int, float],
    all_rounds: dict[int, list[float]],
    steps: int,
    tasks: int,
    cpu_ms: float,
    elapsed: float,
) -> str:
    machine = machine_facts()
    base = best[min(best)]
    ideal = 1000 / cpu_ms
    lines = [
        SECTION,
        "",
        f"`slmesh bench scale`, {datetime.now():%Y-%m-%d %H:%M}: throughput through the planner "
        f"with 1, 2 and 4 replicas of one agent whose every request costs {cpu_ms:g} ms of CPU "
        "(`bench/burn_service`; one replica can use one core, so one replica tops out near "
        f"{ideal:.0f} steps/s). Registry, planner (local Ray) and replicas are separate processes "
        "on 127.0.0.1; replicas join the running mesh through the registry. Each configuration "
        f"runs {tasks} planner tasks at once, each fanning out to {steps // tasks} steps ({steps} "
        f"steps), {len(next(iter(all_rounds.values())))} rounds after a warm-up; the table shows "
        "the best round.",
        "",
        f"- Machine: {machine['cores']} cores ({machine['cpu']}), {machine['os']}; Python "
        f"{machine['python']}. Load average when written: "
        f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}. The whole run took {elapsed:.0f} s.",
        "",
        "| replicas | steps/s | vs 1 replica | per replica | rounds (steps/s) |",
        "|---:|---:|---:|---:|---|",
    ]
    for count in sorted(best):
        lines.append(
            f"| {count} | {best[count]:.1f} | {best[count] / base:.2f}x | "
            f"{best[count] / count:.1f} | {', '.join(f'{x:.1f}' for x in all_rounds[count])} |"
        )
    cores = os.cpu_count() or 1
    lines += [
        "",
        f"With {cores} cores shared by the replicas, the planner, Ray and the client, throughput "
        f"can grow with replicas only up to about {cores} busy replicas; beyond that the extra "
        "replicas share the same cores (the spread of the rounds shows the machine's other load).",
    ]
    load = os.getloadavg()[0]
    if load > cores:
        lines += [
            "",
            f"Caution: the machine's load average ({load:.1f}) exceeded its {cores} cores during "
            "this run. Each replica is a process that wins its own share of contended cores, so "
            "more replicas also take CPU from the machine's other work: ratios above the core "
            "count measure that, not the mesh. On an idle machine expect saturation near the core "
            "count.",
        ]
    if statistics.median(best.values()) <= 0:
        raise RuntimeError("no throughput measured")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
