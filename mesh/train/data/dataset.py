"""Examples, tasks and the seeded streams that make train/validation/test sets.

Example ``i`` of a stream is drawn from its own ``Random`` seeded with the agent, split,
stream name, seed and ``i``, so any example can be regenerated alone (resumed training
sees exactly the batches it would have seen) and two streams never share draws.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from random import Random
from typing import Any

from mesh.train.data.contract import Contract, ContractError, load_contract
from mesh.train.data.entities import Split

TRAIN_INVENTED = 0.7
"""Share of made-up entity values in training (the rest come from the train pools)."""


@dataclass(frozen=True)
class Example:
    """One training or evaluation example.

    ``input`` is what the executor substitutes for ``{input}``; the model sees
    ``prompt`` and learns to continue with ``target`` then end-of-sequence. ``expected``
    is what a correct output parses to, for scoring; ``templates`` and ``entities``
    record which phrasings and values the example used, to check splits stay apart.
    """

    input: str
    prompt: str
    target: str
    expected: Any
    templates: frozenset[str]
    entities: Mapping[str, frozenset[str]]


@dataclass(frozen=True)
class Stream:
    """Which examples to draw: the split, a name, and the share of invented values.

    ``seen`` (train pools, no invented values, its own draws) measures fresh
    combinations of values the model was trained on; ``validation`` and ``test`` measure
    unseen values and phrasings.
    """

    split: Split
    name: str
    invented: float = 0.0


TRAIN = Stream("train", "train", TRAIN_INVENTED)
SEEN = Stream("train", "seen")
VALIDATION = Stream("validation", "validation")
TEST = Stream("test", "test")


class Task(ABC):
    """One agent's data: how to make an example and how to judge an output."""

    agent: str

    def __init__(self) -> None:
        self.contract: Contract = load_contract(self.agent)

    @abstractmethod
    def make(self, rng: Random, stream: Stream) -> Example:
        """A fresh example of ``stream`` whose target already passed :meth:`verify`."""

    @abstractmethod
    def judge(self, example: Example, output: str) -> dict[str, float]:
        """Scores an output: ``exact`` and ``valid`` (1.0 or 0.0), plus task extras."""

    def output_schema(self, example: Example) -> Mapping[str, Any] | None:
        """The JSON schema the runtime decodes this example's output under (None: labels or
        free text); the planner's depends on the skills its prompt lists."""
        return self.contract.schema

    def example(self, stream: Stream, seed: int, index: int) -> Example:
        """Example ``index`` of a stream: the same for the same arguments, always."""
        rng = Random(f"{self.agent}/{stream.split}/{stream.name}/{seed}/{index}")
        return self.make(rng, stream)

    def examples(self, stream: Stream, seed: int, count: int, start: int = 0) -> list[Example]:
        """``count`` consecutive examples of a stream."""
        return [self.example(stream, seed, i) for i in range(start, start + count)]

    def verify(self, example: Example) -> Example:
        """Checks the target against the contract (labels, schema, grounding) or raises."""
        try:
            self.contract.check(example.target, source=example.input)
        except ContractError as exc:
            raise ContractError(f"{self.agent} generated a bad target: {exc}") from exc
        return example

    def render(
        self,
        value: str,
        target: str,
        expected: Any,
        templates: frozenset[str],
        entities: Mapping[str, frozenset[str]],
    ) -> Example:
        """An example with its prompt rendered, verified against the contract."""
        return self.verify(
            Example(
                input=value,
                prompt=self.contract.render(value),
                target=target,
                expected=expected,
                templates=templates,
                entities=entities,
            )
        )


def mean_scores(scores: Iterator[dict[str, float]] | list[dict[str, float]]) -> dict[str, float]:
    """Averages per-example scores key by key."""
    totals: dict[str, float] = {}
    count = 0
    for score in scores:
        count += 1
        for key, value in score.items():
            totals[key] = totals.get(key, 0.0) + value
    return {key: value / count for key, value in totals.items()} if count else {}
