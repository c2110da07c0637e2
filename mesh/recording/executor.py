"""The recording wrapper: an SLM agent's executor whose finished calls go to the recorder.

``slmesh serve`` builds each agent's executor through :func:`recorded`, so recording is on
exactly where ``SLMESH_RECORD_DB`` asks for it, for every SLM agent (a deployed student
included), and the executor itself has no notion of it: it reports each finished call to its
observers (:attr:`~mesh.slm.executor.SLMExecutor.observers`), and this wrapper is one.
"""

from __future__ import annotations

from typing import Any

from mesh.a2a.executor import Executor, Reporter, Request
from mesh.config import Settings
from mesh.recording.recorder import PendingCall, Recorder, name_fields
from mesh.recording.store import CallRecord
from mesh.slm.executor import FinishedCall, SLMExecutor


class RecordingExecutor(Executor):
    """Runs an SLM executor unchanged and queues each of its finished calls for the store."""

    def __init__(self, inner: SLMExecutor, recorder: Recorder) -> None:
        self.inner = inner
        self.recorder = recorder
        inner.observers.append(self._record)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # warm_up, card_extensions, spec, backend...

    async def execute(self, request: Request, task: Reporter) -> None:
        await self.inner.execute(request, task)

    async def cancel(self, request: Request, task: Reporter) -> None:
        await self.inner.cancel(request, task)

    async def aclose(self) -> None:
        """Closes the agent, then writes what is queued (the recorder's own deadline)."""
        await self.inner.aclose()
        await self.recorder.aclose()

    def _record(self, call: FinishedCall) -> None:
        self.recorder.submit(pending_call(self.inner, call))


def pending_call(executor: SLMExecutor, call: FinishedCall) -> PendingCall:
    """What the recorder stores of one finished call (redacted later, off the request path)."""
    usage = call.usage
    spec = executor.spec
    record = CallRecord(
        id=call.task_id,
        task_id=call.task_id,
        agent=spec.name,
        skill=spec.skills[0].id if spec.skills else None,
        prompt=executor.options.prompt,
        input=call.input,
        output=call.output,
        state=call.state,
        valid=call.valid,
        error=call.error,
        output_spec=executor.output_spec,
        model=usage.model if usage else executor.backend.model_name,
        parameters=usage.parameters if usage else None,
        backend=executor.options.backend,
        latency_ms=call.latency_ms,
        input_tokens=usage.input_tokens if usage else None,
        output_tokens=usage.output_tokens if usage else None,
        mean_logprob=usage.mean_logprob if usage else None,
    )
    return PendingCall(record, tuple(name_fields(call.value)))


def recorded(executor: Executor, settings: Settings) -> Executor:
    """``executor``, wrapped to record its calls when ``SLMESH_RECORD_DB`` is set and it is an
    SLM agent's; otherwise itself."""
    if not isinstance(executor, SLMExecutor):
        return executor
    recorder = Recorder.from_settings(settings, executor.spec.name)
    return executor if recorder is None else RecordingExecutor(executor, recorder)
