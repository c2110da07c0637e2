"""The packages of ``mesh/`` form layers without cycles: a lower layer never imports an upper one.

The graph is read from the source (the AST of every module), with every import counted: at the
top, inside a function (a lazy import), under ``TYPE_CHECKING``, relative or absolute. A node
is a top-level package or module of ``mesh`` (``mesh/planner/*`` is ``planner``, ``mesh/tls.py``
is ``tls``; ``mesh/__init__.py`` is ``mesh``). Imports by string (an agent spec's ``executor:``)
are data, not edges.

The layering, bottom to top (docs/architecture.md, "Layers", says what each holds):

0. foundation: settings, errors, TLS files, trust keys, JSON Schema checks, generated protos,
   tables, embeddings, report sections, the plan model
1. runtime: telemetry, the registry, the A2A layer, the local launcher
2. agents: the SLM runtime, the tools agent, the support domain
3. the planner, the call recorder, training
4. the conversion loop
5. entry points: the CLI, the probe, the build helpers

A package imports packages of lower layers; an import inside its own layer must be listed in
``SAME_LAYER`` (so two packages of one layer stay independent unless the table says otherwise:
the planner and training never import each other).
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path

from tests.support.procs import ROOT

LAYERS: tuple[frozenset[str], ...] = (
    frozenset(
        {
            "mesh",
            "config",
            "errors",
            "tls",
            "trust",
            "schema",
            "proto",
            "tables",
            "embeddings",
            "reports",
            "plans",
        }
    ),
    frozenset({"telemetry", "registry", "a2a", "launch", "migrations"}),
    frozenset({"slm", "tools", "support"}),
    frozenset({"planner", "recording", "train"}),
    frozenset({"convert"}),
    frozenset({"cli", "__main__", "probe", "config_doc", "prune_models"}),
)
SAME_LAYER = frozenset(
    {
        ("mesh", "config"),  # the package's version, its settings model
        ("tls", "config"),
        ("plans", "proto"),  # the plan model's proto mirror
        ("plans", "schema"),
        ("a2a", "registry"),  # an agent registers itself; the client discovers replicas
        ("a2a", "telemetry"),
        ("launch", "telemetry"),
        ("registry", "telemetry"),  # the registry's own metrics, on the mesh's meter
        ("support", "tools"),  # the desk's rules read the order tools' vocabulary
        ("planner", "recording"),  # the planner marks which recorded answers it used
        ("__main__", "cli"),
    }
)

Edge = tuple[str, str]
Graph = Mapping[str, Mapping[str, list[str]]]
"""package -> imported package -> where (``path:line``)."""


def _module_name(path: Path, package: Path) -> list[str]:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _node(dotted: list[str], package: Path) -> str | None:
    """The graph node of an imported ``mesh.x.y`` name (None outside the package)."""
    if not dotted or dotted[0] != package.name:
        return None
    if len(dotted) == 1:
        return package.name
    top = dotted[1]
    if (package / top).is_dir() or (package / f"{top}.py").is_file():
        return top
    return package.name  # an attribute of the package itself: ``from mesh import __version__``


def _imported(node: ast.AST, module: list[str], is_package: bool) -> Iterable[list[str]]:
    """The dotted names one import statement reads, relative ones resolved."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name.split(".")
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            anchor = module if is_package else module[:-1]
            base = anchor[: len(anchor) - node.level + 1]
        else:
            base = []
        target = base + (node.module.split(".") if node.module else [])
        yield target
        for alias in node.names:
            yield [*target, alias.name]  # ``from mesh import telemetry`` names the subpackage


