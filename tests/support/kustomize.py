"""A pure-Python renderer for the subset of kustomize that deploy/k8s uses, so the overlays are
rendered and checked where no kustomize binary exists (``kubectl kustomize`` cross-checks it
where one does).

Supported: ``resources`` (files and kustomization folders), ``namespace``, ``labels`` (pairs on
metadata only), ``configMapGenerator`` / ``secretGenerator`` (literals, files; behavior
create/merge; hash suffixes off), ``images`` (newName/newTag on every ``containers[].image``),
and ``patches`` holding JSON 6902 operations with a kind/name/labelSelector target.
Anything else raises, so a kustomization never silently renders differently here.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

_KNOWN = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
    "images",
    "patches",
}
_CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
}


class UnsupportedError(ValueError):
    """The kustomization uses a feature this renderer does not implement."""


def render(folder: Path) -> list[Resource]:
    """The resources ``kustomize build FOLDER`` would print (order not significant)."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(spec) - _KNOWN
    if unknown:
        raise UnsupportedError(f"{folder}: unsupported kustomization fields {sorted(unknown)}")
    if not spec.get("generatorOptions", {}).get("disableNameSuffixHash", False) and (
        spec.get("configMapGenerator") or spec.get("secretGenerator")
    ):
        raise UnsupportedError(f"{folder}: generators need generatorOptions.disableNameSuffixHash")
    resources: list[Resource] = []
    for entry in spec.get("resources", []):
        path = (folder / entry).resolve()
        if path.is_dir():
            resources.extend(render(path))
        else:
            resources.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    for generator in spec.get("configMapGenerator", []):
        _generate(folder, resources, generator, "ConfigMap")
    for generator in spec.get("secretGenerator", []):
        _generate(folder, resources, generator, "Secret")
    for patch in spec.get("patches", []):
        _patch(resources, patch)
    if "namespace" in spec:
        for res in resources:
            if res["kind"] not in _CLUSTER_SCOPED:
                res.setdefault("metadata", {})["namespace"] = spec["namespace"]
    for label in spec.get("labels", []):
        if label.get("includeSelectors") or label.get("includeTemplates"):
            raise UnsupportedError(
                "labels: only metadata labels (no selectors/templates) are supported"
            )
        for res in resources:
            res.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    for image in spec.get("images", []):
        for res in resources:
            _retag(res, image)
    return resources


def _generate(
    folder: Path, resources: list[Resource], generator: dict[str, Any], kind: str
) -> None:
    data: dict[str, str] = {}
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    for file in generator.get("files", []):
        data[Path(file).name] = (folder / file).read_text(encoding="utf-8")
    behavior = generator.get("behavior", "create")
    if kind == "Secret":
        data = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    existing = [
        r for r in resources if r["kind"] == kind and r["metadata"]["name"] == generator["name"]
    ]
    if behavior == "merge":
        if len(existing) != 1:
            raise UnsupportedError(f"merge into missing {kind} {generator['name']}")
        existing[0].setdefault("data", {}).update(data)
        return
    if behavior != "create" or existing:
        raise UnsupportedError(f"{kind} generator {generator['name']}: behavior {behavior}")
    resource: Resource = {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": generator["name"]},
        "data": data,
    }
    if kind == "Secret":
        resource["type"] = generator.get("type", "Opaque")
    resources.append(resource)


def _selected(res: Resource, target: dict[str, Any]) -> bool:
    if set(target) - {"kind", "name", "labelSelector"}:
        raise UnsupportedError(f"patch target fields {sorted(target)}")
    if "kind" in target and res["kind"] != target["kind"]:
        return False
    if "name" in target and res["metadata"]["name"] != target["name"]:
        return False
    if "labelSelector" in target:
        labels = res["metadata"].get("labels", {})
        for term in target["labelSelector"].split(","):
            key, _, value = term.partition("=")
            if labels.get(key.strip()) != value.strip():
                return False
    return True


def _patch(resources: list[Resource], patch: dict[str, Any]) -> None:
    if "path" in patch or "target" not in patch:
        raise UnsupportedError("patches: only inline JSON 6902 patches with a target are supported")
    operations = yaml.safe_load(patch["patch"])
    matched = [r for r in resources if _selected(r, patch["target"])]
    if not matched:
        raise UnsupportedError(f"patch target {patch['target']} matches nothing")
    for res in matched:
        for op in operations:
            _apply(res, op)


def _apply(doc: Any, op: dict[str, Any]) -> None:
    *parents, last = [
        p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")
    ]
    node = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) and last != "-" else last
    if op["op"] == "replace":
        if isinstance(node, dict) and key not in node:
            raise UnsupportedError(f"replace of missing {op['path']}")
        node[key] = copy.deepcopy(op["value"])
    elif op["op"] == "add":
        if isinstance(node, list):
            node.insert(len(node) if key == "-" else key, copy.deepcopy(op["value"]))
        else:
            node[key] = copy.deepcopy(op["value"])
    elif op["op"] == "remove":
        del node[key]
    else:
        raise UnsupportedError(f"JSON patch op {op['op']}")


def _retag(node: Any, image: dict[str, str]) -> None:
    """Rewrites ``image`` fields of every container list, wherever it sits (CRDs included)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for container in value:
                    name, _, tag = container.get("image", "").partition(":")
                    if name == image["name"]:
                        new_name = image.get("newName", name)
                        new_tag = image.get("newTag", tag)
                        container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name
            else:
                _retag(value, image)
    elif isinstance(node, list):
        for item in node:
            _retag(item, image)
