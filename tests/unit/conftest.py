"""Unit tests enforce their own boundary: no network sockets, no Ray.

An autouse guard fails any unit test that opens an internet socket (AF_INET/AF_INET6; the
AF_UNIX socket pairs asyncio's event loop makes for itself are allowed) or starts Ray. A test
that needs either belongs in tests/integration. The guard both raises at the call and fails the
test at teardown, so code that swallows the error (a retry loop, a broad except) still fails it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

try:  # imported here, once, so that ray.init is refused even where a test imports ray late
    import ray
except ImportError:  # installs without the planner extra have no Ray to start
    ray = None

_INTERNET = (socket.AF_INET, socket.AF_INET6)


class BoundaryError(RuntimeError):
    """A unit test reached past its boundary (a network socket or Ray)."""


@pytest.fixture(autouse=True)
def unit_boundary(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fails the test that opens a network socket or calls ``ray.init``."""
    violations: list[str] = []

    def refuse(what: str) -> BoundaryError:
        violations.append(what)
        return BoundaryError(f"a unit test may not {what}: move it to tests/integration")

    real_init = socket.socket.__init__

    def guarded_init(
        self: socket.socket, family: int = -1, type: int = -1, proto: int = -1, fileno: Any = None
    ) -> None:
        # socket.socket's default family (-1 without a fileno) is AF_INET. A fileno means an
        # existing descriptor is wrapped (socket.socketpair, socket.fromfd): nothing new opens.
        if fileno is None and (family == -1 or family in _INTERNET):
            raise refuse("open a network socket")
        real_init(self, family, type, proto, fileno)

    monkeypatch.setattr(socket.socket, "__init__", guarded_init)

    if ray is not None:

        def refuse_ray(*args: object, **kwargs: object) -> None:
            raise refuse("start Ray (ray.init)")

        monkeypatch.setattr(ray, "init", refuse_ray)
    yield
    # Ray started another way (its internals, not ray.init) is caught here.
    if ray is not None and ray.is_initialized():
        ray.shutdown()
        violations.append("start Ray (ray.init)")
    if violations:
        pytest.fail(
            f"unit test boundary crossed: {'; '.join(violations)} (move it to tests/integration)"
        )
