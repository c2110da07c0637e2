"""deploy/k8s: both overlays rendered by ``kubectl kustomize`` (kustomize built in; skipped
where kubectl is missing) and every manifest validated offline against the Kubernetes schemas
(kubernetes-validate, strict); the KubeRay RayCluster is checked for its required fields and
its pod templates against the PodTemplate schema."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.config import Settings, discover_services, postgres_connections

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate (dev extra)"
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
#: Oldest Kubernetes the manifests target (grpc probes GA 1.27, preStop sleep 1.30) and the newest
#: schema shipped.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
SERVICES = {spec.name: spec for spec in discover_services(ROOT / "services")}
AGENTS = sorted(n for n, s in SERVICES.items() if s.kind == "agent" and n != "planner")
NAMESPACES = {"dev": "slmesh-dev", "prod": "slmesh"}

Resource = dict[str, Any]


@functools.cache
def _kustomize(overlay: str) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed here")
    return subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def _rendered(overlay: str) -> list[Resource]:
    """The overlay as ``kubectl kustomize`` renders it (a fresh copy each call)."""
    return [r for r in yaml.safe_load_all(_kustomize(overlay)) if r]


def _one(resources: list[Resource], kind: str, name: str) -> Resource:
    found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schema(overlay: str, version: str) -> None:
    for res in _rendered(overlay):
        if res["apiVersion"].startswith("ray.io/"):
            continue  # a CRD: test_ray_cluster_is_a_valid_kuberay_cluster
        try:
            kubernetes_validate.validate(res, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{overlay} {res['kind']}/{res['metadata']['name']} on {version}: {exc.message} "
                f"at {'/'.join(map(str, exc.path))}"
            )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ray_cluster_is_a_valid_kuberay_cluster(overlay: str) -> None:
    resources = _rendered(overlay)
    ray = _one(resources, "RayCluster", "slmesh-ray")
    assert ray["apiVersion"] == "ray.io/v1"
    spec = ray["spec"]
    pin = re.search(
        r'"ray==([\d.]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    ).group(1)  # type: ignore[union-attr]
    assert spec["rayVersion"] == pin
    # Required by the KubeRay v1 CRD: headGroupSpec.template; each worker group's groupName,
    # template and maxReplicas; rayStartParams values are strings.
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"]
        assert isinstance(group["maxReplicas"], int)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    planner_image = _one(resources, "Deployment", "planner")["spec"]["template"]["spec"][
        "containers"
    ][0]["image"]
    for group in groups:
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
        template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "ray"},
            "template": group["template"],
        }
        kubernetes_validate.validate(template, K8S_VERSIONS[-1], strict=True)
        # Step runners import the planner's code: same image (same Ray, same Python).
        assert [c["image"] for c in group["template"]["spec"]["containers"]] == [planner_image]
    head_ports = {
        p["name"]: p["containerPort"]
        for p in spec["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert head_ports["client"] == 10001
    env = {
        e["name"]: e.get("value")
        for e in _one(resources, "Deployment", "planner")["spec"]["template"]["spec"]["containers"][
            0
        ]["env"]
    }
    # KubeRay names the head Service <cluster>-head-svc; the planner joins it as a Ray client.
    assert env["RAY_ADDRESS"] == f"ray://{ray['metadata']['name']}-head-svc:10001"
    assert (
        Settings.model_validate({"ray_address": env["RAY_ADDRESS"]}).ray_address
        == env["RAY_ADDRESS"]
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("agent", AGENTS)
def test_each_agent_has_deployment_service_hpa_and_pdb(overlay: str, agent: str) -> None:
    resources = _rendered(overlay)
    deployment = _one(resources, "Deployment", agent)
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    (container,) = pod["spec"]["containers"]
    assert container["image"].startswith(f"slmesh/{agent}:")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "grpc": 50051}  # the image's SLMESH_HTTP_PORT / SLMESH_GRPC_PORT
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"], probe
    assert set(container["resources"]) == {"requests", "limits"}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    drain = float(_one(resources, "ConfigMap", "slmesh-mesh")["data"]["SLMESH_DRAIN_TIMEOUT_S"])
    assert grace > drain + container["lifecycle"]["preStop"]["sleep"]["seconds"]

    service = _one(resources, "Service", agent)
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)

    hpa = _one(resources, "HorizontalPodAutoscaler", agent)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": agent,
    }
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]

    pdb = _one(resources, "PodDisruptionBudget", agent)
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_registry_and_planner_are_deployed(overlay: str) -> None:
    resources = _rendered(overlay)
    for name in ("registry", "planner"):
        deployment = _one(resources, "Deployment", name)
        # Several replicas, rolled one at a time: their state is shared in PostgreSQL (the
        # registry's replicas, the planner's tasks and runs), none of it on the pod.
        assert deployment["spec"]["replicas"] >= 2
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"].startswith(f"slmesh/{name}:")
        assert container["readinessProbe"]["grpc"]["port"] == 50051
        _one(resources, "Service", name)
    mesh = _one(resources, "ConfigMap", "slmesh-mesh")["data"]
    host, port = mesh["SLMESH_REGISTRY"].split(":")
    registry = _one(resources, "Service", host)
    assert int(port) in {p["port"] for p in registry["spec"]["ports"]}
    # The registry's own /metrics listens where the pod declares it.
    (container,) = _one(resources, "Deployment", "registry")["spec"]["template"]["spec"][
        "containers"
    ]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert ports["metrics"] == int(env.get("SLMESH_METRICS_PORT") or Settings().metrics_port)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_resolve_and_settings_are_real(overlay: str) -> None:
    resources = _rendered(overlay)
    names = {(r["kind"], r["metadata"]["name"]) for r in resources}
    text = yaml.safe_dump_all(resources)
    config_maps = set(re.findall(r"configMapRef:\n\s+name: (\S+)", text)) | set(
        re.findall(r"configMap:\n\s+name: (\S+)", text)
    )
    assert config_maps
    assert all(("ConfigMap", n) in names for n in config_maps)
    secret_keys = set(re.findall(r"secretKeyRef:\n\s+key: (\S+)\n\s+name: (\S+)", text))
    assert {name for _, name in secret_keys} == {"slmesh-secrets"}
    secret = [r for r in resources if r["kind"] == "Secret"]
    if overlay == "dev":
        assert {k for k, _ in secret_keys} <= set(secret[0]["data"])
    else:  # created by the operator, never committed: the overlay's instructions name every key
        assert not secret
        howto = (K8S / "overlays" / overlay / "kustomization.yaml").read_text(encoding="utf-8")
        assert all(
            f"--from-literal={k}=" in howto for k, _ in secret_keys if k != "postgres-password"
        )
    known = {f"SLMESH_{f.upper()}" for f in Settings.model_fields}
    for key in _one(resources, "ConfigMap", "slmesh-mesh")["data"]:
        assert key in known or key.startswith(("OTEL_", "XDG_")), key
    for res in resources:
        if res["kind"] != "Namespace":
            assert res["metadata"]["namespace"] == NAMESPACES[overlay]
        for env in re.findall(r"- name: (SLMESH_\w+)", yaml.safe_dump(res)):
            assert env in known, f"{res['kind']}/{res['metadata']['name']}: {env}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_collector_pipeline_reaches_jaeger(overlay: str) -> None:
    resources = _rendered(overlay)
    config = yaml.safe_load(
        _one(resources, "ConfigMap", "otel-collector")["data"]["collector.yaml"]
    )
    host, port = config["exporters"]["otlp/jaeger"]["endpoint"].split(":")
    assert int(port) in {p["port"] for p in _one(resources, "Service", host)["spec"]["ports"]}
    endpoint = _one(resources, "ConfigMap", "slmesh-mesh")["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    host, port = endpoint.removeprefix("http://").split(":")
    assert int(port) in {p["port"] for p in _one(resources, "Service", host)["spec"]["ports"]}
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(f":{port}")


#: Where an emptyDir is scratch, not state: lost with the pod by design in any replica count.
SCRATCH_MOUNTS = ("/tmp", "/dev/shm")


def _scaled_pod_templates(resources: list[Resource]) -> list[tuple[str, int, Resource]]:
    """``(workload, most replicas it may run, pod template)`` of every workload: the HPA's
    maxReplicas where one scales it, else its replicas (a RayCluster worker group: its
    maxReplicas)."""
    hpa_max = {
        (h["spec"]["scaleTargetRef"]["kind"], h["spec"]["scaleTargetRef"]["name"]): h["spec"][
            "maxReplicas"
        ]
        for h in resources
        if h["kind"] == "HorizontalPodAutoscaler"
    }
    found = []
    for res in resources:
        kind, name = res["kind"], res["metadata"]["name"]
        if kind in ("Deployment", "StatefulSet", "ReplicaSet"):
            most = hpa_max.get((kind, name), res["spec"].get("replicas", 1))
            found.append((f"{kind}/{name}", most, res["spec"]["template"]))
        elif kind == "RayCluster":
            for group in res["spec"]["workerGroupSpecs"]:
                most = max(group.get("maxReplicas", 1), group.get("replicas", 1))
                found.append((f"{kind}/{name}/{group['groupName']}", most, group["template"]))
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_workload_that_runs_several_replicas_keeps_no_state_in_empty_dir(overlay: str) -> None:
    """Each replica's emptyDir is its own and dies with the pod: state kept there (an SQLite
    file under the data dir) splits between replicas and answers differently per replica."""
    templates = _scaled_pod_templates(_rendered(overlay))
    assert any(most > 1 for _, most, _ in templates)  # the rule has something to check
    for workload, most, template in templates:
        if most <= 1:
            continue
        spec = template["spec"]
        empty = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for container in spec.get("initContainers", []) + spec["containers"]:
            for mount in container.get("volumeMounts", []):
                if mount["name"] in empty:
                    path = mount["mountPath"].rstrip("/")
                    assert any(path == s or path.startswith(s + "/") for s in SCRATCH_MOUNTS), (
                        f"{overlay} {workload} runs up to {most} replicas but keeps an emptyDir "
                        f"at {path}: state there is per pod; use the shared database"
                    )


def test_the_tools_agent_and_its_migration_job_read_one_order_database_from_the_secret() -> None:
    resources = _rendered("dev")
    secret = {"name": "slmesh-secrets", "key": "orders-database-url"}
    tools = _one(resources, "Deployment", "tools")["spec"]["template"]["spec"]
    job = _one(resources, "Job", "tools-db-upgrade")["spec"]["template"]["spec"]
    for pod in (tools, job):
        (container,) = pod["containers"]
        env = {e["name"]: e.get("valueFrom") for e in container["env"]}
        assert env["SLMESH_ORDERS_DATABASE"] == {"secretKeyRef": secret}
        assert container["image"].startswith("slmesh/tools:")
    (upgrade,) = job["containers"]
    assert upgrade["command"] == ["slmesh", "db", "upgrade"]
    # ...and the planner's run store, in the task store's database the planner reads.
    env = {e["name"]: e.get("valueFrom", e.get("value")) for e in upgrade["env"]}
    assert env["SLMESH_TASK_STORE"] == {
        "secretKeyRef": {"name": "slmesh-secrets", "key": "task-store-url"}
    }
    assert env["SLMESH_TASK_EVENTS"] == "database"
    assert job["restartPolicy"] == "OnFailure"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replicated_registry_and_planner_read_their_databases_from_the_secret(
    overlay: str,
) -> None:
    resources = _rendered(overlay)
    mesh = _one(resources, "ConfigMap", "slmesh-mesh")["data"]
    assert mesh["SLMESH_TASK_EVENTS"] == "database"  # the planner's runs follow its tasks
    for name, variable, key in (
        ("registry", "SLMESH_REGISTRY_DATABASE", "registry-database-url"),
        ("planner", "SLMESH_TASK_STORE", "task-store-url"),
    ):
        (container,) = _one(resources, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("valueFrom") for e in container["env"]}
        assert env[variable] == {"secretKeyRef": {"name": "slmesh-secrets", "key": key}}


#: Placeholders for the secret's database URLs (a pool's size does not depend on the host).
_SECRET_VALUES = {
    "task-store-url": "postgresql+asyncpg://slmesh@db:5432/slmesh",
    "orders-database-url": "postgresql://slmesh@db:5432/slmesh",
    "registry-database-url": "postgresql://slmesh@db:5432/slmesh",
}


def _container_settings(resources: list[Resource], container: Resource) -> Settings:
    """The settings ``container`` starts with: its ConfigMaps, then its own env (a secret's
    database URL as a placeholder, any other secret as a dummy)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(_one(resources, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "secretKeyRef" in item.get("valueFrom", {}):
            env[item["name"]] = _SECRET_VALUES.get(item["valueFrom"]["secretKeyRef"]["key"], "x")
    fields = {
        k.removeprefix("SLMESH_").lower(): v
        for k, v in env.items()
        if k.startswith("SLMESH_") and k != "SLMESH_RAY_ADDRESS"
    }
    return Settings(**fields)


def _postgres_demand(resources: list[Resource]) -> tuple[int, list[str]]:
    """The most connections the mesh opens at once (every workload at its most replicas,
    every pool at its bound), and the terms of that sum."""
    total, terms = 0, []
    for workload, most, template in _scaled_pod_templates(resources):
        name = workload.split("/")[1]
        service = name if name in ("registry", "planner") else "agent"
        for container in template["spec"]["containers"]:
            per_pod = postgres_connections(_container_settings(resources, container), service)
            if per_pod:
                total += most * per_pod
                terms.append(f"{workload} {most} x {per_pod}")
    for job in (r for r in resources if r["kind"] == "Job"):
        if "database-url" in yaml.safe_dump(job):
            total += 1  # a migration: one connection (NullPool) while it runs
            terms.append(f"Job/{job['metadata']['name']} 1")
    return total, terms


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pool_at_every_maximum_fits_postgres_max_connections(overlay: str) -> None:
    """Sum over workloads of (max replicas x connections per pod) <= max_connections minus
    the reserve, with the numbers the manifests set (docs/scaling.md, "Connections")."""
    resources = _rendered(overlay)
    budget = _one(resources, "ConfigMap", "slmesh-postgres")["data"]
    usable = int(budget["max_connections"]) - int(budget["reserved_connections"])
    demand, terms = _postgres_demand(resources)
    assert len(terms) >= 8  # 5 agents, the planner, the registry, the migration Job
    assert demand <= usable, f"{overlay}: {' + '.join(terms)} = {demand} > {usable}"
    if overlay == "dev":  # the in-cluster server runs with the budget's max_connections
        (postgres,) = _one(resources, "Deployment", "postgres")["spec"]["template"]["spec"][
            "containers"
        ]
        assert postgres["args"] == ["-c", "max_connections=$(POSTGRES_MAX_CONNECTIONS)"]
        ref = {e["name"]: e.get("valueFrom") for e in postgres["env"]}["POSTGRES_MAX_CONNECTIONS"]
        assert ref == {"configMapKeyRef": {"name": "slmesh-postgres", "key": "max_connections"}}


def test_the_connection_sum_counts_what_the_settings_open() -> None:
    """The check above is only as good as its per-pod count: one of every kind, by hand."""
    shared = {"task_store": _SECRET_VALUES["task-store-url"], "task_events": "database"}
    pools = {"task_store_pool_size": 3, "task_store_max_overflow": 1}
    assert postgres_connections(Settings(**shared, **pools), "agent") == 3 + 1 + 1
    assert postgres_connections(Settings(**shared, **pools), "planner") == 3 + 1 + 1 + 3
    orders = Settings(**shared, **pools, orders_database=_SECRET_VALUES["orders-database-url"])
    assert postgres_connections(orders, "agent") == 3 + 1 + 1 + 5
    poll = Settings(**shared, **pools, task_event_feed="poll")
    assert postgres_connections(poll, "agent") == 3 + 1
    registry = Settings(registry_database=_SECRET_VALUES["registry-database-url"])
    assert postgres_connections(registry, "registry") == 5 + 1
    assert postgres_connections(Settings(), "agent") == 0  # SQLite: no PostgreSQL at all
