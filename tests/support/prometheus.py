"""Reading a Prometheus text exposition in tests."""

from __future__ import annotations


def sample(exposition: str, metric: str, **labels: str) -> float | None:
    """The value of the Prometheus sample ``metric`` whose labels include ``labels``."""
    for line in exposition.splitlines():
        if line.startswith("#"):
            continue
        name, brace, rest = line.partition("{")
        if not brace:  # a sample without labels
            name, _, value = line.partition(" ")
            if name == metric and not labels:
                return float(value)
            continue
        if name != metric or "} " not in rest:
            continue
        found, value = rest.rsplit("} ", 1)
        pairs = dict(item.split("=", 1) for item in found.split(",") if "=" in item)
        if all(pairs.get(k) == f'"{v}"' for k, v in labels.items()):
            return float(value)
    return None