def import_graph(package: Path) -> dict[str, dict[str, list[str]]]:
    """Every import between the top-level packages of ``package``, lazy ones included."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(package.rglob("*.py")):
        module = _module_name(path, package)
        source = _node(module, package)
        assert source is not None
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            for dotted in _imported(node, module, path.name == "__init__.py"):
                target = _node(dotted, package)
                if target is not None and target != source:
                    where = f"{path.relative_to(package.parent)}:{node.lineno}"  # type: ignore[attr-defined]
                    if where not in graph[source][target]:
                        graph[source][target].append(where)
        graph.setdefault(source, defaultdict(list))
    return graph


def strongly_connected(graph: Graph) -> list[set[str]]:
    """The strongly connected sets of more than one node: each is one or more cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graph has a few dozen nodes
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, {}):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def cycles(graph: Graph) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected set."""
    return [_cycle_through(sorted(c)[0], c, graph) for c in strongly_connected(graph)]


def _cycle_through(start: str, component: set[str], graph: Graph) -> list[str]:
    """A shortest path from ``start`` back to itself inside its component (breadth first)."""
    paths = [[start]]
    seen = {start}
    while paths:
        path = paths.pop(0)
        for successor in sorted(graph[path[-1]]):
            if successor == start:
                return [*path, start]
            if successor in component and successor not in seen:
                seen.add(successor)
                paths.append([*path, successor])
    raise AssertionError(f"{start} is on no cycle of {sorted(component)}")


def _describe(cycle: list[str], graph: Graph) -> str:
    steps = [f"  {a} -> {b} ({', '.join(graph[a][b])})" for a, b in itertools.pairwise(cycle)]
    return " -> ".join(cycle) + "\n" + "\n".join(steps)


def _layer_of(package: str) -> int:
    """The package's layer; an unplaced one counts as the top (test_every_package_has_a_layer
    names it)."""
    return next((i for i, layer in enumerate(LAYERS) if package in layer), len(LAYERS))


def layering_violations(graph: Graph) -> list[str]:
    found = []
    for source, targets in sorted(graph.items()):
        for target, where in sorted(targets.items()):
            up, down = _layer_of(source), _layer_of(target)
            if down > up:
                found.append(f"{source} (layer {up}) imports {target} (layer {down}): {where}")
            elif down == up and (source, target) not in SAME_LAYER:
                found.append(
                    f"{source} imports {target} of its own layer {up} (not in SAME_LAYER): {where}"
                )
    return found


MESH = ROOT / "mesh"


@cache
def mesh_graph() -> Graph:
    return import_graph(MESH)


def test_every_package_has_a_layer() -> None:
    placed = set().union(*LAYERS)
    assert sum(len(layer) for layer in LAYERS) == len(placed), "a package is in two layers"
    unplaced = sorted(set(mesh_graph()) - placed)
    assert unplaced == [], f"place these in LAYERS (tests/unit/test_layers.py): {unplaced}"


def test_no_import_cycle_between_packages() -> None:
    graph = mesh_graph()
    found = []
    for component in strongly_connected(graph):
        one = _cycle_through(sorted(component)[0], component, graph)
        found.append(f"{', '.join(sorted(component))}; one cycle: {_describe(one, graph)}")
    assert found == [], "import cycles between mesh/ packages:\n" + "\n".join(found)


def test_lower_layers_never_import_upper_ones() -> None:
    found = layering_violations(mesh_graph())
    assert found == [], "\n".join(found)


def test_declared_same_layer_imports_exist() -> None:
    graph = mesh_graph()
    stale = sorted(edge for edge in SAME_LAYER if edge[1] not in graph.get(edge[0], {}))
    assert stale == [], f"SAME_LAYER lists imports the code no longer has: {stale}"


def test_a_lazy_import_cycle_is_found_and_named(tmp_path: Path) -> None:
    """The checks above could pass by reading too little: a cycle closed only by an import
    inside a function, through a relative import, is found and named with its lines."""
    package = tmp_path / "mesh"
    (package / "low").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low" / "__init__.py").write_text("")
    (package / "low" / "work.py").write_text(
        "def later():\n    from mesh.high import thing\n    return thing\n"
    )
    (package / "high.py").write_text("from .low import work\nthing = work\n")
    (package / "alone.py").write_text("import mesh.low.work\n")
    graph = import_graph(package)
    assert {k: sorted(v) for k, v in graph.items()} == {
        "mesh": [],
        "low": ["high"],
        "high": ["low"],
        "alone": ["low"],
    }
    (cycle,) = cycles(graph)
    assert cycle == ["high", "low", "high"]
    assert "mesh/low/work.py:2" in _describe(cycle, graph)
    assert "mesh/high.py:1" in _describe(cycle, graph)
