"""The tuner's search spaces: grids and calibrations as points z of R^d, and the start grids.

* `LogSigmaGrid`. The N - 1 interior model times live in u = log σ̃. The N gaps
  u_max - u_1, ..., u_{N-2} - u_{N-1}, u_{N-1} - u_min are softmax(0, z) (floored at GAP_FLOOR/N)
  times u_max - u_min, so every z in R^{N-1} is a strictly decreasing grid inside
  (`lowest_model_time`, t_max). The last model time is free: no call is pinned at t = 0, where ᾱ ≈ 1
  and a call barely changes the image.
* `CalibrationSpace`. 2 parameters per called time (`pndm.calibration`): the network sees
  t_k + δ_k and its ε is scaled by κ_k; z = 0 is δ = 0, κ = 1.
* Start grids. The EDM (ρ = 7), log-SNR, uniform and quadratic grids (`start_grids`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pndm.calibration import LOG_SCALE_LIMIT, Calibration
from pndm.grids import edm, final_target, logsnr, lowest_model_time, time_quadratic, time_uniform
from pndm.schedule import Schedule, require_schedule

START_GRIDS: dict[str, Callable[[Schedule, int], torch.Tensor]] = {
    "edm": edm,
    "logsnr": logsnr,
    "time_uniform": time_uniform,
    "time_quadratic": time_quadratic,
}
# Each gap of the grid in log σ̃ is at least GAP_FLOOR/N of the range: distinct times for any z.
GAP_FLOOR = 1e-3
SHIFT_UNIT = 0.02  # one unit of z moves a model time by 2 % of the schedule's time range


def check_schedule(schedule: Any) -> None:
    """Raise unless ``schedule`` is a `Schedule` (NoiseSchedule or VPSchedule)."""
    require_schedule(schedule, "tuning")


def with_target(model_times: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """Model times t_0 > ... > t_{N-1} followed by the final target (unless it is t_{N-1})."""
    target = final_target(schedule)
    times = model_times.to(torch.float64)
    if float(times[-1]) <= target:
        return times
    return torch.cat([times, times.new_tensor([target])])


def start_grid(name: str, schedule: Schedule, steps: int) -> torch.Tensor:
    """``name``'s grid with ``steps`` model times down to `lowest_model_time`, then the target."""
    low = lowest_model_time(schedule)
    if name in ("edm", "logsnr") and low != float(schedule.t_min):
        times = START_GRIDS[name](schedule, steps, sigma_min=float(schedule.sigma_tilde(low)))
    else:
        times = START_GRIDS[name](schedule, steps)
    return with_target(times[:-1], schedule)


def start_grids(schedule: Schedule, steps: int) -> dict[str, torch.Tensor]:
    """The START_GRIDS this schedule supports whose model times stay at or above
    `lowest_model_time`."""
    grids = {}
    for name in START_GRIDS:
        try:
            grid = start_grid(name, schedule, steps)
        except ValueError:  # e.g. time_uniform on a schedule whose t_min is negative
            continue
        if float(grid[steps - 1]) >= lowest_model_time(schedule):
            grids[name] = grid
    return grids


@dataclass(frozen=True)
class LogSigmaGrid:
    """z in R^{N-1} <-> the N model times of a grid from t_max, gaps softmax(0, z) in log σ̃."""

    schedule: Schedule
    steps: int

    @property
    def u_range(self) -> tuple[float, float]:
        s = self.schedule
        return tuple(math.log(float(s.sigma_tilde(t))) for t in (s.t_max, lowest_model_time(s)))

    def times(self, z: np.ndarray) -> torch.Tensor:
        """The full grid (model times, then the target) of the parameters z."""
        u_max, u_min = self.u_range
        logits = np.concatenate([[0.0], np.asarray(z, dtype=np.float64)])
        w = np.exp(logits - logits.max())
        w = (1 - GAP_FLOOR) * w / w.sum() + GAP_FLOOR / self.steps  # no gap below the floor
        u = u_max - (u_max - u_min) * np.cumsum(w)[: self.steps - 1]
        sigma = torch.from_numpy(np.exp(u))
        s = self.schedule
        bounds = (s.sigma_tilde(lowest_model_time(s)), s.sigma_tilde(s.t_max))
        inner = s.timestep_from_sigma(sigma.clamp(*bounds))
        model = torch.cat([torch.tensor([float(s.t_max)], dtype=torch.float64), inner.double()])
        return with_target(model, s)

    def params(self, timesteps: torch.Tensor) -> np.ndarray:
        """The z of a grid whose model times lie in (t_min, t_max] (inverse of `times`)."""
        s = self.schedule
        model = timesteps[: self.steps].to(torch.float64)
        u = torch.log(s.sigma_tilde(model)).numpy()
        u_max, u_min = self.u_range
        w = -np.diff(np.concatenate([u, [u_min]])) / (u_max - u_min)
        w = np.maximum(w - GAP_FLOOR / self.steps, 1e-9) / (1 - GAP_FLOOR)
        return np.log(w[1:] / w[0])


@dataclass(frozen=True)
class CalibrationSpace:
    """z in R^{2K} <-> a `Calibration` of K called times: δ_k = SHIFT_UNIT (t_max - lowest) z_k,
    the shifted time kept inside [`lowest_model_time`, t_max], and κ_k = exp(z_{K+k})."""

    schedule: Schedule
    times: tuple[float, ...]

    def calibration(self, z: np.ndarray) -> Calibration:
        k, t = len(self.times), np.asarray(self.times, dtype=np.float64)
        lo, hi = lowest_model_time(self.schedule), float(self.schedule.t_max)
        moved = t + SHIFT_UNIT * (hi - lo) * np.asarray(z[:k], dtype=np.float64)
        shifted = np.clip(moved, np.minimum(t, lo), np.maximum(t, hi))
        scales = np.exp(np.clip(z[k:], -LOG_SCALE_LIMIT, LOG_SCALE_LIMIT))
        return Calibration(self.times, tuple(shifted - t), tuple(scales))
