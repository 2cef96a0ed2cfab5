"""Equal-NFE bookkeeping: counted and capped model calls, the step count whose NFE is exactly a
target, and the RMS error over samples."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from pndm.wrapper import EpsFn


class CountingEps:
    """eps_fn that counts its calls (one call = one batched network evaluation)."""

    def __init__(self, eps_fn: Any) -> None:
        self.eps_fn, self.calls = eps_fn, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.eps_fn(x, t)


def rms_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """sqrt(mean_b |x_b − ref_b|²): RMS over trajectories of the Euclidean error."""
    return float((x - ref).square().sum(-1).mean().sqrt())


class OverBudget(Exception):
    """A capped run tried more model calls than allowed."""


class CappedEps(CountingEps):
    """CountingEps that raises OverBudget instead of making call number cap + 1."""

    def __init__(self, eps_fn: EpsFn, cap: int) -> None:
        super().__init__(eps_fn)
        self.cap = cap

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.calls >= self.cap:
            raise OverBudget
        return super().__call__(x, t)


def steps_for_nfe(target: int, count: Callable[[int], int | None]) -> int | None:
    """The smallest step count n with count(n) == target (NFE grows with n); None if none does."""
    for n in range(1, target + 1):
        calls = count(n)
        if calls == target:
            return n
        if calls is not None and calls > target:
            return None
    return None
