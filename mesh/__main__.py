"""``python -m mesh`` is ``slmesh``."""

from mesh.cli import main

main()
