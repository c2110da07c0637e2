"""The task of each SLM agent, by service name."""

from __future__ import annotations

from mesh.train.data.classifier import ClassifierTask
from mesh.train.data.dataset import Task
from mesh.train.data.extractor import ExtractorTask
from mesh.train.data.planner import PlannerTask
from mesh.train.data.responder import ResponderTask
from mesh.train.data.tool_caller import ToolCallerTask

_TASKS: dict[str, type[Task]] = {
    "classifier": ClassifierTask,
    "extractor": ExtractorTask,
    "tool-caller": ToolCallerTask,
    "responder": ResponderTask,
    "planner": PlannerTask,
}

AGENTS = tuple(_TASKS)
"""The SLM agents' service names, in pipeline order (the planner SLM last: it plans over them)."""


def load_task(agent: str) -> Task:
    """The task for ``agent`` (``tool_caller`` is accepted for ``tool-caller``)."""
    name = agent.replace("_", "-")
    if name not in _TASKS:
        raise ValueError(f"unknown SLM agent {agent!r} (known: {', '.join(AGENTS)})")
    return _TASKS[name]()
