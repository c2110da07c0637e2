"""Curating and clustering recorded calls (S2/S3 of the conversion loop).

Curation drops what a student must not learn from: calls that did not complete, output that
broke the declared output, answers a downstream consumer rejected, and duplicates (same
agent, input and output). Clustering then finds the recurring tasks, in two levels:

1. Task definition: calls with the same prompt template and output spec are one task; two
   templates whose embeddings are nearly the same (a reworded prompt, another model serving
   the same skill) with the same output kind are merged.
2. Inputs: within one task, average-linkage clustering of the inputs' cosine distances, cut
   at ``threshold``, splits a generic prompt (``{input}``) into the kinds of requests it serves.

Why not one embedding of template + input: with all-MiniLM-L6-v2 one support message under
two agents' templates scores 0.66 (median), as close as two messages under one template
(0.63), so a single embedding mixes different agents' tasks (docs/conversion.md).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mesh.recording.redact import SURROGATE_NAMES
from mesh.recording.store import CallRecord, CallStore, Cluster

Embed = Callable[[Sequence[str]], Any]
"""Texts -> unit-length embeddings (one numpy row per text)."""

FILTERS = ("not_completed", "invalid", "not_accepted", "duplicate")
_STOPWORDS = frozenset(
    "this that with from have your what when where which there their about would could should "
    "please thanks thank hello order orders message input just been into then them they were "
    "will also only some more very user example json".split()
    # Redaction's surrogate names stand in every kind of call: they say nothing of a cluster.
) | {w for name in SURROGATE_NAMES for w in name.lower().split()}


@dataclass
class Curated:
    kept: list[CallRecord]
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FILTERS, 0))


def curate(calls: Sequence[CallRecord]) -> Curated:
    """Keeps completed, valid, not-rejected calls, the first of each (agent, input, output)."""
    result = Curated([])
    seen: set[tuple[str, str, str | None]] = set()
    for call in calls:
        if call.state != "completed":
            reason = "not_completed"
        elif not call.valid:
            reason = "invalid"
        elif call.accepted is False:
            reason = "not_accepted"
        elif (call.agent, call.input, call.output) in seen:
            reason = "duplicate"
        else:
            seen.add((call.agent, call.input, call.output))
            result.kept.append(call)
            continue
        result.dropped[reason] += 1
    return result


def output_kind(spec: dict[str, Any] | None) -> str:
    if spec is None:
        return "text"
    return "labels" if "labels" in spec else "schema"


def task_groups(
    calls: Sequence[CallRecord], embed: Embed, similarity: float = 0.9
) -> list[list[int]]:
    """Indices of ``calls`` per task definition (template + output spec, near-identical merged)."""
    keys: dict[tuple[str, str], list[int]] = {}
    for i, call in enumerate(calls):
        keys.setdefault((call.prompt, json.dumps(call.output_spec, sort_keys=True)), []).append(i)
    definitions = list(keys)
    texts = [_definition_text(prompt, json.loads(spec)) for prompt, spec in definitions]
    vectors = np.asarray(embed(texts))
    owner = list(range(len(definitions)))  # union-find over definitions

    def root(i: int) -> int:
        while owner[i] != i:
            owner[i] = owner[owner[i]]
            i = owner[i]
        return i

    for a in range(len(definitions)):
        for b in range(a + 1, len(definitions)):
            same_kind = output_kind(json.loads(definitions[a][1])) == output_kind(
                json.loads(definitions[b][1])
            )
            if same_kind and float(vectors[a] @ vectors[b]) >= similarity:
                owner[root(b)] = root(a)
    groups: dict[int, list[int]] = {}
    for d, key in enumerate(definitions):
        groups.setdefault(root(d), []).extend(keys[key])
    return [sorted(members) for members in groups.values()]


def _definition_text(prompt: str, spec: dict[str, Any] | None) -> str:
    """What a task asks for: the template without its input slot, plus its output's names."""
    text = prompt.replace("{input}", " ").strip()
    if spec and "labels" in spec:
        text += " Labels: " + ", ".join(spec["labels"])
    elif spec and "schema" in spec:
        text += " Fields: " + ", ".join(spec["schema"].get("properties", {}))
    return text


