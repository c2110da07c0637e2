"""A small recorded cluster for conversion-loop tests: keyword-labelled calls of a fake teacher.

The labels follow one keyword of each message, so a tiny model can learn them in a few
dozen LoRA steps; the calls are stored exactly as the recorder stores them.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from mesh.recording.store import CallRecord, CallStore

LABELS = ["refund_request", "order_status", "cancel_order"]
PROMPT = "Classify.\nMessage: {input}\nIntent: "
SKILL = "classify_intent"
_KEYWORDS = {"refund": "refund_request", "where": "order_status", "cancel": "cancel_order"}
_FRAMES = [
    "please {k} order ORD-{n}",
    "{k} ORD-{n} now",
    "hi, {k} my parcel {n}",
    "{k}? order {n}",
    "I want to {k} it, ref {n}",
]


def messages(count: int, offset: int = 0) -> list[tuple[str, str]]:
    """``(message, label)`` pairs, labels in rotation."""
    keys = list(_KEYWORDS)
    out = []
    for i in range(offset, offset + count):
        key = keys[i % len(keys)]
        out.append((_FRAMES[i % len(_FRAMES)].format(k=key, n=100 + 7 * i), _KEYWORDS[key]))
    return out


def record_cluster(db: Path, count: int = 40, name: str = "intents") -> CallStore:
    """A store with ``count`` valid calls of agent ``teacher`` in one cluster, plus a
    rejected and an invalid call that training must leave out."""
    store = CallStore(db)
    ids = []
    for i, (text, label) in enumerate(messages(count)):
        store.add(
            CallRecord(
                id=f"call-{i:04d}",
                agent="teacher",
                prompt=PROMPT,
                input=text,
                output=label,
                state="completed",
                valid=True,
                skill=SKILL,
                model="teacher-model",
                parameters=999_999,
                output_spec={"labels": LABELS},
                created=1000.0 + i,
            )
        )
        ids.append(f"call-{i:04d}")
    store.add(
        CallRecord(
            id="bad-1",
            agent="teacher",
            prompt=PROMPT,
            input="cancel x",
            output="order_status",
            state="completed",
            valid=True,
            skill=SKILL,
            output_spec={"labels": LABELS},
            accepted=False,
        )
    )
    store.add(
        CallRecord(
            id="bad-2",
            agent="teacher",
            prompt=PROMPT,
            input="refund y",
            output="nonsense",
            state="completed",
            valid=False,
            skill=SKILL,
            output_spec={"labels": LABELS},
        )
    )
    store.replace_clusters([(name, {"agents": ["teacher"]}, [*ids, "bad-1", "bad-2"])])
    return store


def write_teacher_spec(services: Path) -> Path:
    """``services/teacher/agent.yaml``: the skill, stop and max_new_tokens the calls lack."""
    folder = services / "teacher"
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "name": "teacher",
        "executor": "mesh.slm.executor:SLMExecutor",
        "skills": [
            {
                "id": SKILL,
                "name": "Classify intent",
                "description": "Labels a message.",
                "tags": ["classification"],
            }
        ],
        "input_modes": ["text/plain"],
        "output_modes": ["text/plain"],
        "options": {
            "model": "../../nowhere",
            "prompt": PROMPT,
            "output": {"labels": LABELS},
            "max_new_tokens": 24,
            "stop": ["\n"],
        },
    }
    (folder / "agent.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return folder
