"""Training precision on CPU: bf16 autocast only where the CPU computes bf16 natively.

bf16 autocast trains the micro-SLMs faster than float32 on a CPU with AVX-512 BF16, and
several times slower on an AVX2-only CPU, where every bf16 operation is emulated
(docs/benchmarks.md, "Training precision on CPU"). So the default picks by what the CPU has.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch

Precision = Literal["auto", "bf16", "fp32"]


def native_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic (AVX-512 BF16 or AMX)."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def resolve(precision: Precision) -> Literal["bf16", "fp32"]:
    """``auto`` becomes ``bf16`` where the CPU has native bf16, else ``fp32``."""
    if precision == "auto":
        return "bf16" if native_bf16() else "fp32"
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, not {precision!r}")
    return precision


@contextlib.contextmanager
def autocast(precision: Literal["bf16", "fp32"]) -> Iterator[None]:
    """The forward pass's context for a resolved precision."""
    if precision == "bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    else:
        yield
