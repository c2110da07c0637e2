"""Renders docs/configuration.md from :class:`~mesh.config.Settings`, so the doc cannot drift."""

from __future__ import annotations

import sys

from mesh.config import Settings

HEADER = """# Configuration

Every process reads one settings model, `mesh.config.Settings`, from `SLMESH_*` environment
variables once at start-up; per-service behaviour lives in `services/<name>/agent.yaml`.
Telemetry is switched on by `SLMESH_OTEL_ENABLED`; the OTLP endpoint, headers, sampler and
extra resource attributes use the standard `OTEL_*` variables of the OpenTelemetry SDK.

This file is generated: `python -m mesh.config_doc > docs/configuration.md`
(a test fails when it is out of date).

| variable | default | meaning |
|---|---|---|
"""


def render() -> str:
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "unset" if default is None else f"`{default}`"
        rows.append(f"| `SLMESH_{name.upper()}` | {shown} | {field.description or ''} |")
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
