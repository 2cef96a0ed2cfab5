"""Timestep grids: each returns the descending float64 grid t_0 > ... > t_N, end point included.

The model is called at t_0 .. t_{N-1}; t_N is the target. Integer grids of trained checkpoints end
at ``FINAL_TIME`` (-1), where `NoiseSchedule.alpha_bar` gives the final ᾱ (diffusers'
``final_alpha_cumprod``, or ᾱ_0 under the original code's index offset). Grids in σ̃ (EDM, log-SNR)
work on any schedule with ``sigma_tilde`` and ``timestep_from_sigma``.

Three rules live here and nowhere else: `check_num_steps` (what a valid step count is: the one
bound of steps, model calls and grid length, `pndm.checks.MAX_STEPS`), `as_grid` with
`final_target` and `lowest_model_time` (what a grid may hold), and `scheduler_grid` with
`default_method` (a diffusers scheduler config -> its grid and its method).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from pndm.checks import MAX_STEPS, check_choice, check_count, check_positive

FINAL_TIME = -1.0
# The timestep_spacing values of a diffusers scheduler config.
SCHEDULER_SPACINGS = ("linspace", "leading", "trailing")


def check_num_steps(
    n: Any, num_train_timesteps: int | None = None, name: str = "num_inference_steps"
) -> int:
    """n as an int, after checking 1 <= n <= MAX_STEPS (and <= num_train_timesteps when given):
    the one bound of steps, model calls (``name="nfe"``) and grid lengths (`check_grid_steps`).

    Integers only (Python or numpy; not bool, not float), as diffusers' ``set_timesteps``.
    """
    n = check_count(name, n)
    T = num_train_timesteps
    limit = MAX_STEPS if T is None else min(T, MAX_STEPS)
    if n > limit:
        why = f"num_train_timesteps={T}" if limit == T else f"pndm's limit MAX_STEPS={MAX_STEPS}"
        raise ValueError(f"{name} must be an integer in [1, {limit}], got {n}: more than {why}")
    return int(n)


def check_grid_steps(
    steps: int, num_train_timesteps: int | None = None, name: str = "timesteps"
) -> None:
    """A grid of ``steps`` steps (steps + 1 entries, target included) within `check_num_steps`."""
    check_num_steps(steps, num_train_timesteps, name=f"the steps of {name}")


def as_grid(timesteps: Any, name: str = "timesteps") -> torch.Tensor:
    """``timesteps`` as a 1-D float64 tensor (a tensor keeps its device), refusing anything but
    real numbers: bools, strings, complex values and nested lists are errors, never converted."""
    if isinstance(timesteps, torch.Tensor):
        real = timesteps.dtype != torch.bool and not timesteps.is_complex()
        t = timesteps.detach() if real else None
    else:
        t = _real_tensor(timesteps)
    if t is None:
        raise ValueError(f"{name} must hold real numbers only, got {_shown(timesteps)}")
    if t.ndim != 1:
        raise ValueError(f"{name} must be 1-D (t_0 > ... > t_N), got shape {tuple(t.shape)}")
    return t.to(torch.float64)


def _real_tensor(values: Any) -> torch.Tensor | None:
    """``values`` (not a tensor) as a float64 tensor; None unless they are real numbers."""
    try:
        array = np.asarray(values)
    except ValueError:  # ragged nesting
        return None
    if array.dtype.kind not in "iuf":  # bool, complex, str, object
        return None
    if array.ndim == 1 and any(isinstance(v, bool | np.bool_) for v in values):  # [9, True]
        return None
    return torch.from_numpy(array.astype(np.float64))


def _shown(values: Any) -> str:
    if isinstance(values, torch.Tensor):
        return f"a tensor of dtype {values.dtype}"
    text = repr(values)
    return text if len(text) <= 80 else text[:77] + "..."


def final_target(schedule: Any) -> float:
    """A grid's last entry on ``schedule``: FINAL_TIME (-1) on a discrete schedule, else t_min."""
    return FINAL_TIME if schedule.discrete else float(schedule.t_min)


