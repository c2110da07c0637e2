"""The settings model and service specs: env parsing, clear errors, and the generated doc."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from mesh.config import ServiceSpec, Settings, SpecError, discover_services
from mesh.config_doc import render

ROOT = Path(__file__).resolve().parents[2]


def test_env_vars_are_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLMESH_GRPC_PORT", "5555")
    monkeypatch.setenv("SLMESH_REGISTRY", "grpc://registry:7000")
    monkeypatch.setenv("SLMESH_API_TOKEN", "t0k")
    settings = Settings()
    assert settings.grpc_port == 5555
    assert settings.registry == "registry:7000"  # scheme stripped: grpc dials host:port
    assert settings.api_token is not None
    assert settings.api_token.get_secret_value() == "t0k"
    assert "t0k" not in repr(settings)  # secrets never printed


def test_ill_typed_env_fails_at_boot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLMESH_HTTP_PORT", "70000")
    with pytest.raises(ValueError, match="http_port"):
        Settings()


def test_a_lease_renewed_less_often_than_it_lasts_fails_at_boot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLMESH_TASK_LEASE_S", "2")
    monkeypatch.setenv("SLMESH_TASK_LEASE_RENEW_S", "2")
    with pytest.raises(ValueError, match=r"task_lease_renew_s .* must be below task_lease_s"):
        Settings()


def test_every_service_spec_in_the_repo_loads() -> None:
    specs = discover_services(ROOT / "services")
    assert specs[0].kind == "registry"
    names = [s.name for s in specs]
    assert "tools" in names
    assert len(names) == len(set(names))
    for spec in specs:
        if spec.kind == "agent":
            assert spec.executor
            assert spec.skills


def test_spec_errors_name_the_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text("name: Bad Name\nexecutor: x:Y\n")
    with pytest.raises(SpecError, match=r"(?s)agent\.yaml.*name"):
        ServiceSpec.load(tmp_path)
    (tmp_path / "agent.yaml").write_text("name: ok\nkind: agent\n")
    with pytest.raises(SpecError, match="executor"):
        ServiceSpec.load(tmp_path)
    with pytest.raises(SpecError, match="no service spec"):
        ServiceSpec.load(tmp_path / "missing")


def test_configuration_doc_is_current() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert doc == render(), "run: python -m mesh.config_doc > docs/configuration.md"


def test_the_task_store_pool_on_postgresql_is_bounded_by_its_settings() -> None:
    from mesh.a2a.server import build_task_store

    settings = Settings(
        task_store="postgresql+asyncpg://slmesh@db:5432/slmesh",
        task_events="database",
        task_store_pool_size=2,
        task_store_max_overflow=0,
    )
    # A name of its own: a2a-sdk registers each task table in one process-wide MetaData.
    spec = ServiceSpec(name=f"pool-{uuid.uuid4().hex[:8]}", executor="m:C")
    store = build_task_store(spec, settings)
    pool = store.as_task_store.engine.pool  # type: ignore[union-attr]
    assert pool.size() == 2
