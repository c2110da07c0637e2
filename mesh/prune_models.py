"""``python -m mesh.prune_models SERVICE_DIR MODELS_DIR``: keep only the models a service loads.

A container image carries one service. Its spec names the model folders it loads
(``options.model``, and ``options.adapter`` for a LoRA student, relative to the spec), so
the image keeps those and drops every other folder under ``MODELS_DIR``: an SLM agent
keeps its own micro-SLM, a deployed student keeps the shared base and its adapter, and a
service without a local model (the registry, the tools agent, a remote-backend agent)
keeps none. The image build runs this (deploy/Dockerfile).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from mesh.config import ServiceSpec


def model_dirs(service_dir: Path, models_dir: Path) -> list[Path]:
    """The folders under ``models_dir`` that ``service_dir``'s spec loads, as paths relative to it.

    A spec is read where it lies in the repository (``services/<name>/``), so its relative
    paths (``../../models/...``) resolve against the checkout holding ``models_dir``.
    """
    spec = ServiceSpec.load(service_dir)
    root = models_dir.resolve()
    found: list[Path] = []
    for key in ("model", "adapter"):
        value = spec.options.get(key)
        if not isinstance(value, str) or not value:
            continue
        path = (service_dir / value).resolve()
        if path.is_relative_to(root) and path != root:
            found.append(path.relative_to(root))
    return found


def prune(service_dir: Path, models_dir: Path) -> list[Path]:
    """Deletes what ``service_dir`` does not load from ``models_dir``; returns what stays."""
    keep = model_dirs(service_dir, models_dir)
    _prune(models_dir, [part.parts for part in keep])
    return keep


def _prune(folder: Path, keep: list[tuple[str, ...]]) -> None:
    for child in folder.iterdir():
        inside = [parts[1:] for parts in keep if parts and parts[0] == child.name]
        if any(not rest for rest in inside):
            continue  # this whole folder is loaded
        if inside and child.is_dir():
            _prune(child, inside)
        elif child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    kept = prune(Path(args[0]), Path(args[1]))
    print("models kept: " + (", ".join(str(p) for p in kept) or "none"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
