"""Classifier data: a customer message in, its intent label out."""

from __future__ import annotations

from random import Random

from mesh.train.data.dataset import Example, Stream, Task
from mesh.train.data.messages import INTENTS, compose


class ClassifierTask(Task):
    """Balanced intents; the label set comes from ``services/classifier/agent.yaml``."""

    agent = "classifier"

    def __init__(self) -> None:
        super().__init__()
        if self.contract.labels != INTENTS:
            raise ValueError(
                f"services/classifier labels {self.contract.labels} differ from the "
                f"intents the message generator knows {INTENTS}"
            )

    def make(self, rng: Random, stream: Stream) -> Example:
        message = compose(rng, stream.split, invented=stream.invented, realistic=True)
        return self.render(
            message.text, message.intent, message.intent, message.templates, message.entities
        )

    def judge(self, example: Example, output: str) -> dict[str, float]:
        answer = output.strip()
        return {
            "exact": float(answer == example.expected),
            "valid": float(answer in INTENTS),
        }
