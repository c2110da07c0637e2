"""The LLM-to-SLM conversion loop, end to end on this machine (``slmesh convert demo``).

1. **Serve and record (S1)**: a private local mesh (registry, planner, the ``classifier`` and
   ``extractor`` micro-SLMs, recording on) takes a workload of customer messages generated
   from the test split (values and phrasings the shipped models never saw): every message
   classified, a share also extracted, through the planner. The planner marks which answers
   it used.
2. **Curate and cluster (S2/S3)**: ``slmesh convert analyze``.
3. **Train (S4/S5)**: ``slmesh convert train`` fits a LoRA student on the classifier's cluster,
   on top of the small shipped base (``models/base``), with a held-out split.
4. **Deploy**: ``slmesh convert deploy`` writes the student's agent spec; it joins the mesh
   offering the same skill as its teacher.
5. **Route (S6)**: fresh messages go through the planner, whose SLM-first router sends each
   ``classify_intent`` step to the student and escalates unsure answers to the teacher; the
   teacher is also asked every message directly, to measure agreement.

The report (share of calls the student served, agreement with the teacher, cost ratio from
the planner's ledger) replaces the ``## Demonstration`` section of ``docs/conversion.md``.
Everything runs under one work folder; the mesh is stopped at the end, whatever happens.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any

import yaml
from rich.console import Console

from mesh.reports import machine_facts, write_section

SECTION = "## Demonstration"
TEACHERS = ("classifier", "extractor")
STUDENT = "intent-student"
CHUNK = 32
"""Messages per planner task: one batch of an agent (its max_batch_size), so a task's calls
decode together and none waits behind a long queue for its step deadline."""
STEP_TIMEOUT_S = 600.0
"""A step's deadline in the demo: on a loaded 2-core machine the extractor can take minutes."""


@dataclass
class DemoOptions:
    """Where the demo reads and writes (paths relative to the current folder: a checkout) and
    its workload's size."""

    work: Path
    record: int = 1000
    """Messages served (and recorded) before training."""
    serve: int = 400
    """Fresh messages routed after the student is deployed."""
    extract: int = 200
    """Of the recorded messages, how many also go to the extractor (a second task to cluster)."""
    names_from: str | None = "extractor"
    """The agent the recorder asks for the person names to redact in each call's input."""
    services: Path = Path("services")
    """The teacher agents' specs (the registry, the planner, ``TEACHERS``), copied into ``work``."""
    base: Path = Path("models") / "base"
    seed: int = 0
    train_args: tuple[str, ...] = ()
    output: Path | None = Path("docs") / "conversion.md"


def messages(count: int, seed: int) -> list[str]:
    """Customer messages from the test split: entity values and phrasings held out of training."""
    from mesh.train.data.messages import compose

    return [compose(Random(f"demo/{seed}/{i}"), "test").text for i in range(count)]


