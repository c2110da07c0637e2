"""``slmesh convert``: the LLM-to-SLM conversion loop from the command line: analyze the recorded
calls, train a LoRA student on one cluster, deploy it as an agent."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from mesh.config import Settings
from mesh.tables import Column, print_table

convert_app = typer.Typer(
    help="The LLM-to-SLM conversion loop: recorded calls -> tasks -> students.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

DbOption = Annotated[
    Path | None, typer.Option("--db", help="The recorded-calls store (default: SLMESH_RECORD_DB).")
]


def store_path(db: Path | None) -> Path:
    """--db, else SLMESH_RECORD_DB; exits 2 with how to fix it when neither names an existing
    file."""
    try:
        path = db or Settings().record_db
    except ValueError as exc:
        err.print(f"[red]invalid SLMESH_* configuration:[/red] {exc}")
        raise typer.Exit(2) from exc
    if path is None:
        err.print(
            "[red]error:[/red] no recorded calls: pass --db PATH or set SLMESH_RECORD_DB "
            "(agents record their calls there)"
        )
        raise typer.Exit(2)
    if not path.is_file():
        err.print(
            f"[red]error:[/red] no recorded-calls store at {path}: start agents with "
            "SLMESH_RECORD_DB set to record calls"
        )
        raise typer.Exit(2)
    return path


@convert_app.command()
def analyze(
    db: DbOption = None,
    min_size: Annotated[
        int, typer.Option(min=1, help="Smaller clusters are reported as too small to train on.")
    ] = 20,
    threshold: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=2.0,
            help=(
                "Within one task, inputs whose mean cosine distance is at most this form one "
                "cluster."
            ),
        ),
    ] = 0.85,
    template_similarity: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Prompt templates at least this similar (cosine) count as one task.",
        ),
    ] = 0.9,
    examples: Annotated[int, typer.Option(min=0, help="Example calls per cluster.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Curate the recorded calls (drop failures, rejects, duplicates) and cluster them into tasks.

    Replaces the store's clusters; `convert train CLUSTER` reads them back.
    """
    from mesh.convert.analyze import analyze as run_analysis
    from mesh.embeddings import embed, load_model
    from mesh.recording.store import CallStore

    store = CallStore(store_path(db))
    try:
        with nullcontext() if as_json else console.status("embedding and clustering calls"):
            model = load_model()
            report = run_analysis(
                store,
                lambda texts: embed(model, texts),
                min_size=min_size,
                threshold=threshold,
                template_similarity=template_similarity,
                examples=examples,
            ).to_dict()
    finally:
        store.close()
    if as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return
    _print_report(report)


def _print_report(report: dict[str, Any], out: Console = console) -> None:
    dropped = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report["dropped"].items())
    out.print(f"{report['calls']} calls recorded, {report['kept']} kept (dropped: {dropped})")
    rows = []
    for cluster in report["clusters"]:
        size = str(cluster["size"]) + (
            "" if cluster["trainable"] else f" (too small, < {report['min_size']})"
        )
        rows.append(
            (
                str(cluster["id"]),
                cluster["name"],
                size,
                cluster["output_kind"],
                _shares(cluster["agents"]),
                _shares(cluster["models"]),
                "\n".join(
                    f"{e['input'][:60]} -> {str(e['output'])[:40]}" for e in cluster["examples"]
                ),
            )
        )
    columns = [
        Column("id", justify="right"),
        Column("name"),
        Column("size", fold=True, min_fold=6),
        Column("output", give_way=2),
        Column("agents", fold=True),
        Column("models", fold=True, give_way=1),
        Column("examples", fold=True, min_fold=20),
    ]
    print_table(out, columns, rows, "Clusters (candidate tasks for a specialized SLM)")


def _shares(shares: dict[str, float]) -> str:
    return "\n".join(f"{name} {share:.0%}" for name, share in shares.items())


