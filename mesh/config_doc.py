"""Renders docs/configuration.md from :class:`~mesh.config.Settings`, so the doc cannot drift."""

from __future__ import annotations

import sys

from pydantic import AliasChoices

from mesh.config import Settings

HEADER = """# Configuration

Every process reads one settings model, `mesh.config.Settings`, from `SLMESH_*` environment
variables once at start-up; per-service behaviour lives in `services/<name>/agent.yaml`.
Telemetry follows the OpenTelemetry SDK's standard variables: those the mesh acts on are in the
table (`OTEL_SDK_DISABLED`, `OTEL_<SIGNAL>_EXPORTER`, `OTEL_EXPORTER_OTLP_PROTOCOL`,
`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`); the SDK reads the others itself
(`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`,
`OTEL_EXPORTER_OTLP_ENDPOINT` / `_HEADERS`, `OTEL_BSP_*`, `OTEL_PROPAGATORS`). The
`SLMESH_OTEL_ENABLED`, `SLMESH_OTEL_EXPORT`, `SLMESH_OTLP_PROTOCOL` and `SLMESH_TRACE_CONTENT`
variables are deprecated aliases kept for one release; where both are set, the standard one
wins.

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
        rows.append(
            f"| {_variables(name, field.validation_alias)} | {shown} | {field.description or ''} |"
        )
    return HEADER + "\n".join(rows) + "\n"


def _variables(name: str, alias: object) -> str:
    """The variable(s) a field is read from: its alias(es), else ``SLMESH_<NAME>``."""
    if isinstance(alias, str):
        return f"`{alias}`"
    if isinstance(alias, AliasChoices):
        first, *others = [str(c) for c in alias.choices]
        return f"`{first}`" + "".join(f" (alias `{o}`)" for o in others)
    return f"`SLMESH_{name.upper()}`"


if __name__ == "__main__":
    sys.stdout.write(render())
