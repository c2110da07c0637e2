"""Generated protobuf and gRPC modules for the protos under ``protos/``.

Everything here except this file and ``_generate.py`` is produced by
``python -m mesh.proto._generate`` and committed; never edit it by hand.
"""
