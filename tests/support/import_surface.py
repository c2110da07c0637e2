"""Checks that one extra's import surface of the installed ``mesh`` package imports.

Run with the interpreter of a virtualenv that holds the slmesh wheel and that extra alone:
``python import_surface.py base|slm|planner``. It imports every module of the surface and,
for each, every third-party module that module imports anywhere (at the top or inside a
function), so a deferred ``import ray`` counts too. A standalone script: it imports nothing
from the checkout. Prints one line per failure and exits 1, or prints the count and exits 0.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path

#: Modules that need an extra, by prefix; everything else in ``mesh`` is the base surface.
#: ``mesh.proto._generate`` is the maintainers' ``make protos`` (grpcio-tools, dev extra).
EXTRA_SURFACES = {
    "slm": (
        "mesh.slm",
        "mesh.train",
        "mesh.embeddings",
        "mesh.convert.analyze",
        "mesh.convert.deploy",
        "mesh.convert.lora",
        "mesh.recording.executor",
    ),
    "planner": ("mesh.planner",),
    "dev": ("mesh.proto._generate",),
}
#: What installing an extra brings besides its own surface.
INCLUDES = {"base": ("base",), "slm": ("base", "slm"), "planner": ("base", "slm", "planner")}


def _surface_of(module: str) -> str:
    for extra, prefixes in EXTRA_SURFACES.items():
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return extra
    return "base"


def _third_party_imports(path: str) -> set[str]:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return {
        n
        for n in names
        if n.split(".")[0] not in sys.stdlib_module_names and n.split(".")[0] != "mesh"
    }


def main(extra: str) -> int:
    import mesh

    surfaces = INCLUDES[extra]
    package = Path(mesh.__file__).parent
    # Every file, not pkgutil's walk: that skips namespace packages (mesh/planner has no
    # __init__.py).
    names = (
        ".".join(("mesh", *path.relative_to(package).with_suffix("").parts))
        for path in sorted(package.rglob("*.py"))
    )
    modules = [
        name.removesuffix(".__init__")
        for name in names
        if _surface_of(name) in surfaces and not name.endswith("__main__")
    ]
    failures = []
    for name in modules:
        spec = importlib.util.find_spec(name)
        assert spec is not None, name
        assert spec.origin is not None, name
        for dependency in sorted(_third_party_imports(spec.origin)):
            try:
                importlib.import_module(dependency)
            except ImportError as exc:
                failures.append(f"{name}: import {dependency}: {exc}")
        try:
            importlib.import_module(name)
        except ImportError as exc:
            failures.append(f"{name}: {exc}")
    for line in failures:
        print(line)
    if failures:
        return 1
    print(f"{len(modules)} modules of the {extra} surface import")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
