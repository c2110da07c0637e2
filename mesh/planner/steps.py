"""One step of a plan, as it runs inside a Ray worker: bind inputs, call an agent or function.

:class:`StepRunner` is what the planner's Ray actors host. It receives a :class:`StepCall`
and the :class:`Outcome` of every step it depends on (Ray resolves those ``ObjectRef``
arguments before the call starts, so results flow worker to worker through the object
store), renders the step's input, and returns the step's own :class:`Outcome`. Failures
come back as values, never as exceptions: a failed dependency fails the step without a
call, and the error names the step that broke first.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import jsonschema
from a2a.types import a2a_pb2 as pb
from google.protobuf.json_format import MessageToDict
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from mesh import telemetry
from mesh.a2a import installed
from mesh.a2a.client import MeshClient, parts_value, restore_ints
from mesh.config import Settings
from mesh.errors import DeadlineExceededError, NoReplicaError
from mesh.planner.functions import FUNCTIONS
from mesh.planner.routing import Provider, Route, largest_parameters
from mesh.plans.model import holds, render
from mesh.schema import SchemaValidator
from mesh.telemetry import names

JSON_MEDIA_TYPE = "application/json"

Status = Literal["ok", "skipped", "failed"]


@dataclass
class Outcome:
    """What a step produced: its value, or why it has none."""

    status: Status
    value: Any = None
    error: str | None = None
    failed_step: str | None = None
    """The step where the failure started (this one, or an upstream one)."""
    agent: str | None = None
    replica: str | None = None
    attempts: int = 0
    ms: float = 0.0
    usage: dict[str, Any] | None = None
    """Usage of the answer that was used (model, parameters, tokens, mean_logprob)."""
    calls: list[dict[str, Any]] | None = None
    """Every model call the step made, escalations included: what the cost ledger prices.
    Set only when the skill had more than one provider (the SLM-first router chose)."""
    escalations: list[dict[str, Any]] | None = None
    """``{"from", "to", "reason"}`` each time the step went on to a larger model."""
    baseline_parameters: int | None = None
    """The largest model offering the step's skill: the cost ledger's baseline."""
    agent_task: str | None = None
    """The A2A task id of the answer at its agent (the conversion loop's recorded call)."""
    rejected: list[dict[str, Any]] | None = None
    """Answers that failed the step's check: ``{"agent", "task_id", "value", "reason"}``
    (the conversion loop stores them as rejected examples)."""

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    @property
    def routed(self) -> bool:
        """The skill had more than one provider: the SLM-first router chose."""
        return self.calls is not None

    def to_json(self) -> dict[str, Any]:
        """Status and value always (a value may be 0, false or null); the rest when set."""
        return {
            k: v
            for k, v in asdict(self).items()
            if k in ("status", "value") or v not in (None, 0, 0.0)
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Outcome:
        return cls(**raw)


@dataclass(frozen=True)
class StepCall:
    """Everything a worker needs to run one step; small and picklable."""

    node: str
    """The step's id within the run, e.g. ``tickets[3].intent``."""
    kind: Literal["skill", "fn"]
    target: str
    agent: str | None
    input: Any
    when: Any
    deps: tuple[str, ...]
    """Binding names, in the order their outcomes are passed to :meth:`StepRunner.run`."""
    timeout_s: float
    retries: int
    idempotency_key: str | None = None
    expect: dict[str, Any] | None = None
    """JSON schema the agent's answer must satisfy."""
    check: str | None = None
    """Planner function listing an answer's problems; an answer with problems escalates."""
    fallback: str | None = None
    """Planner function building the value when no provider's answer passes ``check``."""
    trace: dict[str, str] = field(default_factory=dict)
    """W3C trace context of the planner's span for this run."""
    route: Route = ()
    """Providers of the skill, smallest model first (``agent`` is the first); empty: just
    ``agent``."""


class StepError(Exception):
    """One attempt of a step failed; ``retryable`` says whether another attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class StepRunner:
    """Runs steps; one instance per Ray actor, owning one pooled :class:`MeshClient`."""

    def __init__(self, settings: Settings, backoff_s: float = 0.2) -> None:
        self.settings = settings
        # A Ray worker is its own process: it exports its step spans itself (OTLP settings
        # come with the planner's environment, which local Ray workers inherit). It serves no
        # /metrics, so it records none.
        telemetry.configure("planner", settings.model_copy(update={"prometheus": False}))
        self.backoff_s = backoff_s
        self._client: MeshClient | None = None
        self._view: Any = None
        self._lock = asyncio.Lock()

    async def _mesh(self) -> MeshClient:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    from mesh.a2a.discovery import watched_client

                    if not self.settings.registry:
                        raise StepError(
                            "the planner needs SLMESH_REGISTRY to find agents", retryable=False
                        )
                    self._client, self._view = await watched_client(self.settings)
        return self._client

    async def ping(self) -> bool:
        """Readiness: the worker is up (and, with a registry, connected to it); returns whether
        its setup hook called mesh.a2a.install() before this runner was loaded."""
        if self.settings.registry:
            await self._mesh()
        return installed() is not None

    async def run(self, call: StepCall, *deps: Outcome) -> Outcome:
        """Runs ``call`` with the outcomes of its dependencies; never raises.

        Inside the planner's trace (carried in ``call.trace``) as a ``step {node}`` span,
        parent of the mesh-client hop to the agent.
        """
        if not telemetry.enabled():
            return await self._run(call, deps)
        kind = names.STEP_SKILL if call.kind == "skill" else names.STEP_FN
        attributes = {
            names.STEP_ID: call.node,
            kind: call.target,
            names.OPENINFERENCE_KIND: "CHAIN",
        }
        if call.agent:
            attributes[names.AGENT_NAME] = call.agent
        with (
            telemetry.attached(call.trace),
            telemetry.get_tracer().start_as_current_span(
                f"step {call.node}", attributes=attributes
            ) as span,
        ):
            outcome = await self._run(call, deps)
            ended: dict[str, Any] = {
                names.STEP_STATUS: outcome.status,
                names.STEP_ATTEMPTS: outcome.attempts,
            }
            if outcome.escalations:
                ended[names.STEP_ESCALATIONS] = len(outcome.escalations)
            if outcome.replica:
                ended[names.REPLICA] = outcome.replica
            span.set_attributes(ended)  # one call: one lock and one pass, not one per attribute
            if outcome.status == "failed":
                span.set_status(StatusCode.ERROR, outcome.error or "failed")
            return outcome

    async def _run(self, call: StepCall, deps: tuple[Outcome, ...]) -> Outcome:
        started = time.perf_counter()
        scope: dict[str, Any] = {}
        for name, dep in zip(call.deps, deps, strict=True):
            if not dep.ok:
                return Outcome(
                    "failed",
                    error=f"not run: {dep.failed_step or name} failed: {dep.error}",
                    failed_step=dep.failed_step or name,
                )
            scope[name] = dep.value
        if not holds(call.when, scope):
            return Outcome("skipped")
        value = render(call.input, scope)
        if call.idempotency_key is not None and isinstance(value, dict):
            value = {**value, "idempotency_key": call.idempotency_key}
        if call.kind == "fn":
            try:
                result = FUNCTIONS[call.target](value)
            except Exception as exc:  # noqa: BLE001 - a function's bug fails the step, not the worker
                return Outcome(
                    "failed",
                    error=f"{call.target}: {exc}",
                    failed_step=call.node,
                    ms=_ms(started),
                    attempts=1,
                )
            return Outcome("ok", value=result, ms=_ms(started), attempts=1)
        return await self._call_agent(call, value, started)

    async def _call_agent(self, call: StepCall, value: Any, started: float) -> Outcome:
        """Asks the route's providers in order, smallest model first, until one answer is usable.

        The last provider's answer is final whatever its confidence (nothing larger to ask);
        every call made is kept for the cost ledger and every hand-over as an escalation.
        """
        assert call.agent is not None
        route = call.route or (Provider(call.agent),)
        calls: list[dict[str, Any]] = []
        escalations: list[dict[str, Any]] = []
        attempts = 0
        rejected: list[dict[str, Any]] = []
        for index, provider in enumerate(route):
            outcome = await self._ask(call, provider.agent, value, started)
            attempts += outcome.attempts
            if outcome.usage:
                calls.append(_priced(provider.agent, outcome))
            reason = escalation_reason(outcome, provider)
            if reason is None and call.check is not None:
                reason = _check_reason(call, value, outcome)
                if reason is not None:
                    rejected.append(_rejection(provider.agent, outcome, reason))
            last = index == len(route) - 1
            if reason is not None and last and rejected:
                if call.fallback is None:  # nothing may replace an answer that failed its check
                    outcome = Outcome(
                        "failed", error=reason, failed_step=call.node, agent=provider.agent
                    )
                else:
                    _escalate(escalations, provider.agent, f"fn:{call.fallback}", reason)
                    outcome = _fallback(call, value, outcome)
                reason = None
            if reason is None or last:
                outcome.attempts = attempts
                outcome.ms = _ms(started)
                outcome.rejected = rejected or None
                if len(route) > 1 or escalations:
                    outcome.calls = calls
                    outcome.escalations = escalations or None
                    outcome.baseline_parameters = largest_parameters(route)
                return outcome
            _escalate(escalations, provider.agent, route[index + 1].agent, reason)
        raise AssertionError("unreachable: a route has at least one provider")

    async def _ask(self, call: StepCall, agent: str, value: Any, started: float) -> Outcome:
        """One provider, with the step's retries (backoff between attempts)."""
        attempts = 0
        replica: str | None = None
        while True:
            attempts += 1
            try:
                client = await self._mesh()
                response = await client.send_message(agent, _request(value), timeout=call.timeout_s)
                replica = _replica_of(client, response)
                result, usage = task_result(response)
                if call.expect is not None:
                    _check(result, call.expect)
                return Outcome(
                    "ok",
                    value=result,
                    agent=agent,
                    replica=replica,
                    attempts=attempts,
                    ms=_ms(started),
                    usage=usage,
                    agent_task=_task_id(response),
                )
            except StepError as exc:
                error = exc
            except (NoReplicaError, DeadlineExceededError) as exc:
                error = StepError(str(exc), retryable=True)
            except Exception as exc:  # noqa: BLE001 - agent protocol errors: bad input, not retryable
                error = StepError(f"{type(exc).__name__}: {exc}", retryable=False)
            if not error.retryable or attempts > call.retries:
                return Outcome(
                    "failed",
                    error=f"{agent} ({call.target}): {error}",
                    failed_step=call.node,
                    agent=agent,
                    replica=replica,
                    attempts=attempts,
                    ms=_ms(started),
                )
            await asyncio.sleep(self.backoff_s * 2 ** (attempts - 1))

    async def close(self) -> None:
        telemetry.force_flush()
        if self._client is not None:
            await self._client.close()
        if self._view is not None:
            await self._view.stop()


def _escalate(escalations: list[dict[str, Any]], source: str, target: str, reason: str) -> None:
    """Records one hand-over on the outcome and as an event of the step's span."""
    escalations.append({"from": source, "to": target, "reason": reason})
    trace.get_current_span().add_event(
        names.ESCALATION,
        {
            names.ESCALATION_FROM: source,
            names.ESCALATION_TO: target,
            names.ESCALATION_REASON: reason,
        },
    )


def _check_reason(call: StepCall, value: Any, outcome: Outcome) -> str | None:
    """Why the step's check refuses the answer, or None when it passes."""
    assert call.check is not None
    try:
        problems = FUNCTIONS[call.check]({"input": value, "value": outcome.value})
    except Exception as exc:  # noqa: BLE001  a check that cannot read the answer refuses it
        return f"check {call.check} failed: {exc}"
    if not problems:
        return None
    listed = problems if isinstance(problems, list) else [problems]
    return f"check {call.check}: " + "; ".join(str(problem) for problem in listed)


def _rejection(agent: str, outcome: Outcome, reason: str) -> dict[str, Any]:
    return {"agent": agent, "task_id": outcome.agent_task, "value": outcome.value, "reason": reason}


def _fallback(call: StepCall, value: Any, answered: Outcome) -> Outcome:
    """The fallback function's value in place of answers that all failed the check."""
    assert call.fallback is not None
    try:
        result = FUNCTIONS[call.fallback](value)
    except Exception as exc:  # noqa: BLE001  a broken fallback fails the step, never the worker
        return Outcome(
            "failed", error=f"{call.fallback}: {exc}", failed_step=call.node, agent=answered.agent
        )
    return Outcome("ok", value=result, agent=answered.agent, replica=answered.replica)


def escalation_reason(outcome: Outcome, provider: Provider) -> str | None:
    """Why this provider's answer should go to a larger model, or None to keep it."""
    if not outcome.ok:
        return f"failed: {outcome.error}"
    confidence = (outcome.usage or {}).get("mean_logprob")
    if (
        provider.escalate_below is not None
        and isinstance(confidence, (int, float))
        and confidence < provider.escalate_below
    ):
        return f"low confidence: mean logprob {confidence:.3f} < {provider.escalate_below}"
    return None


def _priced(agent: str, outcome: Outcome) -> dict[str, Any]:
    usage = outcome.usage or {}
    return {
        "agent": agent,
        "model": usage.get("model"),
        "parameters": usage.get("parameters"),
        "input_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens"),
        "mean_logprob": usage.get("mean_logprob"),
        "task_id": outcome.agent_task,
    }


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _request(value: Any) -> pb.SendMessageRequest:
    """Text as text; JSON as compact JSON text (keeps key order, which protobuf Structs lose)."""
    if isinstance(value, str):
        part = pb.Part(text=value)
    else:
        part = pb.Part(
            text=json.dumps(value, separators=(",", ":"), ensure_ascii=False),
            media_type=JSON_MEDIA_TYPE,
        )
    message = pb.Message(role=pb.Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=[part])
    return pb.SendMessageRequest(message=message)


def _task_id(response: pb.SendMessageResponse) -> str | None:
    return response.task.id if response.HasField("task") else None


def _replica_of(client: MeshClient, response: pb.SendMessageResponse) -> str | None:
    if response.HasField("task"):
        return client._task_home.get(response.task.id)  # noqa: SLF001 - the client's own record
    return None


def task_result(response: pb.SendMessageResponse | pb.Task) -> tuple[Any, dict[str, Any] | None]:
    """An agent's answer as a JSON value (and its usage), or :class:`StepError` why not.

    Completed tasks give their last artifact: JSON text, else the data part, else the
    text. Rejected tasks (bad input) are not retried; failed ones may be.
    """
    if isinstance(response, pb.SendMessageResponse):
        if not response.HasField("task"):
            return parts_value(response.message.parts), None
        task = response.task
    else:
        task = response
    state = task.status.state
    if state != pb.TaskState.TASK_STATE_COMPLETED:
        reason = (
            " ".join(p.text for p in task.status.message.parts if p.HasField("text"))
            or "no reason given"
        )
        name = pb.TaskState.Name(state).removeprefix("TASK_STATE_").lower()
        raise StepError(f"task {name}: {reason}", retryable=state == pb.TaskState.TASK_STATE_FAILED)
    if not task.artifacts:
        raise StepError("the agent completed without a result artifact", retryable=False)
    artifact = task.artifacts[-1]
    usage = (
        restore_ints(MessageToDict(artifact.metadata)).get("usage")
        if artifact.HasField("metadata")
        else None
    )
    return parts_value(artifact.parts), usage


def _check(value: Any, schema: dict[str, Any]) -> None:
    """An answer that breaks the step's ``expect`` schema fails the attempt (another replica,
    or a later attempt of a sampling model, may do better)."""
    error = jsonschema.exceptions.best_match(SchemaValidator(schema).iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the answer"
        raise StepError(f"invalid output: {where}: {error.message}", retryable=True)
