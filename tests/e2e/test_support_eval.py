"""The hand-written support evaluation set end to end: one private mesh (every service as a
process, a fresh order database), every item through the planner, scored by the harness."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from mesh.support.evaluation import (
    BLOCK_BEGIN,
    BLOCK_END,
    PARTS,
    EvalRun,
    evaluate,
    format_failures,
    load_set,
    machine_description,
    meets_targets,
    private_mesh,
    render_block,
)

pytestmark = pytest.mark.integration

ENDED = ("completed", "rejected", "input_required", "failed", "canceled")
"""A task that reached a terminal (or interrupted) state: answered, refused by the planner,
waiting for a confirmation turn (a side effect above the limit), or failed (a step broke;
scored as wrong on every count). Not ended: a transport error or a task still running when
its item's deadline passed."""


@pytest.fixture(scope="module")
def eval_run() -> Iterator[EvalRun]:
    items = load_set()
    with private_mesh(timeout_s=300) as registry:
        yield asyncio.run(evaluate(items, registry=registry, concurrency=8, timeout_s=180))


def test_every_item_gets_a_task_that_ends_and_the_harness_reports(eval_run: EvalRun) -> None:
    stuck = [
        (s.item.id, s.outcome.state, s.outcome.error)
        for s in eval_run.scores
        if s.outcome.state not in ENDED
    ]
    assert not stuck
    assert len(eval_run.scores) == len(load_set())
    block = render_block(
        eval_run.summaries,
        when=datetime.now(UTC),
        machine=machine_description(),
        seconds=eval_run.seconds,
    )
    assert block.startswith(BLOCK_BEGIN)
    assert block.endswith(BLOCK_END)
    for part in PARTS:
        assert eval_run.summaries[part].items > 0
        assert f"{part} ({eval_run.summaries[part].items})" in block
    format_failures(eval_run.scores)  # the open part's failure listing renders


@pytest.mark.xfail(strict=False, reason="issue 17 targets not met yet")
def test_issue_17_targets_on_the_hand_written_set(eval_run: EvalRun) -> None:
    missed = {part: meets_targets(eval_run.summaries[part]) for part in PARTS}
    assert missed == {part: [] for part in PARTS}
