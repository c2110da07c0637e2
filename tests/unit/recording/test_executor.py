"""The recording wrapper: an SLM agent's calls reach the store redacted, with their usage; the
agent itself is unchanged and other executors are not wrapped."""

from __future__ import annotations

from pathlib import Path

from a2a.helpers import new_text_part
from a2a.types import TaskState

from mesh.config import ServiceSpec, Settings, SkillSpec
from mesh.recording.executor import RecordingExecutor, recorded
from mesh.recording.store import CallStore
from mesh.slm import SLMExecutor, TransformersBackend
from tests.support.scripted import ScriptedExecutor
from tests.unit.slm.test_executor import local, model_dir, send  # noqa: F401 - shared fixtures

LABELS = ["refund_request", "order_status", "other"]


def classifier(backend: TransformersBackend) -> SLMExecutor:
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
    return SLMExecutor(spec, Settings(), backend=backend)


async def test_recorded_calls_are_stored_redacted_with_usage(
    tmp_path: Path,
    local: TransformersBackend,  # noqa: F811 - the shared fixture imported above
) -> None:
    db = tmp_path / "calls.db"
    agent = classifier(local)
    executor = recorded(agent, Settings(record_db=db))
    assert isinstance(executor, RecordingExecutor)
    assert executor.card_extensions() == agent.card_extensions()  # the agent shows through
    texts = [
        "Refund please, I am jane.doe@mail.com",
        "Call me at +44 20 7946 0958 about ORD-100001",
    ]
    tasks = [await send(executor, new_text_part(t)) for t in texts]  # type: ignore[arg-type]
    empty = await send(executor, new_text_part("  "))  # type: ignore[arg-type]
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
    agent.observers.clear()  # the backend is the module's shared fixture


async def test_nothing_is_wrapped_without_the_setting_or_for_other_agents(
    tmp_path: Path,
    local: TransformersBackend,  # noqa: F811 - the shared fixture imported above
) -> None:
    agent = classifier(local)
    assert recorded(agent, Settings()) is agent
    assert agent.observers == []
    scripted = ScriptedExecutor()
    assert recorded(scripted, Settings(record_db=tmp_path / "calls.db")) is scripted
