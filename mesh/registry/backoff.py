"""Retry pacing for the registry's long-lived clients.

When the registry restarts, every replica retries at once; capped exponential delays with
jitter spread those retries out instead of hammering the new registry in lockstep.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delay before retry number ``attempt`` (0-based): ``initial_s * multiplier**attempt``,
    capped at ``max_s``, then shortened by up to ``jitter`` of itself at random."""

    initial_s: float = 0.1
    max_s: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {self.initial_s}, {self.max_s}")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be within [0, 1], got {self.jitter}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt``."""
        steps = max(attempt, 0)
        if self.multiplier > 1:
            steps = min(steps, math.ceil(math.log(self.max_s / self.initial_s, self.multiplier)))
        capped = min(self.max_s, self.initial_s * self.multiplier**steps)
        return capped * (1 - self.jitter * random.random())
