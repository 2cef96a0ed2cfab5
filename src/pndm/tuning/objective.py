"""What the tuner minimises: the RMS distance of a method's end points from a teacher's.

`teacher` gives the high-accuracy end point of each tuning noise (the data-space
predictor-corrector pec-data of order 3 on a fine log-SNR grid); `Objective` scores a
(method, grid, options, calibration) by `rms` against it and counts the model calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from pndm.calibration import Calibration
from pndm.samplers import SAMPLERS
from pndm.schedule import Schedule
from pndm.tuning.defaults import TEACHER_STEPS
from pndm.tuning.spaces import check_schedule, start_grid
from pndm.wrapper import EpsFn

Progress = Callable[[int], None]


def rms(x: torch.Tensor, reference: torch.Tensor) -> float:
    """RMS over every sample and entry of x - reference (inf when x is not finite)."""
    d = (x.to(torch.float64) - reference.to(torch.float64)).pow(2).mean()
    return float(d.sqrt()) if bool(torch.isfinite(d)) else math.inf


def teacher(
    eps_fn: EpsFn, schedule: Schedule, noise: torch.Tensor, steps: int = TEACHER_STEPS
) -> torch.Tensor:
    """The high-accuracy end point of each noise: pec-data (order 3, global order 4) on the log-SNR
    grid, ``steps`` model calls. On a single Gaussian 200 steps are within 1e-7 of the exact flow
    (tests/tuning/test_tuning.py); on the shipped model, see benchmarks/results/tuned_digits.json.
    """
    check_schedule(schedule)
    grid = start_grid("logsnr", schedule, steps)
    return SAMPLERS["pec-data"](eps_fn, noise, grid, schedule, order=3)


class Objective:
    """The error of ``method`` on a grid against the reference, counting the model calls; a
    (method, grid, options, calibration) already scored is not run again (the screen's start
    grids are `tune_grid`'s starts, and Nelder-Mead's first vertex is its start)."""

    def __init__(
        self,
        eps_fn: EpsFn,
        schedule: Schedule,
        noise: torch.Tensor,
        reference: torch.Tensor,
        progress: Progress | None,
    ) -> None:
        if progress is not None and not callable(progress):
            raise ValueError(f"progress must be callable as progress(k) or None, got {progress!r}")
        self.schedule, self.noise, self.reference = schedule, noise, reference
        self.calls = 0
        self._eps_fn, self._progress = eps_fn, progress
        self._scored: dict[tuple[Any, ...], float] = {}

    def eps_fn(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self._progress is not None:
            self._progress(1)
        return self._eps_fn(x, t)

    def __call__(
        self,
        method: str,
        timesteps: torch.Tensor,
        options: dict[str, Any],
        calibration: Calibration | None = None,
    ) -> float:
        key = (method, tuple(timesteps.tolist()), tuple(sorted(options.items())), calibration)
        if key not in self._scored:
            self._scored[key] = self._score(method, timesteps, options, calibration)
        return self._scored[key]

    def _score(
        self,
        method: str,
        timesteps: torch.Tensor,
        options: dict[str, Any],
        calibration: Calibration | None,
    ) -> float:
        eps_fn = self.eps_fn if calibration is None else calibration.apply(self.eps_fn)
        try:
            x = SAMPLERS[method](eps_fn, self.noise, timesteps, self.schedule, **options)
        except ValueError:  # a grid the method refuses (e.g. a repeated time after rounding)
            return math.inf
        return rms(x, self.reference)
