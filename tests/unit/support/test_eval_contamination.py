"""The hand-written evaluation set stays out of training: no item shares a normalised
8-word sequence with the training generator's templates or with generated training data."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

import pytest

from mesh.support.evaluation import EVAL_DIR, load_items, load_set
from mesh.train.data.dataset import TRAIN, VALIDATION
from mesh.train.data.tasks import AGENTS, load_task

N = 8
GENERATED_PER_AGENT = 1500
"""Examples per agent and stream (train and validation, fixed seed): ~15,000 in all."""
DATA_DIR = Path(__file__).resolve().parents[3] / "mesh" / "train" / "data"


def normalise(text: str) -> list[str]:
    """Lowercase, punctuation stripped (to a space), whitespace collapsed, as words."""
    return re.sub(r"[^\w\s]|_", " ", text.lower()).split()


def ngrams(text: str, n: int = N) -> set[tuple[str, ...]]:
    words = normalise(text)
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _union(texts: Iterable[str]) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    for text in texts:
        out |= ngrams(text)
    return out


def template_literals() -> list[str]:
    """Every string literal of the generator's modules (templates, lexicons, pools)."""
    literals = []
    for path in sorted(DATA_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                literals.append(node.value)
    return literals


def generated_texts() -> list[str]:
    texts = []
    for agent in AGENTS:
        task = load_task(agent)
        for stream in (TRAIN, VALIDATION):
            for example in task.examples(stream, 0, GENERATED_PER_AGENT):
                texts += [example.input, example.target]
    return texts


@pytest.fixture(scope="module")
def item_grams() -> dict[str, set[tuple[str, ...]]]:
    """The evaluation set's items and the development files' (kept out of training too)."""
    dev = [item for path in sorted(EVAL_DIR.glob("dev*.yaml")) for item in load_items(path, "open")]
    return {item.id: ngrams(item.message) for item in [*load_set(), *dev]}


def test_normalisation() -> None:
    assert normalise("Where IS  my\norder, ORD-123456?!") == [
        "where",
        "is",
        "my",
        "order",
        "ord",
        "123456",
    ]
    assert len(ngrams("one two three four five six seven eight nine")) == 2


def test_no_item_shares_an_8_word_sequence_with_the_generator_templates(
    item_grams: dict[str, set[tuple[str, ...]]],
) -> None:
    templates = _union(template_literals())
    assert templates, "no template literal found: the generator moved?"
    shared = {i: sorted(" ".join(g) for g in grams & templates) for i, grams in item_grams.items()}
    assert not {i: s for i, s in shared.items() if s}


def test_no_item_shares_an_8_word_sequence_with_generated_training_data(
    item_grams: dict[str, set[tuple[str, ...]]],
) -> None:
    generated = _union(generated_texts())
    shared = {i: sorted(" ".join(g) for g in grams & generated) for i, grams in item_grams.items()}
    assert not {i: s for i, s in shared.items() if s}


def test_the_check_would_catch_a_copied_template() -> None:
    templates = _union(template_literals())
    copied = "Can you tell me what is happening with my order ORD-104233 please?"
    assert ngrams(copied) & templates or ngrams(copied) & _union(generated_texts()[:2000])
