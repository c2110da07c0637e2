"""Sections of the docs that commands write (docs/benchmarks.md, docs/conversion.md): each
command replaces only its own ``## `` section, and states the machine it measured on."""

from __future__ import annotations

import contextlib
import os
import platform
from importlib import metadata
from pathlib import Path

HEADER = (
    "# Benchmarks\n\nWritten by `slmesh bench ...` commands (see `make bench`); each command "
    "replaces only its own section.\n"
)


def write_section(path: Path, section: str, text: str) -> None:
    """Replaces the ``section`` heading's block of ``path`` (up to the next ``## ``), keeping the
    rest."""
    body = path.read_text(encoding="utf-8") if path.is_file() else HEADER
    lines = body.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == section), None)
    new = text.rstrip("\n").splitlines()
    if start is None:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += ["", *new]
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        tail = lines[end:]
        lines = lines[:start] + new + (["", *tail] if tail else [])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")


def machine_facts() -> dict[str, str]:
    """The machine a measurement ran on, in words: cores, CPU model, versions, load (no host
    name, no path)."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "cores": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "a2a-sdk": version("a2a-sdk"),
        "grpcio": version("grpcio"),
        "os": f"{platform.system()} {platform.release()}",
        "load": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
