"""Runs a validated plan on Ray: every step a call on a :class:`~mesh.planner.steps.StepRunner`
actor, with its dependencies passed as ``ObjectRef`` arguments.

All action steps of a plan are handed to Ray at once, so a step starts as soon as Ray has
its inputs, without a round trip through the planner; independent steps overlap. Map steps
(``for_each``) are expanded when their list is known: one sub-plan per item, each item's
steps named ``map[i].step``. The planner awaits each step's outcome only to record it (the
run store, progress events), which is also what makes a restarted planner resume where it
stopped: steps already recorded are put back into the object store instead of run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mesh.planner.routing import Route
from mesh.planner.steps import Outcome, StepCall
from mesh.plans.model import Plan, PlanError, render, step_dependencies, validate_plan

log = logging.getLogger(__name__)

StepEvent = Callable[[str, str, StepCall | None, Outcome | None], None]
"""Told ``(kind, node, call, outcome)``: ``started``/``finished`` for an action step,
``replayed`` for one recorded before a restart, ``expanded`` (outcome value: item count)
and ``mapped`` for a map step."""


@dataclass
class RunLimits:
    """Defaults a step gets when its plan does not say, and bounds on one run."""

    step_timeout_s: float = 120.0
    max_fan_out: int = 10_000
    """Items all ``for_each`` maps of one run may expand to in total (nested maps multiply)."""


class PlanRun:
    """One execution of a plan for one task (or the resumption of one)."""

    def __init__(
        self,
        runtime: Any,
        task_id: str,
        plan: Plan,
        input_value: Any,
        *,
        routes: Mapping[str, Route],
        workflows: Mapping[str, Plan],
        on_event: StepEvent,
        record: Callable[[str, Outcome], Awaitable[None]],
        done: Mapping[str, Outcome] | None = None,
        limits: RunLimits | None = None,
        trace: dict[str, str] | None = None,
    ) -> None:
        self.runtime = runtime
        self.task_id = task_id
        self.plan = plan
        self.input_value = input_value
        self.routes = routes
        self.skills = {skill: route[0].agent for skill, route in routes.items()}
        self.workflows = workflows
        self.on_event = on_event
        self.record = record
        self.done = dict(done or {})
        self.limits = limits or RunLimits()
        self.trace = trace or {}
        self.outcomes: dict[str, Outcome] = {}
        self._inflight: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._orders: dict[int, list[str]] = {}
        self._expanded = 0
        self._main: asyncio.Task[Outcome] | None = None
        self.cancelled = False

    async def execute(self) -> Outcome:
        """The plan's output (``failed`` with the first broken step when it has none).

        After :meth:`cancel` it returns a ``canceled`` outcome.
        """
        ray = self.runtime.ray
        input_ref = ray.put(Outcome("ok", value=self.input_value))
        self._main = asyncio.create_task(self._run_plan(self.plan, input_ref, ""))
        try:
            return await self._main
        except asyncio.CancelledError:
            if not self.cancelled:
                raise
            return Outcome("failed", error="canceled", failed_step=None)
        finally:
            for task in list(self._tasks):
                task.cancel()

    def cancel(self) -> None:
        """Stops every step still queued or running (their outcomes are not recorded)."""
        self.cancelled = True
        for ref in list(self._inflight.values()):
            with contextlib.suppress(Exception):
                self.runtime.ray.cancel(ref)
        for task in list(self._tasks):
            task.cancel()
        if self._main is not None:
            self._main.cancel()

    # -- plans -----------------------------------------------------------------------

    async def _run_plan(self, plan: Plan, input_ref: Any, prefix: str) -> Outcome:
        """Runs one plan (the run's, or a map item's); ``input_ref`` is an ObjectRef or an
        Outcome."""
        order = self._orders.get(id(plan))
        if order is None:
            order = self._orders[id(plan)] = validate_plan(
                plan, skills=self.skills, workflows=self.workflows
            )
        loop = asyncio.get_running_loop()
        refs: dict[str, asyncio.Future[Any]] = {"input": loop.create_future()}
        refs["input"].set_result(input_ref)
        outcomes: dict[str, asyncio.Future[Outcome]] = {}
        for step_id in order:
            refs[step_id] = loop.create_future()
            outcomes[step_id] = loop.create_future()
        for step_id in order:
            step = plan.step(step_id)
            runner = self._run_map if step.is_map else self._run_action
            task = asyncio.create_task(runner(step, prefix + step.id, refs, outcomes[step_id]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        given = await _resolved(input_ref)
        scope: dict[str, Any] = {"input": given.value}
        failure: Outcome | None = None
        for step_id in order:
            outcome = await outcomes[step_id]
            if not outcome.ok and failure is None:
                failure = outcome
            scope[step_id] = outcome.value
        if failure is not None:
            return Outcome("failed", error=failure.error, failed_step=failure.failed_step)
        template = (
            plan.output if plan.output is not None else {s.id: f"${s.id}" for s in plan.steps}
        )
        return Outcome("ok", value=render(template, scope))

    # -- steps ---------------------------------------------------------------------------

    async def _run_action(
        self,
        step: Any,
        node: str,
        refs: dict[str, asyncio.Future[Any]],
        result: asyncio.Future[Outcome],
    ) -> None:
        ray = self.runtime.ray
        names = tuple(sorted(step_dependencies(step)))
        dep_refs = [await refs[name] for name in names]
        if node in self.done:
            outcome = self.done[node]
            refs[step.id].set_result(ray.put(outcome))
            self.on_event("replayed", node, None, outcome)
            self.outcomes[node] = outcome
            result.set_result(outcome)
            return
        route: Route = ()
        if step.skill is not None:
            route = self.routes.get(step.skill, ())
        call = StepCall(
            node=node,
            kind="skill" if step.skill is not None else "fn",
            target=step.skill or step.fn,
            agent=route[0].agent if route else None,
            input=step.input,
            when=step.when,
            deps=names,
            timeout_s=step.timeout_s or self.limits.step_timeout_s,
            retries=step.retries,
            idempotency_key=f"{self.task_id}/{node}" if step.idempotency_key else None,
            expect=step.expect,
            check=step.check,
            fallback=step.fallback,
            trace=self.trace,
            route=route if len(route) > 1 else (),
        )
        ref = self.runtime.submit(call, dep_refs)
        refs[step.id].set_result(ref)
        self._inflight[node] = ref
        self.on_event("started", node, call, None)
        try:
            outcome = await ref
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the worker died or Ray lost the object
            outcome = Outcome("failed", error=f"step worker error: {exc}", failed_step=node)
        finally:
            self._inflight.pop(node, None)
        if outcome.ok:
            await self.record(node, outcome)
        self.outcomes[node] = outcome
        self.on_event("finished", node, call, outcome)
        result.set_result(outcome)

    async def _run_map(
        self,
        step: Any,
        node: str,
        refs: dict[str, asyncio.Future[Any]],
        result: asyncio.Future[Outcome],
    ) -> None:
        names = sorted(step_dependencies(step) - {"item"})
        scope: dict[str, Any] = {}
        for name in names:
            dep = await _resolved(await refs[name])
            if not dep.ok:
                outcome = Outcome(
                    "failed",
                    error=f"not run: {dep.failed_step or name} failed: {dep.error}",
                    failed_step=dep.failed_step or name,
                )
                return self._settle(step, node, refs, result, outcome)
            scope[name] = dep.value
        items = render(step.for_each, scope)
        if not isinstance(items, list):
            outcome = Outcome(
                "failed",
                error=f"for_each gave {type(items).__name__}, not a list",
                failed_step=node,
            )
            return self._settle(step, node, refs, result, outcome)
        self._expanded += len(items)
        if self._expanded > self.limits.max_fan_out:
            outcome = Outcome(
                "failed",
                error=f"for_each gave {len(items)} items, {self._expanded} in this run: over the "
                f"planner's limit of {self.limits.max_fan_out} (options.max_fan_out); split the "
                "request",
                failed_step=node,
            )
            return self._settle(step, node, refs, result, outcome)
        sub = step.plan or self.workflows.get(step.workflow or "")
        if sub is None:
            raise PlanError(f"step {node!r}: unknown workflow {step.workflow!r}")
        self.on_event("expanded", node, None, Outcome("ok", value=len(items)))
        item_runs = [
            # An item's input travels inline with its steps' calls (no object-store put per item).
            self._run_plan(
                sub,
                Outcome("ok", value=render(step.input, {**scope, "item": item})),
                f"{node}[{i}].",
            )
            for i, item in enumerate(items)
        ]
        values: list[Any] = []
        failure: Outcome | None = None
        for item_outcome in await asyncio.gather(*item_runs):
            if item_outcome.ok:
                values.append(item_outcome.value)
                continue
            failure = failure or item_outcome
            values.append(
                {"error": {"step": item_outcome.failed_step, "message": item_outcome.error}}
            )
        if failure is not None and step.on_error == "fail":
            outcome = Outcome("failed", error=failure.error, failed_step=failure.failed_step)
        else:
            outcome = Outcome("ok", value=values)
        self._settle(step, node, refs, result, outcome)

    def _settle(
        self,
        step: Any,
        node: str,
        refs: dict[str, asyncio.Future[Any]],
        result: asyncio.Future[Outcome],
        outcome: Outcome,
    ) -> None:
        refs[step.id].set_result(self.runtime.ray.put(outcome))
        self.outcomes[node] = outcome
        self.on_event("mapped", node, None, outcome)
        result.set_result(outcome)


async def _resolved(ref_or_outcome: Any) -> Outcome:
    """The outcome behind an ObjectRef, or the outcome itself when it travels inline."""
    if isinstance(ref_or_outcome, Outcome):
        return ref_or_outcome
    outcome: Outcome = await ref_or_outcome
    return outcome
