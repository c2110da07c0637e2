"""The call recorder: SLM executor calls land in the store redacted, off the request path."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from a2a.helpers import new_text_part
from a2a.types import TaskState

from mesh.config import ServiceSpec, Settings, SkillSpec
from mesh.convert.record import PendingCall, Recorder, name_fields
from mesh.convert.store import CallRecord, CallStore
from mesh.slm import SLMExecutor, TransformersBackend
from tests.unit.slm.test_executor import local, model_dir, send  # noqa: F401 - shared fixtures

LABELS = ["refund_request", "order_status", "other"]


def classifier(db: Path, backend: TransformersBackend) -> SLMExecutor:
    spec = ServiceSpec(
        name="classifier",
        executor="mesh.slm.executor:SLMExecutor",
        skills=[SkillSpec(id="classify_intent", name="Classify", description="Intent.")],
        options={
            "model": "./model",
            "prompt": "Intent of: {input}\n",
            "output": {"labels": LABELS},
        },
    )
    return SLMExecutor(spec, Settings(record_db=db), backend=backend)


def call(text: str, output: str | None = None, state: str = "completed", n: int = 1) -> CallRecord:
    return CallRecord(
        id=f"t{n}",
        task_id=f"t{n}",
        agent="extractor",
        prompt="{input}",
        input=text,
        output=output,
        state=state,
        valid=state == "completed",
    )


async def test_executor_calls_are_stored_redacted_with_usage(
    tmp_path: Path,
    local: TransformersBackend,  # noqa: F811 - the shared fixture imported above
) -> None:
    db = tmp_path / "calls.db"
    executor = classifier(db, local)
    texts = [
        "Refund please, I am jane.doe@mail.com",
        "Call me at +44 20 7946 0958 about ORD-100001",
    ]
    tasks = [await send(executor, new_text_part(t)) for t in texts]
    empty = await send(executor, new_text_part("  "))
    assert executor.recorder is not None
    await executor.recorder.flush()
    rows = {r.task_id: r for r in CallStore(db).calls()}
    assert set(rows) == {t.id for t in [*tasks, empty]}
    first, second = rows[tasks[0].id], rows[tasks[1].id]
    assert first.input == "Refund please, I am user1@example.com"
    assert second.input == "Call me at +1-202-555-0001 about ORD-100001"
    for task, row in zip(tasks, (first, second), strict=True):
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert row.output == task.artifacts[0].parts[1].text
        assert row.output in LABELS
        assert (row.state, row.valid, row.agent, row.skill) == (
            "completed",
            True,
            "classifier",
            "classify_intent",
        )
        assert row.prompt == "Intent of: {input}\n"
        assert row.output_spec == {"labels": LABELS}
        assert row.model == "model"
        assert row.backend == "transformers"
        assert row.parameters > 0
        assert row.input_tokens > len(row.input)
        assert row.output_tokens >= 1
        assert row.mean_logprob is not None
        assert row.mean_logprob <= 0
        assert row.latency_ms is not None
        assert row.latency_ms > 0
    rejected = rows[empty.id]
    assert (rejected.state, rejected.valid, rejected.output) == ("rejected", False, None)
    assert rejected.error is not None
    assert rejected.error.startswith("empty_input")
    await executor.recorder.aclose()


async def test_recording_off_without_the_setting(
    local: TransformersBackend,  # noqa: F811 - the shared fixture imported above
) -> None:
    executor = SLMExecutor(
        ServiceSpec(
            name="c",
            executor="mesh.slm.executor:SLMExecutor",
            options={"model": "./m", "output": {"labels": LABELS}},
        ),
        Settings(),
        backend=local,
    )
    assert executor.recorder is None


async def test_names_from_the_finder_are_redacted_in_input_and_output(tmp_path: Path) -> None:
    asked: list[str] = []

    async def finder(text: str) -> list[str]:
        asked.append(text)
        return ["Olga Petrov"]

    recorder = Recorder(CallStore(tmp_path / "c.db"), finder)
    recorder.submit(
        PendingCall(
            call(
                "Hi, Olga Petrov here (olga@mail.ru)",
                '{"name":"Olga Petrov","email":"olga@mail.ru"}',
            )
        )
    )
    await recorder.flush()
    (row,) = recorder.store.calls()
    assert row.input == "Hi, Alex Morgan here (user1@example.com)"
    assert json.loads(row.output or "") == {"name": "Alex Morgan", "email": "user1@example.com"}
    assert asked == ["Hi, Olga Petrov here (olga@mail.ru)"]
    assert recorder.written == 1
    await recorder.aclose()


async def test_calls_are_dropped_not_written_when_names_cannot_be_looked_up(tmp_path: Path) -> None:
    async def down(text: str) -> list[str]:
        raise ConnectionError("extractor unreachable")

    recorder = Recorder(CallStore(tmp_path / "c.db"), down)
    for n in range(3):
        recorder.submit(PendingCall(call(f"I am Olga Petrov, #{n}", n=n)))
    await recorder.flush()
    assert recorder.store.count() == 0
    assert recorder.dropped == {"names_unavailable": 3}
    assert recorder.written == 0
    await recorder.aclose()


async def test_the_name_source_itself_uses_its_own_output_and_drops_its_failures(
    tmp_path: Path,
) -> None:
    recorder = Recorder(CallStore(tmp_path / "c.db"), names_from_output=True)
    output = {"order_id": None, "name": "Aisha Okafor", "product": "strap"}
    recorder.submit(
        PendingCall(
            call("Hi, this is Aisha Okafor. The strap snapped.", json.dumps(output)),
            tuple(name_fields(output)),
        )
    )
    recorder.submit(PendingCall(call("Aisha Okafor again", state="failed", n=2)))
    await recorder.flush()
    (row,) = recorder.store.calls()
    assert row.input == "Hi, this is Alex Morgan. The strap snapped."
    assert json.loads(row.output or "")["name"] == "Alex Morgan"
    assert json.loads(row.output or "")["product"] == "strap"
    assert recorder.dropped == {"names_unavailable": 1}
    await recorder.aclose()


async def test_submit_never_waits_and_a_full_queue_drops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mesh.convert.record.QUEUE_LIMIT", 2)
    recorder = Recorder(CallStore(tmp_path / "c.db"))
    for n in range(5):  # no await in between: the worker has not run yet
        recorder.submit(PendingCall(call("x", "y", n=n)))
    assert recorder.dropped == {"queue_full": 3}
    await recorder.flush()
    assert recorder.store.count() == 2
    await recorder.aclose()


def test_name_fields_finds_name_like_keys_only() -> None:
    value = {
        "name": "A B",
        "product": "mug",
        "customer_name": "C D",
        "items": [{"name": "E"}],
        "email": None,
    }
    assert name_fields(value) == ["A B", "C D", "E"]


async def test_a_failing_store_write_is_counted_not_raised(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "c.db")
    recorder = Recorder(store)
    store.close()  # every write now fails
    recorder.submit(PendingCall(call("x", "y")))
    await asyncio.wait_for(recorder.flush(), 5)
    assert recorder.dropped == {"write_failed": 1}
    recorder.store = CallStore(tmp_path / "c.db")
    await recorder.aclose()
