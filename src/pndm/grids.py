"""Timestep grids: each returns the descending float64 grid t_0 > ... > t_N, end point included.

The model is called at t_0 .. t_{N-1}; t_N is the target. Integer grids of trained checkpoints end
at ``FINAL_TIME`` (-1), where `NoiseSchedule.alpha_bar` gives the final ᾱ (diffusers'
``final_alpha_cumprod``, or ᾱ_0 under the original code's index offset). Grids in σ̃ (EDM, log-SNR)
work on any schedule with ``sigma_tilde`` and ``timestep_from_sigma``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

FINAL_TIME = -1.0


def _check_steps(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int | float) or int(n) != n or n < 1:
        raise ValueError(f"the number of steps must be an integer >= 1, got {n!r}")
    return int(n)


def _num_train_timesteps(schedule: Any, n: int) -> int:
    T = getattr(schedule, "num_train_timesteps", None)
    if T is None:
        raise ValueError(
            "integer grids need a discrete schedule (NoiseSchedule); for a continuous schedule use "
            "one of: edm, logsnr, time_uniform, time_quadratic"
        )
    if n > T:
        raise ValueError(f"{n} steps is more than num_train_timesteps={T}; choose n <= {T}")
    return T


def _integer_grid(ascending: torch.Tensor) -> torch.Tensor:
    times = ascending.to(torch.float64).flip(0)
    return torch.cat([times, times.new_tensor([FINAL_TIME])])


def leading(schedule: Any, n: int, steps_offset: int = 0) -> torch.Tensor:
    """diffusers 'leading': t_i = i*floor(T/n) + steps_offset, i = 0..n-1."""
    n = _check_steps(n)
    T = _num_train_timesteps(schedule, n)
    if isinstance(steps_offset, bool) or int(steps_offset) != steps_offset:
        raise ValueError(f"steps_offset must be an integer, got {steps_offset!r}")
    top = (n - 1) * (T // n) + int(steps_offset)
    if int(steps_offset) < 0 or top > T - 1:
        raise ValueError(
            f"steps_offset={steps_offset} puts the grid outside 0..{T - 1} (largest time {top})"
        )
    return _integer_grid(torch.arange(n) * (T // n) + int(steps_offset))


# trailing and linspace copy diffusers' numpy expressions: a mathematically equal torch formula
# rounds differently where i*T/n lands within an ulp of k + 1/2 (trailing n = 48, linspace n = 27).
def trailing(schedule: Any, n: int) -> torch.Tensor:
    """diffusers 'trailing': t_k = round(T - k*T/n) - 1, k = 0..n-1."""
    n = _check_steps(n)
    T = _num_train_timesteps(schedule, n)
    return _integer_grid(torch.from_numpy(np.round(np.arange(T, 0, -T / n))[::-1] - 1))


def linspace(schedule: Any, n: int) -> torch.Tensor:
    """diffusers 'linspace': t_i = round(i*(T-1)/(n-1)), i = 0..n-1."""
    n = _check_steps(n)
    T = _num_train_timesteps(schedule, n)
    return _integer_grid(torch.from_numpy(np.linspace(0, T - 1, n).round()))


def uniform(schedule: Any, n: int) -> torch.Tensor:
    """The original PNDM/DDIM code's uniform skip: t_i = i*skip < T, skip = floor(T/n).

    Gives ceil(T/skip) steps, which can exceed n (n = 30 gives 31 steps for T = 1000).
    """
    n = _check_steps(n)
    T = _num_train_timesteps(schedule, n)
    return _integer_grid(torch.arange(0, T, T // n))


def ddim_quadratic(schedule: Any, n: int) -> torch.Tensor:
    """DDIM's quadratic grid t_i = floor((i*sqrt(0.8T)/(n-1))^2), i = 0..n-1.

    Computed with ermongroup/ddim's own numpy expression (its float rounding decides the floor at
    exact integers, e.g. n = 100 ends at 800, not 799). DDIM's floor repeats times at the low end
    (n = 50: 0, 0, 1, 2, 5); a repeat would be a zero-length step that still costs a model call,
    so each repeat moves up to the next free integer.
    """
    n = _check_steps(n)
    T = _num_train_timesteps(schedule, n)
    times = [float(int(v)) for v in np.linspace(0, np.sqrt(T * 0.8), n) ** 2]
    for i in range(1, n):
        times[i] = max(times[i], times[i - 1] + 1)
    # times[-1] <= max(0.8T, n - 1) <= T - 1, as n <= T was checked
    return _integer_grid(torch.tensor(times))


def _sigma_range(schedule: Any, sigma_min: float | None, sigma_max: float | None) -> tuple:
    lo = float(schedule.sigma_tilde(schedule.t_min)) if sigma_min is None else float(sigma_min)
    hi = float(schedule.sigma_tilde(schedule.t_max)) if sigma_max is None else float(sigma_max)
    if not 0 < lo < hi:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={lo}, sigma_max={hi}")
    return lo, hi


def _sigma_grid(
    schedule: Any, sigmas: torch.Tensor, sigma_min: Any, sigma_max: Any
) -> torch.Tensor:
    """Map σ̃ values to times; default end points are the schedule's own, without round-off."""
    times = schedule.timestep_from_sigma(sigmas).to(torch.float64)
    if sigma_max is None:
        times[0] = float(schedule.t_max)
    if sigma_min is None:
        times[-1] = float(schedule.t_min)
    return times


