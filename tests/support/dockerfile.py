"""A small Dockerfile reader for static checks (no Docker engine here): instructions by stage."""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str
    value: str
    line: int

    def flags(self) -> dict[str, str]:
        """``--from=build``-style flags at the start of the value."""
        return dict(
            m.groups() for m in re.finditer(r"--([\w-]+)=(\S+)", self.value.split(" /", 1)[0])
        )

    def args(self) -> list[str]:
        """Words after the flags (JSON form decoded)."""
        words = [w for w in shlex.split(self.value) if not w.startswith("--")]
        return words


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages of a Dockerfile (continuations joined, comments
    dropped)."""
    logical: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append((start, buffer + line))
        buffer = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, text in logical:
        keyword, _, value = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = value.split()
            stages.append(
                Stage(parts[0], parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None)
            )
        elif not stages:
            if keyword == "ARG":
                name, _, default = value.partition("=")
                global_args[name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, value.strip(), number))
    return global_args, stages


def expand(text: str, values: dict[str, str]) -> str:
    """``${NAME}`` / ``$NAME`` substitution as the builder does for COPY, ENV and FROM."""
    return re.sub(
        r"\$\{(\w+)(?::[-?][^}]*)?\}|\$(\w+)",
        lambda m: values.get(m.group(1) or m.group(2), m.group(0)),
        text,
    )


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether a context path is excluded by .dockerignore patterns (last match wins)."""
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.replace("**/", ""))
            for p in prefixes
        ):
            excluded = not negate
    return excluded


def ignore_patterns(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