@convert_app.command("train")
def train(
    cluster: Annotated[
        str, typer.Argument(help="Cluster id or name (see `slmesh convert analyze`).")
    ],
    base: Annotated[str, typer.Option(help="Base model: a folder or a model id.")] = "models/base",
    db: DbOption = None,
    out: Annotated[
        Path | None, typer.Option(help="Student folder (default: models/students/CLUSTER).")
    ] = None,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    alpha: Annotated[int, typer.Option(help="LoRA alpha (scale = alpha / rank).")] = 32,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps (overrides --epochs).")] = None,
    epochs: Annotated[float, typer.Option(help="Passes over the train split.")] = 6.0,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-3,
    batch_size: Annotated[int, typer.Option(help="Calls per step.")] = 16,
    holdout: Annotated[
        float, typer.Option(help="Share of calls held out for the served evaluation.")
    ] = 0.2,
    seed: Annotated[
        int, typer.Option(help="Seed of the split, the batches and the adapter init.")
    ] = 0,
    train_embeddings: Annotated[
        bool, typer.Option(help="Also train the embeddings in full (modules_to_save).")
    ] = False,
    services: Annotated[
        Path, typer.Option(help="Where the teacher's spec is (skill names, stop, max_new_tokens).")
    ] = Path("services"),
    threads: Annotated[
        int, typer.Option(help="torch threads (one is fastest on a busy machine).")
    ] = 1,
) -> None:
    """Fine-tune a LoRA student on a cluster's recorded calls, then score it served on the
    held-out calls (agreement with the teacher, valid rate) into OUT/training.json.

    Resumable: an interrupted run left a checkpoint in OUT; the same command continues it.
    """
    from mesh.convert.lora import ConversionError, StudentPlan, load_teacher_spec, train_student
    from mesh.recording.store import CallStore

    store = CallStore(store_path(db))
    try:
        found = store.cluster(cluster)
        if found is None:
            raise ConversionError(f"no cluster {cluster!r} (run `slmesh convert analyze`)")
        calls = store.cluster_calls(found.id)
        teacher = load_teacher_spec(services, calls[0].agent) if calls else None
        plan = StudentPlan(
            rank=rank,
            alpha=alpha,
            steps=steps,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            holdout=holdout,
            seed=seed,
            train_embeddings=train_embeddings,
            threads=threads,
        )
        record = train_student(
            store,
            cluster,
            base,
            out or Path("models/students") / found.name,
            plan=plan,
            teacher_spec=teacher,
            console=err,
        )
    except (ConversionError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        store.close()
    heldout = record.get("metrics", {}).get("heldout")
    console.print(
        f"student {record['student']}: {record['calls']['train']} calls, "
        f"{record['steps']} steps in {record['wall_time_s']:.0f}s, "
        f"{record['adapter_parameters']:,} adapter parameters on a "
        f"{record['base_parameters']:,}-parameter base "
        f"({record['parameters']:,} served, merged)"
    )
    if heldout:
        console.print(
            f"held-out ({heldout['count']} calls, served): agreement "
            f"{heldout['agreement']:.3f}, valid {heldout['valid']:.3f}"
            + (
                f" (base alone: {heldout['base_agreement']:.3f})"
                if "base_agreement" in heldout
                else ""
            )
        )


@convert_app.command("deploy")
def deploy(
    student: Annotated[
        Path, typer.Argument(help="A student folder written by `slmesh convert train`.")
    ],
    name: Annotated[str, typer.Option(help="Service name: writes SERVICES/NAME/agent.yaml.")],
    services: Annotated[
        Path, typer.Option("--services-dir", help="Folder of service specs.")
    ] = Path("services"),
    force: Annotated[
        bool, typer.Option(help="Overwrite an existing service folder's spec.")
    ] = False,
    target_agreement: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Calibrate the student's escalation threshold (options.escalate_below) on its "
            "held-out calls so the answers it keeps agree with the teacher this often; 0 disables.",
        ),
    ] = 0.95,
) -> None:
    """Write an agent spec serving the student under its teacher's skill ids; then
    `slmesh serve SERVICES/NAME` (or `slmesh up`) runs it like any agent."""
    from pydantic import ValidationError

    from mesh.config import SpecError
    from mesh.convert.deploy import deploy_student
    from mesh.convert.lora import ConversionError

    try:
        spec = deploy_student(
            student, name, services, force=force, target_agreement=target_agreement or None
        )
    except (ConversionError, SpecError, ValidationError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    skills = ", ".join(s.id for s in spec.skills)
    if spec.options.get("escalate_below") is not None:
        console.print(
            f"escalation threshold: mean logprob {spec.options['escalate_below']} "
            f"(calibrated for {target_agreement:.0%} agreement on held-out calls)"
        )
    console.print(
        f"wrote {services / name / 'agent.yaml'}: agent {spec.name}, skills {skills}; "
        f"start it with `slmesh serve {services / name}`"
    )


@convert_app.command("demo")
def demo(
    work: Annotated[
        Path, typer.Option(help="Work folder (recorded calls, student, specs, logs).")
    ] = Path(".slmesh/conversion"),
    record: Annotated[
        int, typer.Option(min=50, help="Messages served and recorded before training.")
    ] = 1000,
    serve: Annotated[
        int, typer.Option(min=10, help="Fresh messages routed once the student is deployed.")
    ] = 400,
    extract: Annotated[
        int,
        typer.Option(
            min=0,
            help="Of the recorded messages, how many also go to the "
            "extractor (a second task for the clustering).",
        ),
    ] = 200,
    names_from: Annotated[
        str,
        typer.Option(
            help="Agent the recorder asks for the names to redact in each "
            "input ('' : names only from the calls' own outputs)."
        ),
    ] = "extractor",
    seed: Annotated[int, typer.Option(help="Seed of the workload and of training.")] = 0,
    services_dir: Annotated[
        Path, typer.Option(help="Where the registry, planner and teacher specs are.")
    ] = Path("services"),
    output: Annotated[
        Path | None,
        typer.Option(
            help="Markdown file whose Demonstration section is replaced (none: print only)."
        ),
    ] = Path("docs/conversion.md"),
) -> None:
    """The whole loop on this machine: serve and record a workload with the teacher agents,
    analyze, train a LoRA student, deploy it, route fresh traffic SLM-first; report the share
    the student served, agreement with the teacher and the cost ratio. Run it in a checkout
    (it reads services/ and models/base)."""
    from mesh.convert.demo import DemoOptions, run_demo

    options = DemoOptions(
        work=work,
        record=record,
        serve=serve,
        extract=extract,
        seed=seed,
        names_from=names_from or None,
        services=services_dir,
        output=output,
    )
    try:
        run_demo(options, console)
    except (RuntimeError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
