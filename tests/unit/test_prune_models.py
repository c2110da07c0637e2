"""The image build keeps exactly the model folders a service's spec loads."""

from __future__ import annotations

from pathlib import Path

import yaml

from mesh.prune_models import main, model_dirs


def _checkout(tmp_path: Path) -> Path:
    """A checkout with three agents' models, a base, two students and a stray file."""
    for folder in ("extractor", "classifier", "base", "students/refunds", "students/status"):
        (tmp_path / "models" / folder).mkdir(parents=True)
        (tmp_path / "models" / folder / "model.safetensors").write_bytes(b"w")
    (tmp_path / "models" / "README.md").write_text("notes")
    return tmp_path


def _spec(root: Path, name: str, options: dict[str, object]) -> Path:
    folder = root / "services" / name
    folder.mkdir(parents=True)
    spec = {
        "name": name,
        "kind": "agent",
        "executor": "mesh.slm.executor:SLMExecutor",
        "options": options,
    }
    (folder / "agent.yaml").write_text(yaml.safe_dump(spec))
    return folder


def _left(root: Path) -> set[str]:
    return {str(p.relative_to(root / "models")) for p in (root / "models").rglob("*")}


def test_a_student_image_keeps_the_base_and_its_adapter_only(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    service = _spec(
        root, "refunds", {"model": "../../models/base", "adapter": "../../models/students/refunds"}
    )
    assert model_dirs(service, root / "models") == [Path("base"), Path("students/refunds")]
    assert main([str(service), str(root / "models")]) == 0
    assert _left(root) == {
        "base",
        "base/model.safetensors",
        "students",
        "students/refunds",
        "students/refunds/model.safetensors",
    }


def test_an_agent_image_keeps_its_own_model_and_a_remote_agent_none(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    service = _spec(root, "extractor", {"model": "../../models/extractor"})
    assert main([str(service), str(root / "models")]) == 0
    assert _left(root) == {"extractor", "extractor/model.safetensors"}
    remote = _spec(
        root,
        "remote",
        {"backend": "openai", "model": "qwen2.5-7b-instruct", "base_url": "http://127.0.0.1:9/v1"},
    )
    assert model_dirs(remote, root / "models") == []
    assert main([str(remote), str(root / "models")]) == 0
    assert _left(root) == set()


def test_wrong_arguments_exit_2(tmp_path: Path) -> None:
    assert main([str(tmp_path)]) == 2
