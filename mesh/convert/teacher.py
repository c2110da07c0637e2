"""Teacher traffic without a running mesh: an SLM agent served in-process over messages,
each call stored as the recorder stores it, plus one cluster holding them all.

For demos and tests of S4-S6 before (or without) recording real traffic: the calls carry
the same fields the recorder writes (prompt template, output spec, skill, model, usage),
produced by the agent's own executor options and runtime, so a student trained on them
sees exactly what it would see from recorded calls.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence

from mesh.config import ServiceSpec, Settings
from mesh.convert.store import CallRecord, CallStore, Cluster
from mesh.slm.errors import InputError, InvalidOutputError


def demo_inputs(agent: str, count: int, seed: int = 0) -> list[str]:
    """Inputs of ``agent``'s synthetic TEST split (messages the shipped models never saw)."""
    from mesh.train.data.dataset import TEST
    from mesh.train.data.tasks import load_task

    return [example.input for example in load_task(agent).examples(TEST, seed, count)]


def record_calls(spec: ServiceSpec, inputs: Sequence[str], store: CallStore, *,
                 cluster: str | None = None) -> list[Cluster]:
    """Runs ``spec``'s agent over ``inputs`` and stores each call; with ``cluster`` also makes
    the store's clusters exactly one of that name holding them all (replacing any others)."""
    from mesh.slm.executor import SLMExecutor

    executor = SLMExecutor(spec, Settings())
    options = executor.options
    output_spec = None
    if options.output is not None:
        output_spec = ({"labels": list(options.output.labels)} if options.output.labels is not None
                       else {"schema": options.output.schema_})
    skill = spec.skills[0].id if spec.skills else None

    async def one(text: str) -> CallRecord:
        started = time.monotonic()
        record = CallRecord(id=uuid.uuid4().hex, agent=spec.name, prompt=options.prompt,
                            input=text, output=None, state="completed", valid=True, skill=skill,
                            backend=options.backend, output_spec=output_spec,
                            model=executor.backend.model_name,
                            parameters=executor.backend.parameters)
        try:
            generation = await executor.backend.generate(executor.request_for(text))
        except InputError as exc:
            record.state, record.valid, record.error = "rejected", False, str(exc)
            return record
        except InvalidOutputError as exc:
            record.state, record.valid, record.error = "failed", False, str(exc)
            return record
        record.latency_ms = round((time.monotonic() - started) * 1000, 3)
        record.output = (json.dumps(generation.value, ensure_ascii=False, separators=(",", ":"))
                         if output_spec is not None and "schema" in output_spec
                         else generation.text)
        usage = generation.usage
        record.input_tokens, record.output_tokens = usage.input_tokens, usage.output_tokens
        record.mean_logprob = usage.mean_logprob
        return record

    async def run() -> list[CallRecord]:
        try:
            return list(await asyncio.gather(*(one(text) for text in inputs)))
        finally:
            await executor.aclose()

    records = asyncio.run(run())
    for record in records:
        store.add(record)
    if cluster is None:
        return store.clusters()
    summary = {"agents": [spec.name], "skill": skill, "source": "mesh.convert.teacher"}
    return store.replace_clusters([(cluster, summary, [r.id for r in records])])
