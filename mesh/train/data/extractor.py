"""Extractor data: a customer message in, its fields as compact JSON out.

Every non-null value is a verbatim span of the message (the schema marks them
``x-grounded``); the output lists the properties in schema order, as the runtime's
constrained decoder writes them.
"""

from __future__ import annotations

from random import Random

from mesh.train.data.contract import compact, judged
from mesh.train.data.dataset import Example, Stream, Task
from mesh.train.data.messages import FIELDS, compose


class ExtractorTask(Task):
    """Messages of every intent; the schema comes from ``services/extractor/agent.yaml``."""

    agent = "extractor"

    def __init__(self) -> None:
        super().__init__()
        assert self.contract.schema is not None
        if tuple(self.contract.schema["properties"]) != FIELDS:
            raise ValueError(
                f"services/extractor properties {tuple(self.contract.schema['properties'])} "
                f"differ from the fields the message generator knows {FIELDS}"
            )

    def make(self, rng: Random, stream: Stream) -> Example:
        message = compose(rng, stream.split, invented=stream.invented, realistic=True)
        fields = {name: message.fields[name] for name in FIELDS}
        return self.render(
            message.text, compact(fields), fields, message.templates, message.entities
        )

    def judge(self, example: Example, output: str) -> dict[str, float]:
        value, valid = judged(output, lambda text: self.contract.check(text, source=example.input))
        expected = example.expected
        if isinstance(value, dict):
            fields = sum(value.get(name) == expected[name] for name in FIELDS) / len(FIELDS)
        else:
            fields = 0.0
        return {"exact": float(value == expected), "valid": valid, "fields": fields}