def input_clusters(vectors: Any, threshold: float) -> list[list[int]]:
    """Average-linkage clusters of unit vectors, merged while their mean cosine distance <=
    threshold."""
    n = len(vectors)
    if n < 2:
        return [list(range(n))]
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    distances = np.clip(pdist(np.asarray(vectors, dtype=np.float64), "cosine"), 0.0, 2.0)
    labels = fcluster(linkage(distances, method="average"), t=threshold, criterion="distance")
    clusters: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        clusters.setdefault(int(label), []).append(i)
    return list(clusters.values())


def cluster_calls(
    calls: Sequence[CallRecord],
    embed: Embed,
    *,
    threshold: float = 0.85,
    template_similarity: float = 0.9,
) -> list[list[CallRecord]]:
    """The curated calls in clusters, largest first."""
    if not calls:
        return []
    inputs = np.asarray(embed([call.input for call in calls]))
    out: list[list[CallRecord]] = []
    for group in task_groups(calls, embed, template_similarity):
        for members in input_clusters(inputs[group], threshold):
            out.append([calls[group[i]] for i in members])
    return sorted(out, key=lambda members: (-len(members), members[0].created))


def summarize(
    members: Sequence[CallRecord],
    everything: Sequence[CallRecord],
    *,
    min_size: int,
    examples: int = 3,
) -> tuple[str, dict[str, Any]]:
    """A cluster's name and the summary ``convert analyze`` reports and stores."""
    size = len(members)
    skills = Counter(m.skill or m.agent for m in members)
    prompts = Counter(m.prompt for m in members)
    specs = Counter(json.dumps(m.output_spec, sort_keys=True) for m in members)
    spec = json.loads(specs.most_common(1)[0][0])
    keyword = _keyword(members, everything)
    name = skills.most_common(1)[0][0] + (f"-{keyword}" if keyword else "")
    return name, {
        "skill": skills.most_common(1)[0][0],
        "agents": _shares(Counter(m.agent for m in members), size),
        "models": _shares(Counter(m.model or "?" for m in members), size),
        "output_kind": output_kind(spec),
        "output_spec": spec,
        "prompt": prompts.most_common(1)[0][0],
        "keyword": keyword,
        "trainable": size >= min_size,
        "examples": [{"input": m.input, "output": m.output} for m in members[:examples]],
    }


def _shares(counts: Counter[str], size: int) -> dict[str, float]:
    return {key: round(n / size, 3) for key, n in counts.most_common()}


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]{4,}", text.lower()) if w not in _STOPWORDS}


def _keyword(members: Sequence[CallRecord], everything: Sequence[CallRecord]) -> str | None:
    """The word most typical of the cluster's inputs compared with all calls."""
    inside = Counter(w for m in members for w in _words(m.input))
    if not inside:
        return None
    overall = Counter(w for c in everything for w in _words(c.input))
    size, total = len(members), max(len(everything), 1)
    return max(
        inside, key=lambda w: (inside[w] / size - overall[w] / total + inside[w] / size / 2, w)
    )


@dataclass
class Analysis:
    """What ``convert analyze`` found and wrote."""

    calls: int
    dropped: dict[str, int]
    clusters: list[Cluster]
    min_size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "kept": self.calls - sum(self.dropped.values()),
            "dropped": self.dropped,
            "min_size": self.min_size,
            "clusters": [
                {"id": c.id, "name": c.name, "size": c.size, **c.summary} for c in self.clusters
            ],
        }


def analyze(
    store: CallStore,
    embed: Embed,
    *,
    min_size: int = 20,
    threshold: float = 0.85,
    template_similarity: float = 0.9,
    examples: int = 3,
) -> Analysis:
    """Curates the store's calls, clusters them and replaces the store's clusters."""
    calls = list(store.calls())
    curated = curate(calls)
    clusters = cluster_calls(
        curated.kept, embed, threshold=threshold, template_similarity=template_similarity
    )
    rows: list[tuple[str, dict[str, Any], list[str]]] = []
    names: Counter[str] = Counter()
    for members in clusters:
        name, summary = summarize(members, curated.kept, min_size=min_size, examples=examples)
        names[name] += 1
        if names[name] > 1:
            name = f"{name}-{names[name]}"
        rows.append((name, summary, [m.id for m in members]))
    return Analysis(len(calls), curated.dropped, store.replace_clusters(rows), min_size)
