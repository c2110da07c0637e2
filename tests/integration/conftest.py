"""Fixtures shared by the integration tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.keys import new_key, write_bundle
from tests.support.pki import issue
from tests.support.procs import ROOT


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[int, Path, Path, Path]]:
    """(port, log, CA file, agent key file) of a running webhook receiver."""
    ca = issue(tmp_path, "push-ca", None)
    issue(tmp_path, "webhook", ca)
    key_file, key = new_key(tmp_path, "echo-key")
    bundle = write_bundle(tmp_path / "bundle.json", (key, ["echo"]))
    log = tmp_path / "webhook.jsonl"
    log.touch()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.webhook",
            str(tmp_path / "webhook.pem"),
            str(tmp_path / "webhook.key"),
            str(bundle),
            str(log),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[1])
        yield port, log, tmp_path / "push-ca.pem", key_file
    finally:
        proc.kill()
        proc.wait()