def prepare_services(work: Path, sources: Path) -> Path:
    """Copies of the registry, planner and teacher specs under ``sources``, model paths made
    absolute."""
    from mesh.config import ServiceSpec

    services = work / "services"
    for name in ("registry", "planner", *TEACHERS):
        source = sources / name
        target = services / name
        target.mkdir(parents=True, exist_ok=True)
        spec = yaml.safe_load((source / "agent.yaml").read_text(encoding="utf-8"))
        options = spec.get("options") or {}
        for holder in (
            options,
            options.get("generator") or {},
        ):  # an agent's model, the planner SLM's
            if "model" in holder and Path(holder["model"]).parts[0] in (".", ".."):
                holder["model"] = str((source / holder["model"]).resolve())
        if name == "planner":
            options["workflows"] = str((source / options.get("workflows", "workflows")).resolve())
        (target / "agent.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        ServiceSpec.load(target / "agent.yaml")  # fails here, not in a child process, if broken
    return services


def _plan(skills: tuple[str, ...], batch: list[str]) -> dict[str, Any]:
    steps = [
        {"id": skill, "skill": skill, "input": "$input", "timeout_s": STEP_TIMEOUT_S}
        for skill in skills
    ]
    return {
        "plan": {
            "steps": [
                {
                    "id": "each",
                    "for_each": "$input.messages",
                    "input": "$item",
                    "plan": {"steps": steps, "output": {s: f"${s}" for s in skills}},
                    "on_error": "continue",
                }
            ],
            "output": "$each",
        },
        "input": {"messages": batch},
    }


async def through_planner(
    registry: str, texts: list[str], skills: tuple[str, ...], console: Console, label: str
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Each chunk of messages as one planner task; returns the per-message results and each
    task's result metadata (cost ledger, escalations, agent statistics)."""
    from a2a.types import a2a_pb2 as pb
    from google.protobuf.json_format import MessageToDict

    from mesh.a2a.client import MeshClient, parts_value, restore_ints
    from mesh.a2a.discovery import snapshot

    results: list[Any] = []
    metas: list[dict[str, Any]] = []
    async with MeshClient(await snapshot(registry, "planner")) as client:
        started = time.monotonic()
        for offset in range(0, len(texts), CHUNK):
            batch = texts[offset : offset + CHUNK]
            response = await client.send_message(
                "planner", _data_request(_plan(skills, batch)), timeout=600
            )
            task = response.task
            if task.status.state != pb.TaskState.TASK_STATE_COMPLETED:
                raise RuntimeError(
                    f"planner task {task.id} ended {pb.TaskState.Name(task.status.state)}"
                )
            results.extend(parts_value(task.artifacts[-1].parts))
            metas.append(restore_ints(MessageToDict(task.artifacts[-1].metadata)))
            console.print(
                f"  {label}: {len(results)}/{len(texts)} messages "
                f"({len(results) / (time.monotonic() - started):.1f}/s)"
            )
    return results, metas


def _data_request(body: dict[str, Any]) -> Any:
    from a2a.types import a2a_pb2 as pb
    from google.protobuf import struct_pb2
    from google.protobuf.json_format import ParseDict

    part = pb.Part(data=ParseDict(body, struct_pb2.Value()), media_type="application/json")
    return pb.SendMessageRequest(
        message=pb.Message(
            role=pb.Role.ROLE_USER, message_id=f"demo-{time.time_ns()}", parts=[part]
        )
    )


async def ask_directly(
    registry: str, agent: str, texts: list[str], concurrency: int = 32
) -> list[Any]:
    """Each message straight to one agent (no planner, no router): the teacher's own answers."""
    from a2a.helpers.proto_helpers import new_text_message
    from a2a.types import a2a_pb2 as pb

    from mesh.a2a.client import MeshClient
    from mesh.a2a.discovery import snapshot
    from mesh.planner.steps import task_result

    gate = asyncio.Semaphore(concurrency)
    async with MeshClient(await snapshot(registry, agent)) as client:

        async def one(text: str) -> Any:
            async with gate:
                response = await client.send_message(
                    agent, pb.SendMessageRequest(message=new_text_message(text)), timeout=120
                )
                return task_result(response)[0]

        return list(await asyncio.gather(*(one(t) for t in texts)))


def wait_recorded(
    db: Path,
    expected: dict[str, int],
    console: Console,
    quiet_s: float = 20.0,
    limit_s: float = 900.0,
) -> dict[str, int]:
    """Waits for the agents' recorders to write what they served (they write in the background,
    after the reply; with name lookups, at the name source's pace): until each agent has its
    expected calls, or nothing new arrived for ``quiet_s`` (calls the recorder dropped never
    arrive)."""
    from mesh.recording.store import CallStore

    started = last_change = time.monotonic()
    seen: dict[str, int] = {}
    with CallStore(db) as store:
        while time.monotonic() - started < limit_s:
            counts = store.counts_by_agent()
            if counts != seen:
                seen, last_change = counts, time.monotonic()
                console.print(
                    "  written: " + ", ".join(f"{a} {n}" for a, n in sorted(counts.items()))
                )
            if all(seen.get(agent, 0) >= n for agent, n in expected.items()):
                break
            if time.monotonic() - last_change > quiet_s:
                console.print(
                    f"  recorders quiet for {quiet_s:.0f} s: going on with what was written"
                )
                break
            time.sleep(1.0)
    return seen


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """A ``slmesh convert`` step as its own process, output shown (its progress bars too)."""
    return subprocess.run(
        [sys.executable, "-m", "mesh", "convert", *args],
        check=True,
        stdout=subprocess.PIPE if "--json" in args else None,
        text=True,
    )


def _label(value: Any) -> Any:
    return value.get("label") if isinstance(value, dict) and "label" in value else value


def run_demo(options: DemoOptions, console: Console | None = None) -> dict[str, Any]:
    """Runs the five steps (the module's docstring) and returns the report it writes."""
    from mesh.config import ServiceSpec, Settings
    from mesh.launch import Launcher
    from mesh.planner.ledger import merge_costs

    console = console or Console()
    signal.signal(signal.SIGTERM, _interrupt)  # stop the demo's mesh on SIGTERM too (finally below)
    work = options.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    db = work / "calls.sqlite"
    settings = Settings(data_dir=work / "mesh", ui=False, otel_enabled=False)
    # A fresh start: no mesh left from an interrupted run, and no state of one (its planner
    # would resume that run's unfinished tasks and call the teachers again).
    Launcher(settings, work / "services").down()
    for stale in (work / "mesh", work / "services", work / STUDENT):
        shutil.rmtree(stale, ignore_errors=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    services = prepare_services(work, options.services)
    env = {"SLMESH_RECORD_DB": str(db)}
    if options.names_from:
        env["SLMESH_RECORD_NAMES_FROM"] = options.names_from  # names in inputs: found by that agent
    launcher = Launcher(settings, services, env=env)
    timings: dict[str, float] = {}
    report: dict[str, Any] = {"work": str(work)}
    t_all = time.monotonic()
    try:
        t0 = time.monotonic()
        console.rule("1. serve the workload with the teachers, recording (S1)")
        state = launcher.up(timeout_s=180)
        recorded_texts = messages(options.record, options.seed)
        # The extractor's longer JSON answers cost ~10x a label: a share of the messages is
        # enough for it to show up as its own cluster.
        asyncio.run(
            through_planner(
                state.registry,
                recorded_texts[: options.extract],
                ("extract_fields",),
                console,
                "extractor calls recorded",
            )
        )
        asyncio.run(
            through_planner(
                state.registry,
                recorded_texts,
                ("classify_intent",),
                console,
                "classifier calls recorded",
            )
        )
        wait_recorded(
            db,
            {"classifier": options.record, "extractor": min(options.extract, options.record)},
            console,
        )
        timings["record_s"] = time.monotonic() - t0

        t0 = time.monotonic()
        console.rule("2. curate and cluster (S2/S3)")
        analysis = json.loads(_cli("analyze", "--db", str(db), "--json").stdout)
        cluster = _teacher_cluster(analysis, "classifier")
        console.print(
            f"  {len(analysis['clusters'])} clusters; training on #{cluster['id']} "
            f"({cluster['name']}, {cluster['size']} calls)"
        )
        timings["analyze_s"] = time.monotonic() - t0

        t0 = time.monotonic()
        console.rule("3. train a LoRA student (S4/S5)")
        student_dir = work / STUDENT
        _cli(
            "train",
            str(cluster["id"]),
            "--db",
            str(db),
            "--base",
            str(options.base),
            "--out",
            str(student_dir),
            "--seed",
            str(options.seed),
            *options.train_args,
        )
        training = json.loads((student_dir / "training.json").read_text(encoding="utf-8"))
        timings["train_s"] = time.monotonic() - t0

        t0 = time.monotonic()
        console.rule("4. deploy the student")
        _cli(
            "deploy",
            str(student_dir),
            "--name",
            STUDENT,
            "--services-dir",
            str(services),
            "--force",
        )
        student_spec = ServiceSpec.load(services / STUDENT / "agent.yaml")
        report["escalate_below"] = student_spec.options.get("escalate_below")
        launcher.add(student_spec, timeout_s=120)
        time.sleep(2.0)  # the planner's registry view picks the new agent up from its Watch stream
        timings["deploy_s"] = time.monotonic() - t0

        t0 = time.monotonic()
        console.rule("5. route fresh messages: student first, teacher on escalation (S6)")
        fresh = messages(options.serve, options.seed + 1)
        routed, metas = asyncio.run(
            through_planner(state.registry, fresh, ("classify_intent",), console, "routed")
        )
        teacher = asyncio.run(ask_directly(state.registry, "classifier", fresh))
        timings["route_s"] = time.monotonic() - t0
    finally:
        launcher.down()
    timings["total_s"] = time.monotonic() - t_all
    answers = [_label(r.get("classify_intent")) if isinstance(r, dict) else None for r in routed]
    agree = sum(a == _label(t) for a, t in zip(answers, teacher, strict=True))
    cost = merge_costs([meta.get("cost") or {} for meta in metas])
    report.update(
        {
            "recorded_messages": options.record,
            "extracted_messages": min(options.extract, options.record),
            "clusters": [
                {k: c[k] for k in ("id", "name", "size", "agents")} for c in analysis["clusters"]
            ],
            "cluster": cluster,
            "training": training,
            "served_messages": options.serve,
            "agreement_routed": agree / len(fresh),
            "student_share": cost.get("first_choice_share", 0.0),
            "cost": cost,
            "timings": timings,
        }
    )
    _print(report, console)
    if options.output is not None:
        write_section(options.output, SECTION, _markdown(report))
        console.print(f"wrote the {SECTION[3:]} section of {options.output}")
    return report


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _teacher_cluster(analysis: dict[str, Any], agent: str) -> dict[str, Any]:
    """The largest trainable cluster served mostly by ``agent``."""
    candidates = [
        c
        for c in analysis["clusters"]
        if c.get("trainable", True) and max(c["agents"], key=lambda a: c["agents"][a]) == agent
    ]
    if not candidates:
        raise RuntimeError(
            f"no trainable cluster of {agent}'s calls: {json.dumps(analysis)[:2000]}"
        )
    return max(candidates, key=lambda c: c["size"])


def _print(report: dict[str, Any], console: Console) -> None:
    from mesh.planner.console import print_cost

    console.rule("result")
    cost = report["cost"]
    print_cost(cost, console)
    held = report["training"]["metrics"]["heldout"]
    console.print(
        f"student served {report['student_share']:.1%} of {cost.get('routed_steps', 0)} routed "
        f"calls ({cost['escalations']} escalated); routed answers agree with the teacher on "
        f"{report['agreement_routed']:.1%}; student alone on held-out calls: "
        f"{held['agreement']:.1%}; cost ratio {cost['ratio']:.1f}x; total "
        f"{report['timings']['total_s'] / 60:.1f} min",
        markup=False,
        highlight=False,
    )


def _markdown(report: dict[str, Any]) -> str:
    machine = machine_facts()
    cost, training, timings = report["cost"], report["training"], report["timings"]
    held = training["metrics"]["heldout"]
    size_ratio = training["teacher"]["parameters"] / training["parameters"]
    clusters = "; ".join(
        f"#{c['id']} {c['name']}: {c['size']} calls ("
        + ", ".join(f"{a} {share:.0%}" for a, share in c["agents"].items())
        + ")"
        for c in report["clusters"]
    )
    rows = "\n".join(
        f"| {row['model']} | {row['parameters']:,} | {row['calls']} | "
        f"{row['input_tokens'] + row['output_tokens']:,} | {row['flops'] / 1e9:.3f} |"
        for row in cost["models"]
    )
    steps = "\n".join(
        (
            f"| recorded workload | {report['recorded_messages']} messages through the planner "
            f"to `classify_intent`, {report['extracted_messages']} of them also to "
            "`extract_fields` |",
            f"| clusters found (S2/S3) | {clusters} |",
            f"| cluster trained on | #{report['cluster']['id']} {report['cluster']['name']}: "
            f"{report['cluster']['size']} calls |",
            f"| student | LoRA (rank {training['lora']['rank']}, "
            f"{training['adapter_parameters']:,} trained parameters) on `models/base`: "
            f"{training['parameters']:,} parameters served vs the teacher's "
            f"{training['teacher']['parameters']:,}; {training['calls']['train']} calls, "
            f"{training['steps']} steps, {training['wall_time_s']:.0f} s |",
            f"| student alone, held-out calls | {held['count']} calls: agreement with the "
            f"teacher {held['agreement']:.1%} (base alone "
            f"{held.get('base_agreement', float('nan')):.1%}), valid {held['valid']:.1%} |",
            f"| escalation threshold | mean logprob {report['escalate_below']} (calibrated on "
            "the held-out calls for 95% agreement of the answers kept) |",
            f"| routed (fresh messages) | {report['served_messages']} messages: student served "
            f"{report['student_share']:.1%}, {cost['escalations']} escalated to the teacher |",
            f"| routed answers vs the teacher | agree on {report['agreement_routed']:.1%} |",
            f"| cost (estimated FLOPs) | {cost['flops'] / 1e9:.3f} GFLOP routed vs "
            f"{cost['baseline_flops'] / 1e9:.3f} GFLOP all on the teacher: "
            f"**{cost['ratio']:.1f}x** cheaper |",
            f"| time | record {timings['record_s']:.0f} s, analyze {timings['analyze_s']:.0f} s, "
            f"train {timings['train_s']:.0f} s, deploy {timings['deploy_s']:.0f} s, route "
            f"{timings['route_s']:.0f} s; total {timings['total_s'] / 60:.1f} min |",
        )
    )
    ratios = f"The cost ratio, {cost['ratio']:.1f}x, stays under the {size_ratio:.1f}x size ratio"
    return f"""{SECTION}

Measured by `slmesh convert demo` (`make conversion`) on {dt.date.today().isoformat()}:
{machine["cores"]} cores ({machine["cpu"]}), Python {machine["python"]}, load {machine["load"]}.

| step | result |
|---|---|
{steps}

Reading it: {report["student_share"]:.0%} of the routed calls never reached the teacher (the paper
estimates 40-70% of an agent's calls replaceable by SLMs); the routed answers matched the
teacher's on {report["agreement_routed"]:.1%}, the rest being the student's confident
disagreements (the calibration trades them against escalations: `convert deploy
--target-agreement`). {ratios}
because each escalated call pays for the student's attempt and the teacher's answer; and the
"large model" here is itself a micro-SLM, so the gap — and the possible saving — is much
smaller than between a small model and a frontier LLM (the paper's 10-30x).

Per model, routed phase:

| model | parameters | calls | tokens | GFLOP |
|---|---|---|---|---|
{rows}
"""
