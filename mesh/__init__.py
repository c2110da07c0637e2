"""slmesh: specialized small-language-model agents behind A2A, one service each."""

from mesh.config import ServiceSpec, Settings

__all__ = ["ServiceSpec", "Settings"]
__version__ = "0.1.0"
