"""The opt-in call recorder (``SLMESH_RECORD_DB``): an SLM agent's calls, redacted, into the
dataset store the conversion loop (:mod:`mesh.convert`) learns from.

:func:`~mesh.recording.executor.recorded` wraps an agent's executor when recording is on, as
:class:`~mesh.a2a.tracing.TracedExecutor` wraps it when tracing is: the agent itself knows
nothing of recording. The planner marks in the same store which answers it used
(:class:`~mesh.recording.store.CallStore`).
"""
