"""pndm's methods at exactly a target NFE: each grid with the step count that costs the target,
and pf (adaptive DOPRI5) with the tightest tolerance that does, by bisection."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import torch

from benchlib.measure import CappedEps, CountingEps, OverBudget, steps_for_nfe
from benchlib.problems import Problem, row
from pndm.grids import make_grid
from pndm.samplers import SAMPLERS, nfe
from pndm.schedule import NoiseSchedule

GRID_LABELS = {  # pndm.grids names -> table tags
    "trailing": "tr",
    "leading": "ld",
    "linspace": "ls",
    "uniform": "un",
    "ddim_quadratic": "dq",
    "edm": "edm",
    "logsnr": "lsnr",
    "time_uniform": "tu",
    "time_quadratic": "tq",
}
GRIDS = tuple(GRID_LABELS)
# Fixed-step methods; the adaptive ones pick their own NFE (pf is bisected below, pec-adaptive has
# benchmarks/adaptive.py).
METHODS = tuple(name for name in SAMPLERS if name not in ("pf", "pec-adaptive"))
PF_NFE_STEP = 6  # pf's NFE is 2 + 6k (DOPRI5: 6 calls per step)
PF_LOG_TOL = (-8.0, 2.0)  # bisection bracket for log10(rtol = atol)


def pndm_grid(method: str, grid: str, schedule: NoiseSchedule, target: int) -> torch.Tensor | None:
    """The `grid` with the step count that costs `method` exactly `target` calls, or None."""

    def make(n: int) -> torch.Tensor | None:
        try:
            return make_grid(grid, schedule, n)
        except ValueError:
            return None

    def count(n: int) -> int | None:
        times = make(n)
        return None if times is None else nfe(method, times.numel() - 1)

    n = steps_for_nfe(target, count)
    return None if n is None else make(n)


def run_pndm(problem: Problem, method: str, grid: str, times: torch.Tensor, target: int) -> dict:
    counter = CountingEps(problem.eps_fn)
    x = SAMPLERS[method](counter, problem.noise, times, problem.schedule)
    return row(problem, method, target, counter.calls, times.numel() - 1, {"grid": grid}, x)


def sweep_pndm(problem: Problem, nfes: tuple[int, ...], tries: Callable) -> Iterator[dict]:
    """Every method at every NFE on each grid that ``tries(method, nfe)`` lists (once per grid)."""
    for method, target in itertools.product(METHODS, nfes):
        seen: set[tuple[float, ...]] = set()
        for option in tries(method, target):
            times = pndm_grid(method, option["grid"], problem.schedule, target)
            if times is None or tuple(times.tolist()) in seen:
                continue
            seen.add(tuple(times.tolist()))
            yield run_pndm(problem, method, option["grid"], times, target)


def pf_try(problem: Problem, target: int, log_tol: float) -> tuple[int, dict[str, Any] | None]:
    """pf at rtol = atol = 10**log_tol, stopped past `target` calls: (calls, the row if exact)."""
    ends = make_grid("time_uniform", problem.schedule, 1)  # [999, 0]: pf picks its own steps
    counter, tol, stats = CappedEps(problem.eps_fn, target), 10**log_tol, {}
    try:
        x = SAMPLERS["pf"](
            counter, problem.noise, ends, problem.schedule, rtol=tol, atol=tol, stats=stats
        )
    except (OverBudget, RuntimeError):  # too many calls, or a step-size underflow
        return target + 1, None
    if counter.calls != target:
        return counter.calls, None
    return target, row(problem, "pf", target, target, stats["steps"], {"rtol": tol}, x)


def pf_row(problem: Problem, target: int, iterations: int = 4) -> dict[str, Any] | None:
    """pf at exactly `target` calls, with the tightest tolerance found by bisection (in log10)
    between one that costs more calls and one that costs at most `target`."""
    if (target - 2) % PF_NFE_STEP:
        return None
    tight, loose = PF_LOG_TOL
    calls, found = pf_try(problem, target, loose)
    if calls > target:
        return None  # even the loosest tolerance costs more
    for _ in range(iterations):
        middle = (tight + loose) / 2
        calls, hit = pf_try(problem, target, middle)
        found = hit or found  # a later hit has a tighter tolerance
        tight, loose = (middle, loose) if calls > target else (tight, middle)
    return found
