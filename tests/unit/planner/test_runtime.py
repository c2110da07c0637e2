"""How the planner's Ray runtime reports a cluster it cannot join (no Ray is started here)."""

from __future__ import annotations

from typing import Any

import pytest

from mesh.config import Settings
from mesh.planner.runtime import RayClusterError, RayOptions, RayRuntime


class _RefusingRay:
    """Stands in for the ``ray`` module: ``init`` raises what Ray raises for a token cluster."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def init(self, **kwargs: Any) -> None:
        raise self.error


def test_a_refused_connection_names_the_token_variables_and_the_address() -> None:
    runtime = RayRuntime(Settings(), RayOptions())
    refused = ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:7")
    with pytest.raises(RayClusterError) as caught:
        runtime._join(_RefusingRay(refused), "127.0.0.1:7")  # noqa: SLF001
    message = str(caught.value)
    assert message.startswith("cannot join the Ray cluster at 127.0.0.1:7 (Failed to connect")
    assert "RAY_AUTH_MODE=token" in message
    assert "RAY_AUTH_TOKEN_PATH" in message
    assert "check RAY_ADDRESS" in message
    assert "\n" not in message