def edm(
    schedule: Any,
    n: int,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    rho: float = 7.0,
) -> torch.Tensor:
    """Karras et al. (EDM) grid in σ̃: (σ_max^(1/ρ) + i/n (σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ, i ≤ n."""
    n = _check_steps(n)
    lo, hi = _sigma_range(schedule, sigma_min, sigma_max)
    if rho <= 0:
        raise ValueError(f"rho must be positive, got {rho}")
    ramp = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    sigmas = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    return _sigma_grid(schedule, sigmas, sigma_min, sigma_max)


def logsnr(
    schedule: Any, n: int, sigma_min: float | None = None, sigma_max: float | None = None
) -> torch.Tensor:
    """Uniform in log-SNR: σ̃_i = σ_max (σ_min/σ_max)^(i/n), i = 0..n."""
    n = _check_steps(n)
    lo, hi = _sigma_range(schedule, sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    return _sigma_grid(schedule, hi * (lo / hi) ** ramp, sigma_min, sigma_max)


def time_uniform(schedule: Any, n: int, rho: float = 1.0) -> torch.Tensor:
    """Uniform in t^(1/ρ) between t_max and t_min (DEIS 'ts_order'); ρ = 1 is uniform in t."""
    n = _check_steps(n)
    if rho <= 0:
        raise ValueError(f"rho must be positive, got {rho}")
    hi, lo = float(schedule.t_max), float(schedule.t_min)
    if lo < 0:
        raise ValueError("time_uniform needs t_min >= 0")
    ramp = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    return (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho


def time_quadratic(schedule: Any, n: int) -> torch.Tensor:
    """Quadratic in t, dense at t_min: t_i = t_min + (t_max - t_min)(1 - i/n)^2, i = 0..n."""
    n = _check_steps(n)
    hi, lo = float(schedule.t_max), float(schedule.t_min)
    ramp = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    return lo + (hi - lo) * (1 - ramp) ** 2


GRIDS: dict[str, Callable[..., torch.Tensor]] = {
    "leading": leading,
    "trailing": trailing,
    "linspace": linspace,
    "uniform": uniform,
    "ddim_quadratic": ddim_quadratic,
    "edm": edm,
    "logsnr": logsnr,
    "time_uniform": time_uniform,
    "time_quadratic": time_quadratic,
}


def make_grid(name: str, schedule: Any, n: int, **options: Any) -> torch.Tensor:
    """The grid called ``name`` with n steps on ``schedule``; lists the valid names on a typo."""
    if name not in GRIDS:
        raise ValueError(f"unknown timestep spacing {name!r}; choose one of {', '.join(GRIDS)}")
    return GRIDS[name](schedule, n, **options)
