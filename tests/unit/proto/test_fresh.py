"""The committed generated code in mesh/proto must match protos/ (run `make protos`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mesh.proto import _generate


def test_committed_generated_code_is_fresh(capsys: pytest.CaptureFixture[str]) -> None:
    exit_code = _generate.main(["--check"])

    output = capsys.readouterr()
    assert exit_code == 0, output.err
    assert "up to date" in output.out


def test_check_fails_and_names_stale_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "proto"
    shutil.copytree(_generate.OUT_DIR, out, ignore=shutil.ignore_patterns("__pycache__"))
    (out / "slmesh/registry/v1/registry_pb2.py").write_text("# edited by hand\n")
    monkeypatch.setattr(_generate, "OUT_DIR", out)

    exit_code = _generate.main(["--check"])

    assert exit_code == 1
    err = capsys.readouterr().err
    assert "stale; run: python -m mesh.proto._generate" in err
    assert "changed: mesh/proto/slmesh/registry/v1/registry_pb2.py" in err


def test_check_lists_changed_missing_and_unexpected_files(tmp_path: Path) -> None:
    out = tmp_path / "proto"
    shutil.copytree(_generate.OUT_DIR, out, ignore=shutil.ignore_patterns("__pycache__"))
    (out / "slmesh/registry/v1/registry_pb2.py").write_text("# edited by hand\n")
    (out / "slmesh/registry/v1/registry_pb2.pyi").unlink()
    (out / "slmesh/registry/v1/old_pb2.py").write_text("# left over\n")

    stale = _generate.check(out_dir=out)

    assert stale == {
        "changed": ["slmesh/registry/v1/registry_pb2.py"],
        "missing": ["slmesh/registry/v1/registry_pb2.pyi"],
        "unexpected": ["slmesh/registry/v1/old_pb2.py"],
    }


def test_regenerate_replaces_old_output_and_keeps_hand_written_files(tmp_path: Path) -> None:
    out = tmp_path / "proto"
    out.mkdir()
    (out / "__init__.py").write_text('"""hand written"""\n')
    (out / "obsolete").mkdir()
    (out / "obsolete" / "gone_pb2.py").write_text("# from a deleted proto\n")

    _generate.regenerate(out_dir=out)

    assert not (out / "obsolete").exists()
    assert (out / "__init__.py").read_text() == '"""hand written"""\n'
    assert _generate.check(out_dir=out) == {}
    grpc_module = (out / "slmesh/registry/v1/registry_pb2_grpc.py").read_text()
    assert "from mesh.proto.slmesh.registry.v1 import registry_pb2" in grpc_module
