"""The cost ledger of one task: tokens and estimated FLOPs per model, and the SLM-first saving.

Each model call a step made (its usage: model, parameters, input and output tokens) costs
``2 x parameters x tokens`` FLOPs, the usual estimate of a decoder's forward pass per
token. The baseline is what the task would have cost with every skill call sent straight
to the largest model offering that skill, priced with the tokens of the answer that was
used (the models may tokenise differently; this is an estimate, and it says so). The ratio
``baseline / actual`` is the measured counterpart of the paper's SLM cost argument:
escalated steps pay for both calls, so escalations pull it down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mesh.planner.steps import Outcome


@dataclass
class ModelCost:
    model: str
    parameters: int | None
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    flops: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "parameters": self.parameters,
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "flops": self.flops,
        }


def call_flops(call: dict[str, Any]) -> float:
    """``2 x parameters x (input + output tokens)``; 0 when the model's size is unknown."""
    parameters = call.get("parameters") or 0
    return 2.0 * parameters * ((call.get("input_tokens") or 0) + (call.get("output_tokens") or 0))


class CostLedger:
    """Accumulates step outcomes; :meth:`to_json` is what the result artifact carries."""

    MAX_LISTED = 100
    """Escalations listed one by one in the result (all are counted)."""

    def __init__(self) -> None:
        self.models: dict[str, ModelCost] = {}
        self.baseline_flops = 0.0
        self.routed_steps = 0
        """Steps whose skill had more than one provider."""
        self.first_choice = 0
        """Routed steps answered by the first (smallest) provider."""
        self.escalations: list[dict[str, Any]] = []
        self.escalation_count = 0

    def add(self, node: str, outcome: Outcome) -> None:
        calls = outcome.calls or ([_usage_call(outcome)] if outcome.usage else [])
        for call in calls:
            key = f"{call.get('agent') or '?'}:{call.get('model') or '?'}"
            cost = self.models.get(key)
            if cost is None:
                cost = self.models[key] = ModelCost(
                    call.get("model") or "?", call.get("parameters")
                )
            cost.calls += 1
            cost.input_tokens += call.get("input_tokens") or 0
            cost.output_tokens += call.get("output_tokens") or 0
            cost.flops += call_flops(call)
        if calls:
            used = calls[-1]
            largest = outcome.baseline_parameters or used.get("parameters")
            self.baseline_flops += call_flops({**used, "parameters": largest})
        if outcome.routed:
            self.routed_steps += 1
            self.first_choice += not outcome.escalations
        for escalation in outcome.escalations or ():
            self.escalation_count += 1
            if len(self.escalations) < self.MAX_LISTED:
                self.escalations.append({"step": node, **escalation})

    @property
    def flops(self) -> float:
        return sum(cost.flops for cost in self.models.values())

    def to_json(self) -> dict[str, Any]:
        actual = self.flops
        out: dict[str, Any] = {
            "models": [
                cost.to_json() for cost in sorted(self.models.values(), key=lambda c: -c.flops)
            ],
            "flops": actual,
            "baseline_flops": self.baseline_flops,
            "ratio": round(self.baseline_flops / actual, 3) if actual else None,
            "escalations": self.escalation_count,
        }
        if self.routed_steps:
            out["routed_steps"] = self.routed_steps
            out["first_choice_share"] = round(self.first_choice / self.routed_steps, 4)
        return out


def merge_costs(costs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several tasks' ``cost`` (as :meth:`CostLedger.to_json` wrote them) as one, same shape."""
    models: dict[str, dict[str, Any]] = {}
    flops = baseline = 0.0
    routed = first = escalations = 0
    for cost in costs:
        flops += cost.get("flops") or 0
        baseline += cost.get("baseline_flops") or 0
        escalations += cost.get("escalations") or 0
        steps = cost.get("routed_steps") or 0
        routed += steps
        first += round((cost.get("first_choice_share") or 0) * steps)
        for row in cost.get("models") or []:
            total = models.setdefault(
                row["model"],
                {**row, "calls": 0, "input_tokens": 0, "output_tokens": 0, "flops": 0.0},
            )
            for key in ("calls", "input_tokens", "output_tokens", "flops"):
                total[key] += row[key]
    out: dict[str, Any] = {
        "models": sorted(models.values(), key=lambda r: -r["flops"]),
        "flops": flops,
        "baseline_flops": baseline,
        "ratio": round(baseline / flops, 3) if flops else None,
        "escalations": escalations,
    }
    if routed:
        out["routed_steps"] = routed
        out["first_choice_share"] = round(first / routed, 4)
    return out


def _usage_call(outcome: Outcome) -> dict[str, Any]:
    usage = outcome.usage or {}
    return {
        "agent": outcome.agent,
        "model": usage.get("model"),
        "parameters": usage.get("parameters"),
        "input_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens"),
    }
