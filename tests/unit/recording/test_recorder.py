"""The call recorder: finished calls land in the store redacted, off the request path."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from mesh.recording.recorder import PendingCall, Recorder, name_fields
from mesh.recording.store import CallRecord, CallStore


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
    monkeypatch.setattr("mesh.recording.recorder.QUEUE_LIMIT", 2)
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
