"""The conformance executor covers the TCK's scenarios, and the gate reads the TCK's report as
documented (tests/conformance: executor.py, run.py)."""

from __future__ import annotations

import re

import pytest

from tests.conformance.executor import MESSAGE_RESPONSE, SCENARIOS, scenario_for
from tests.conformance.run import DEFAULT_TCK, WAIVED, Outcome


def test_every_scenario_of_the_tck_has_a_behaviour() -> None:
    features = sorted((DEFAULT_TCK / "scenarios").glob("*.feature"))
    if not features:
        pytest.skip(f"no A2A TCK at {DEFAULT_TCK}")
    prefixes = {m for f in features for m in re.findall(r'with prefix "([^"]+)"', f.read_text())}
    ours = {s.prefix for s in SCENARIOS} | {MESSAGE_RESPONSE}
    assert prefixes == ours


def test_the_longest_prefix_wins() -> None:
    assert scenario_for("tck-artifact-file-url-abc").prefix == "tck-artifact-file-url"  # type: ignore[union-attr]
    assert scenario_for("tck-artifact-file-abc").prefix == "tck-artifact-file"  # type: ignore[union-attr]
    assert scenario_for("something-else") is None


def _outcome(**statuses: tuple[str, str]) -> Outcome:
    report = {
        "per_requirement": {
            rid: {"level": level, "status": status, "transports": {}, "errors": ["why"]}
            for rid, (level, status) in statuses.items()
        }
    }
    return Outcome("mesh", 1.0, 0, report=report)


def test_gate_fails_on_must_and_should_but_not_may_or_skips() -> None:
    outcome = _outcome(
        A=("MUST", "FAIL"), B=("SHOULD", "FAIL"), C=("MAY", "FAIL"), D=("MUST", "SKIPPED")
    )
    assert [f.split()[0] for f in outcome.failures()] == ["A", "B"]


def test_gate_accepts_only_the_waived_failures() -> None:
    waived = next(iter(WAIVED))
    outcome = _outcome(**{waived: ("SHOULD", "FAIL"), "X": ("SHOULD", "PASS")})
    assert (outcome.failures(), outcome.waived()) == ([], [waived])
