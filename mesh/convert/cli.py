"""``slmesh convert``: the LLM-to-SLM conversion loop from the command line."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mesh.config import Settings

convert_app = typer.Typer(help="The LLM-to-SLM conversion loop: recorded calls -> tasks -> students.",
                          no_args_is_help=True)
console = Console()
err = Console(stderr=True)

DbOption = Annotated[Path | None, typer.Option(
    "--db", help="The recorded-calls store (default: SLMESH_RECORD_DB).")]


def store_path(db: Path | None) -> Path:
    """--db, else SLMESH_RECORD_DB; exits 2 with how to fix it when neither names an existing file."""
    try:
        path = db or Settings().record_db
    except ValueError as exc:
        err.print(f"[red]invalid SLMESH_* configuration:[/red] {exc}")
        raise typer.Exit(2) from exc
    if path is None:
        err.print("[red]error:[/red] no recorded calls: pass --db PATH or set SLMESH_RECORD_DB "
                  "(agents record their calls there)")
        raise typer.Exit(2)
    if not path.is_file():
        err.print(f"[red]error:[/red] no recorded-calls store at {path}: start agents with "
                  "SLMESH_RECORD_DB set to record calls")
        raise typer.Exit(2)
    return path


@convert_app.command()
def analyze(
    db: DbOption = None,
    min_size: Annotated[int, typer.Option(min=1, help="Smaller clusters are reported as too small to train on.")] = 20,
    threshold: Annotated[float, typer.Option(
        min=0.0, max=2.0, help="Within one task, inputs whose mean cosine distance is at most this form one cluster.")] = 0.85,
    template_similarity: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Prompt templates at least this similar (cosine) count as one task.")] = 0.9,
    examples: Annotated[int, typer.Option(min=0, help="Example calls per cluster.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Curate the recorded calls (drop failures, rejects, duplicates) and cluster them into tasks.

    Replaces the store's clusters; `convert train CLUSTER` reads them back.
    """
    from mesh.convert.analyze import analyze as run_analysis
    from mesh.convert.store import CallStore
    from mesh.embeddings import embed, load_model

    store = CallStore(store_path(db))
    try:
        with nullcontext() if as_json else console.status("embedding and clustering calls"):
            model = load_model()
            report = run_analysis(store, lambda texts: embed(model, texts), min_size=min_size,
                                  threshold=threshold, template_similarity=template_similarity,
                                  examples=examples).to_dict()
    finally:
        store.close()
    if as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return
    _print_report(report)


def _print_report(report: dict[str, Any]) -> None:
    dropped = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report["dropped"].items())
    console.print(f"{report['calls']} calls recorded, {report['kept']} kept (dropped: {dropped})")
    table = Table(title="Clusters (candidate tasks for a specialized SLM)")
    for column in ("id", "name", "size", "output", "agents", "models", "examples"):
        table.add_column(column, overflow="fold")
    for cluster in report["clusters"]:
        size = str(cluster["size"]) + ("" if cluster["trainable"] else f" (too small, < {report['min_size']})")
        table.add_row(
            str(cluster["id"]), cluster["name"], size, cluster["output_kind"],
            _shares(cluster["agents"]), _shares(cluster["models"]),
            "\n".join(f"{e['input'][:60]} -> {str(e['output'])[:40]}" for e in cluster["examples"]),
        )
    console.print(table)


def _shares(shares: dict[str, float]) -> str:
    return "\n".join(f"{name} {share:.0%}" for name, share in shares.items())
