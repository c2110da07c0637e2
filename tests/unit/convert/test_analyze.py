"""Curation and clustering of recorded calls (mesh.convert.analyze), with a word-count embedder."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mesh.convert.analyze import analyze, curate
from mesh.recording.store import CallRecord, CallStore

CLASSIFY = "Classify the support message.\nMessage: {input}\nIntent: "
EXTRACT = "Extract the fields as JSON.\nMessage: {input}\nJSON: "
MESSAGES = [
    "Where is my parcel ORD-100001, it has not arrived",
    "Please refund my broken mug",
    "Cancel ORD-100002, wrong colour ordered",
    "My parcel is late again, where is it",
    "Refund the strap, it snapped after a day",
    "Change the delivery address of ORD-100003",
]


def bag_of_words(texts: Sequence[str]) -> np.ndarray:
    """Hashed word counts, unit length: texts sharing words are close, others orthogonal."""
    out = np.zeros((len(texts), 512))
    for row, text in enumerate(texts):
        for word in re.findall(r"[a-z]+", text.lower()):
            out[row, zlib.crc32(word.encode()) % 512] += 1
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1, norms)


def record(
    n: int,
    agent: str,
    prompt: str,
    text: str,
    output: str,
    *,
    state: str = "completed",
    valid: bool = True,
    accepted: bool | None = None,
    spec: dict | None = None,
) -> CallRecord:  # type: ignore[type-arg]
    return CallRecord(
        id=f"{agent}-{n}",
        task_id=f"{agent}-{n}",
        agent=agent,
        prompt=prompt,
        input=text,
        output=output,
        state=state,
        valid=valid,
        accepted=accepted,
        skill=f"{agent}_skill",
        model=f"{agent}-model",
        output_spec=spec,
        created=n,
    )


def test_two_agents_on_the_same_messages_are_two_clusters(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "calls.db")
    labels = {"labels": ["refund_request", "order_status"]}
    schema = {"schema": {"type": "object", "properties": {"order_id": {"type": "string"}}}}
    for n, text in enumerate(MESSAGES):
        store.add(record(n, "classifier", CLASSIFY, text, "order_status", spec=labels))
        store.add(record(n, "extractor", EXTRACT, text, '{"order_id":null}', spec=schema))
    result = analyze(store, bag_of_words, min_size=3, threshold=0.95)
    assert [c.size for c in result.clusters] == [6, 6]
    by_agent = {next(iter(c.summary["agents"])): c for c in result.clusters}
    assert {m.id for m in store.cluster_calls(by_agent["classifier"].id)} == {
        f"classifier-{n}" for n in range(6)
    }
    assert {m.id for m in store.cluster_calls(by_agent["extractor"].id)} == {
        f"extractor-{n}" for n in range(6)
    }
    assert by_agent["classifier"].summary["output_kind"] == "labels"
    assert by_agent["extractor"].summary["output_kind"] == "schema"
    assert by_agent["classifier"].summary["models"] == {"classifier-model": 1.0}
    assert by_agent["classifier"].name.startswith("classifier_skill")
    assert all(c.summary["trainable"] for c in result.clusters)


def test_a_generic_prompt_splits_by_the_kind_of_input(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "calls.db")
    translate = [
        f"translate to french the sentence number {w}" for w in ("one", "two", "three", "four")
    ]
    weather = [f"weather forecast rain wind tomorrow in {c}" for c in ("Paris", "Oslo", "Rome")]
    for n, text in enumerate(translate + weather):
        store.add(record(n, "llm", "{input}", text, "ok"))
    result = analyze(store, bag_of_words, min_size=4, threshold=0.8)
    assert [c.size for c in result.clusters] == [4, 3]
    first, second = result.clusters
    assert {m.input for m in store.cluster_calls(first.id)} == set(translate)
    assert {m.input for m in store.cluster_calls(second.id)} == set(weather)
    assert first.summary["trainable"]
    assert not second.summary["trainable"]
    assert first.summary["output_kind"] == "text"
    assert first.name != second.name
    assert second.summary["keyword"] in second.name


def test_one_task_served_by_two_models_is_one_cluster_with_shares(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "calls.db")
    for n, text in enumerate(MESSAGES):
        call = record(n, "classifier", CLASSIFY, text, "order_status")
        call.model = "qwen-1.5b" if n < 2 else "micro"
        store.add(call)
    (cluster,) = analyze(store, bag_of_words, min_size=1, threshold=0.95).clusters
    assert cluster.summary["models"] == {"micro": round(4 / 6, 3), "qwen-1.5b": round(2 / 6, 3)}


def test_failures_rejects_and_duplicates_are_filtered_and_counted(tmp_path: Path) -> None:
    calls = [
        record(1, "a", "{input}", "x", "y"),
        record(2, "a", "{input}", "x", "y"),  # duplicate of 1
        record(3, "b", "{input}", "x", "y"),  # other agent: kept
        record(4, "a", "{input}", "z", "y", state="failed", valid=False),
        record(5, "a", "{input}", "w", "y", state="rejected", valid=False),
        record(6, "a", "{input}", "v", "not json", valid=False),  # completed, invalid
        record(7, "a", "{input}", "u", "y", accepted=False),  # the planner rejected it
        record(8, "a", "{input}", "t", "y", accepted=True),
    ]
    curated = curate(calls)
    assert [c.id for c in curated.kept] == ["a-1", "b-3", "a-8"]
    assert curated.dropped == {"not_completed": 2, "invalid": 1, "not_accepted": 1, "duplicate": 1}
    store = CallStore(tmp_path / "calls.db")
    for call in calls:
        store.add(call)
    report = analyze(store, bag_of_words, min_size=1).to_dict()
    assert report["calls"] == 8
    assert report["kept"] == 3
    assert report["dropped"] == curated.dropped
    assert sum(c["size"] for c in report["clusters"]) == 3


def test_an_empty_store_gives_no_clusters(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "calls.db")
    report = analyze(store, bag_of_words).to_dict()
    assert report["clusters"] == []
    assert report["calls"] == 0
    assert store.clusters() == []
