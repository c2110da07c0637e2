"""``slmesh convert``: the conversion loop's commands (train a student, deploy it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

convert_app = typer.Typer(
    help="The LLM-to-SLM conversion loop: recorded calls -> clusters -> LoRA students -> agents.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

_DB_HELP = "The recorded-calls database (default: SLMESH_RECORD_DB)."


def _db(db: Path | None) -> Path:
    from mesh.config import Settings

    path = db or Settings().record_db
    if path is None:
        err.print("[red]error:[/red] no call database: pass --db or set SLMESH_RECORD_DB")
        raise typer.Exit(2)
    if not path.is_file():
        err.print(f"[red]error:[/red] {path} does not exist")
        raise typer.Exit(2)
    return path


@convert_app.command("train")
def train(
    cluster: Annotated[str, typer.Argument(help="Cluster id or name (see `slmesh convert analyze`).")],
    base: Annotated[str, typer.Option(help="Base model: a folder or a model id.")] = "models/base",
    db: Annotated[Path | None, typer.Option(help=_DB_HELP)] = None,
    out: Annotated[Path | None, typer.Option(help="Student folder (default: models/students/CLUSTER).")] = None,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    alpha: Annotated[int, typer.Option(help="LoRA alpha (scale = alpha / rank).")] = 32,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps (overrides --epochs).")] = None,
    epochs: Annotated[float, typer.Option(help="Passes over the train split.")] = 6.0,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-3,
    batch_size: Annotated[int, typer.Option(help="Calls per step.")] = 16,
    holdout: Annotated[float, typer.Option(help="Share of calls held out for the served evaluation.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the split, the batches and the adapter init.")] = 0,
    train_embeddings: Annotated[bool, typer.Option(help="Also train the embeddings in full (modules_to_save).")] = False,
    services: Annotated[Path, typer.Option(help="Where the teacher's spec is (skill names, stop, max_new_tokens).")] = Path("services"),
    threads: Annotated[int, typer.Option(help="torch threads (one is fastest on a busy machine).")] = 1,
) -> None:
    """Fine-tune a LoRA student on a cluster's recorded calls, then score it served on the
    held-out calls (agreement with the teacher, valid rate) into OUT/training.json.

    Resumable: an interrupted run left a checkpoint in OUT; the same command continues it.
    """
    from mesh.convert.lora import ConversionError, StudentPlan, load_teacher_spec, train_student
    from mesh.convert.store import CallStore

    store = CallStore(_db(db))
    try:
        found = store.cluster(cluster)
        if found is None:
            raise ConversionError(f"no cluster {cluster!r} (run `slmesh convert analyze`)")
        calls = store.cluster_calls(found.id)
        teacher = load_teacher_spec(services, calls[0].agent) if calls else None
        plan = StudentPlan(rank=rank, alpha=alpha, steps=steps, epochs=epochs, lr=lr,
                           batch_size=batch_size, holdout=holdout, seed=seed,
                           train_embeddings=train_embeddings, threads=threads)
        record = train_student(store, cluster, base, out or Path("models/students") / found.name,
                               plan=plan, teacher_spec=teacher, console=err)
    except (ConversionError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        store.close()
    heldout = record.get("metrics", {}).get("heldout")
    console.print(f"student {record['student']}: {record['calls']['train']} calls, "
                  f"{record['steps']} steps in {record['wall_time_s']:.0f}s, "
                  f"{record['adapter_parameters']:,} adapter parameters on a "
                  f"{record['base_parameters']:,}-parameter base "
                  f"({record['parameters']:,} served, merged)")
    if heldout:
        console.print(f"held-out ({heldout['count']} calls, served): agreement "
                      f"{heldout['agreement']:.3f}, valid {heldout['valid']:.3f}"
                      + (f" (base alone: {heldout['base_agreement']:.3f})"
                         if "base_agreement" in heldout else ""))


@convert_app.command("deploy")
def deploy(
    student: Annotated[Path, typer.Argument(help="A student folder written by `slmesh convert train`.")],
    name: Annotated[str, typer.Option(help="Service name: writes SERVICES/NAME/agent.yaml.")],
    services: Annotated[Path, typer.Option("--services-dir", help="Folder of service specs.")] = Path("services"),
    force: Annotated[bool, typer.Option(help="Overwrite an existing service folder's spec.")] = False,
) -> None:
    """Write an agent spec serving the student under its teacher's skill ids; then
    `slmesh serve SERVICES/NAME` (or `slmesh up`) runs it like any agent."""
    from pydantic import ValidationError

    from mesh.config import SpecError
    from mesh.convert.deploy import deploy_student
    from mesh.convert.lora import ConversionError

    try:
        spec = deploy_student(student, name, services, force=force)
    except (ConversionError, SpecError, ValidationError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    skills = ", ".join(s.id for s in spec.skills)
    console.print(f"wrote {services / name / 'agent.yaml'}: agent {spec.name}, skills {skills}; "
                  f"start it with `slmesh serve {services / name}`")


@convert_app.command("record-demo")
def record_demo(
    service: Annotated[Path, typer.Argument(help="The teacher agent's service folder, e.g. services/classifier.")],
    db: Annotated[Path, typer.Option(help="Database to write the calls into.")],
    count: Annotated[int, typer.Option(help="Messages to send (the agent's synthetic test split).")] = 1000,
    cluster: Annotated[str, typer.Option(help="Name of the one cluster holding the calls.")] = "demo",
    seed: Annotated[int, typer.Option(help="Seed of the generated messages.")] = 0,
) -> None:
    """Teacher traffic without a mesh: serve an agent in-process over generated messages and
    store its calls plus one cluster (replacing the database's clusters), for demos of
    `convert train`."""
    from mesh.config import ServiceSpec
    from mesh.convert.store import CallStore
    from mesh.convert.teacher import demo_inputs, record_calls

    spec = ServiceSpec.load(service)
    store = CallStore(db)
    try:
        with console.status(f"{spec.name}: answering {count} messages…"):
            clusters = record_calls(spec, demo_inputs(spec.name, count, seed), store,
                                    cluster=cluster)
    finally:
        store.close()
    console.print(f"{db}: {clusters[0].size} calls of {spec.name} in cluster "
                  f"{clusters[0].id} ({clusters[0].name})")
