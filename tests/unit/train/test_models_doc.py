"""docs/models.md: scoring one agent rewrites the table without losing the others' rows."""

from __future__ import annotations

from mesh.train.models_doc import ModelRow, read_rows, render


def test_a_rendered_table_reads_back_into_the_same_rows() -> None:
    rows = [
        ModelRow(
            "classifier",
            2_164_416,
            4.5,
            10.8,
            5944,
            {"seen": {"exact": 0.987, "valid": 1.0}, "test": {"exact": 0.807, "valid": 1.0}},
        ),
        ModelRow(
            "planner",
            2_164_416,
            4.5,
            9.0,
            1200,
            {"test": {"exact": 0.5, "skills": 0.75, "valid": 1.0}},
        ),
    ]
    text = render(rows, 150)
    assert read_rows(text) == rows
    assert render(read_rows(text), 150) == text