def lowest_model_time(schedule: Any) -> float:
    """The lowest time a model is meant to be called at: t_min, but not below 0 on a discrete
    schedule (its trained times are 0 .. T-1; a converted checkpoint with alpha_index_offset = 1
    has t_min = -1, the pipeline's target)."""
    t_min = float(schedule.t_min)
    return max(t_min, 0.0) if schedule.discrete else t_min


def _integer_steps(schedule: Any, n: int) -> tuple[int, int]:
    """(n, T) for an integer grid of n steps on a discrete schedule of T training steps."""
    if not getattr(schedule, "discrete", False):
        raise ValueError(
            "integer grids need a discrete schedule (NoiseSchedule); for a continuous schedule use "
            "one of: edm, logsnr, time_uniform, time_quadratic"
        )
    T = schedule.num_train_timesteps
    return check_num_steps(n, T), T


def _integer_grid(ascending: torch.Tensor) -> torch.Tensor:
    times = ascending.to(torch.float64).flip(0)
    return torch.cat([times, times.new_tensor([FINAL_TIME])])


def leading(schedule: Any, n: int, steps_offset: int = 0) -> torch.Tensor:
    """diffusers 'leading': t_i = i*floor(T/n) + steps_offset, i = 0..n-1."""
    n, T = _integer_steps(schedule, n)
    steps_offset = check_count("steps_offset", steps_offset, minimum=0)
    top = (n - 1) * (T // n) + steps_offset
    if top > T - 1:
        raise ValueError(
            f"steps_offset={steps_offset} puts the grid outside 0..{T - 1} (largest time {top})"
        )
    return _integer_grid(torch.arange(n) * (T // n) + steps_offset)


# trailing and linspace copy diffusers' numpy expressions: a mathematically equal torch formula
# rounds differently where i*T/n lands within an ulp of k + 1/2 (trailing n = 48, linspace n = 27).
def trailing(schedule: Any, n: int) -> torch.Tensor:
    """diffusers 'trailing': t_k = round(T - k*T/n) - 1, k = 0..n-1."""
    n, T = _integer_steps(schedule, n)
    return _integer_grid(torch.from_numpy(np.round(np.arange(T, 0, -T / n))[::-1] - 1))


def linspace(schedule: Any, n: int) -> torch.Tensor:
    """diffusers 'linspace': t_i = round(i*(T-1)/(n-1)), i = 0..n-1."""
    n, T = _integer_steps(schedule, n)
    return _integer_grid(torch.from_numpy(np.linspace(0, T - 1, n).round()))


def uniform(schedule: Any, n: int) -> torch.Tensor:
    """The original PNDM/DDIM code's uniform skip: t_i = i*skip < T, skip = floor(T/n).

    Gives ceil(T/skip) steps, which can exceed n (n = 30 gives 31 steps for T = 1000).
    """
    n, T = _integer_steps(schedule, n)
    return _integer_grid(torch.arange(0, T, T // n))


def ddim_quadratic(schedule: Any, n: int) -> torch.Tensor:
    """DDIM's quadratic grid t_i = floor((i*sqrt(0.8T)/(n-1))^2), i = 0..n-1.

    Computed with ermongroup/ddim's own numpy expression (its float rounding decides the floor at
    exact integers, e.g. n = 100 ends at 800, not 799). DDIM's floor repeats times at the low end
    (n = 50: 0, 0, 1, 2, 5); a repeat would be a zero-length step that still costs a model call,
    so each repeat moves up to the next free integer.
    """
    n, T = _integer_steps(schedule, n)
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
    n = check_num_steps(n)
    lo, hi = _sigma_range(schedule, sigma_min, sigma_max)
    rho = check_positive("rho", rho)
    ramp = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    sigmas = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    return _sigma_grid(schedule, sigmas, sigma_min, sigma_max)


def logsnr(
    schedule: Any, n: int, sigma_min: float | None = None, sigma_max: float | None = None
) -> torch.Tensor:
    """Uniform in log-SNR: σ̃_i = σ_max (σ_min/σ_max)^(i/n), i = 0..n."""
    n = check_num_steps(n)
    lo, hi = _sigma_range(schedule, sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    return _sigma_grid(schedule, hi * (lo / hi) ** ramp, sigma_min, sigma_max)


def time_uniform(schedule: Any, n: int, rho: float = 1.0) -> torch.Tensor:
    """Uniform in t^(1/ρ) between t_max and t_min (DEIS 'ts_order'); ρ = 1 is uniform in t."""
    n = check_num_steps(n)
    rho = check_positive("rho", rho)
    hi, lo = float(schedule.t_max), float(schedule.t_min)
    if lo < 0:
        raise ValueError("time_uniform needs t_min >= 0")
    ramp = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    return (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho


def time_quadratic(schedule: Any, n: int) -> torch.Tensor:
    """Quadratic in t, dense at t_min: t_i = t_min + (t_max - t_min)(1 - i/n)^2, i = 0..n."""
    n = check_num_steps(n)
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
        check_choice("timestep spacing", name, tuple(GRIDS))
    return GRIDS[name](schedule, n, **options)


def default_method(config: Mapping[str, Any]) -> str:
    """The scheduler config's own method: "plms" with ``skip_prk_steps``, else "f-pndm"."""
    return "plms" if config.get("skip_prk_steps") else "f-pndm"


def scheduler_grid(
    config: Mapping[str, Any],
    schedule: Any,
    num_inference_steps: int | None = None,
    timesteps: Sequence[float] | None = None,
) -> torch.Tensor:
    """The grid t_0 > ... > t_N = FINAL_TIME of a diffusers scheduler config (float64, CPU).

    ``timesteps``, if given, are the model times t_0 > ... > t_{N-1}, in [0, T - 1] (fractional
    allowed), or the full grid ending at FINAL_TIME, as a tuned grid file holds it; otherwise
    ``num_inference_steps`` steps of the config's ``timestep_spacing`` (``steps_offset`` applies
    to "leading", as in diffusers). ``schedule`` is the config's (a NoiseSchedule).
    """
    T = config.get("num_train_timesteps", 1000)
    if schedule.num_train_timesteps != T:
        raise ValueError(
            f"trained_betas has {schedule.num_train_timesteps} entries but "
            f"num_train_timesteps={T}; they must agree"
        )
    if timesteps is not None:
        return explicit_grid(timesteps, T)
    n = check_num_steps(num_inference_steps, T)
    spacing = check_choice("timestep_spacing", config.get("timestep_spacing", "leading"),
                           SCHEDULER_SPACINGS)  # fmt: skip
    if spacing == "leading":
        return leading(schedule, n, config.get("steps_offset", 0))
    return GRIDS[spacing](schedule, n)


def explicit_grid(timesteps: Sequence[float] | torch.Tensor, T: int) -> torch.Tensor:
    """A user grid: model times strictly descending within [0, T - 1], then the final -1; at
    most `check_num_steps` steps.

    The final -1 is appended unless the grid already ends with it (a full grid, as
    `pndm.tuning` returns and a grid file stores).
    """
    times = as_grid(timesteps).to("cpu")
    if times.numel() > 1 and float(times[-1]) == FINAL_TIME:
        times = times[:-1]  # a full grid: its target is the one we append
    if times.numel():
        check_grid_steps(times.numel(), T)
    descending = bool((times[1:] < times[:-1]).all())
    finite = bool(times.isfinite().all())
    if not times.numel() or not (descending and finite) or times[-1] < 0 or times[0] > T - 1:
        raise ValueError(
            f"timesteps must be strictly decreasing values in [0, {T - 1}], optionally followed "
            f"by the final target {FINAL_TIME:g}"
        )
    return torch.cat([times, times.new_tensor([FINAL_TIME])])
