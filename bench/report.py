"""docs/benchmarks.md: each benchmark owns one ``## `` section and replaces only that."""

from __future__ import annotations

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
