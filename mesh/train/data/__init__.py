"""Seeded synthetic data for each SLM agent, with train/validation/test kept apart.

Every task module builds :class:`~mesh.train.data.dataset.Example` objects from the
prompt and output contract in ``services/<agent>/agent.yaml`` (see :mod:`.contract`), so
training and serving read the same text.
"""
