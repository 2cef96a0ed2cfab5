"""The PNDM paper's methods: S-PNDM, F-PNDM and FON (Liu et al., ICLR 2022).

S-PNDM and F-PNDM are the transfer φ (paper eq. 9) with a pseudo-numerical noise estimate ε'.
FON is the paper's "fourth-order numerical method" baseline: classical RK4 -> AB4 on the ODE in t
without φ. ``fon`` is the textbook method; ``fon-orig`` keeps the original code's quirks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pndm.samplers._checks import sampler
from pndm.samplers._common import (
    EpsFn,
    Grid,
    alpha_bar_at,
    check_noisy,
    evaluate,
    pseudo_improved_euler,
    pseudo_multistep,
    vp_drift_coefficients,
)
from pndm.samplers.adams import equal_step_table
from pndm.samplers.core import AB_WEIGHTS, linear_combination, transfer


def _four_stage_nfe(n: int, **_) -> int:
    return n + 9 if n >= 3 else 4 * n


@sampler("s-pndm", nfe=lambda n, **_: n + 1)
def s_pndm(eps_fn: EpsFn, x: torch.Tensor, timesteps: torch.Tensor, schedule) -> torch.Tensor:
    """S-PNDM: pseudo improved Euler, then pseudo AB2 (paper eq. 9 transfer). NFE = N + 1.

    Step 0: ε' = (e_0 + ε(φ(x_0, e_0), t_1))/2 (order 2, 2 NFE; only e_0 is kept).
    Steps >= 1: ε' = (3e_n - e_{n-1})/2 (pseudo linear multistep, order 2).
    """
    grid = Grid.build(x, timesteps, schedule)
    weights = equal_step_table([2] * grid.steps)
    return pseudo_multistep(eps_fn, x, grid, weights, pseudo_improved_euler, warmup_steps=1)


def pseudo_rk4(
    eps_fn: EpsFn, x: torch.Tensor, e1: torch.Tensor, grid: Grid, n: int
) -> torch.Tensor:
    """Pseudo Runge-Kutta (paper Algorithm 2): every stage is φ from the base x_n. 3 extra NFE."""
    t_mid = grid.mid_times[n]  # type: ignore[index]
    e2 = evaluate(eps_fn, grid.transfer_mid(x, e1, n), t_mid)
    e3 = evaluate(eps_fn, grid.transfer_mid(x, e2, n), t_mid)
    e4 = evaluate(eps_fn, grid.transfer(x, e3, n), grid.times[n + 1])
    return (e1 + 2 * e2 + 2 * e3 + e4) / 6


@sampler("f-pndm", nfe=_four_stage_nfe)
def f_pndm(eps_fn: EpsFn, x: torch.Tensor, timesteps: torch.Tensor, schedule) -> torch.Tensor:
    """F-PNDM (paper Algorithm 2): pseudo RK4 for 3 steps, then pseudo AB4. NFE = N + 9.

    Steps 0-2: pseudo RK4 with stages at t_mid = (t_n + t_{n+1})/2 (4 NFE; e_n is kept).
    Steps >= 3: ε' = (55e_n - 59e_{n-1} + 37e_{n-2} - 9e_{n-3})/24 (pseudo linear multistep).
    For N <= 3, NFE = 4N and the last stage calls the model at the target t_N.
    """
    grid = Grid.build(x, timesteps, schedule, midpoints=True)
    weights = equal_step_table([4] * grid.steps)
    return pseudo_multistep(eps_fn, x, grid, weights, pseudo_rk4, warmup_steps=3)


StageSlope = Callable[[int, int, torch.Tensor, torch.Tensor], torch.Tensor]


def rk4_then_ab4(slope: StageSlope, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """x_{n+1} = x_n + h_n D_n: classical RK4 for steps 0-2, then AB4 on the stage-1 slopes.

    ``slope(n, stage, x_n, x_stage)``; stage 0 is at t_n, stages 1-2 at t_mid, stage 3 at t_{n+1}.
    """
    history: list[torch.Tensor] = []
    for n in range(h.numel()):
        k1 = slope(n, 0, x, x)
        history = [k1, *history][:4]
        if n < 3:  # classical RK4 (order 4, 4 NFE)
            k2 = slope(n, 1, x, x + h[n] / 2 * k1)
            k3 = slope(n, 2, x, x + h[n] / 2 * k2)
            k4 = slope(n, 3, x, x + h[n] * k3)
            d = (k1 + 2 * k2 + 2 * k3 + k4) / 6
        else:  # equal-step AB4 (order 4 on uniform grids)
            d = linear_combination(AB_WEIGHTS[3], history)
        x = x + h[n] * d
    return x


@sampler("fon", nfe=_four_stage_nfe)
def fon(eps_fn: EpsFn, x: torch.Tensor, timesteps: torch.Tensor, schedule) -> torch.Tensor:
    """FON, textbook: classical RK4 (3 steps) then AB4 on dx/dt = ᾱ'/(2ᾱ)[x - ε/sqrt(1-ᾱ)].

    NFE = N + 9 (4N for N <= 3; then the last stage calls the model at t_N). No φ: order 4 on
    grids uniform in t, 2 on others. ᾱ' comes from autograd of the schedule (its
    ``log_alpha_bar`` when it has one). Needs ᾱ < 1 wherever the model is called.
    """
    grid = Grid.build(x, timesteps, schedule, midpoints=True)
    check_noisy("fon", grid.alpha_bar if grid.steps <= 3 else grid.alpha_bar[:-1])
    times, alpha_bar = grid.stages()
    c_x, c_e = (c.to(x.dtype) for c in vp_drift_coefficients(schedule, times, alpha_bar))

    def slope(n: int, stage: int, x_base: torch.Tensor, x_stage: torch.Tensor) -> torch.Tensor:
        e = evaluate(eps_fn, x_stage, times[n, stage])
        return c_x[n, stage] * x_stage + c_e[n, stage] * e

    return rk4_then_ab4(slope, x, (grid.times[1:] - grid.times[:-1]).to(x.dtype))


@sampler("fon-orig", nfe=_four_stage_nfe)
def fon_orig(
    eps_fn: EpsFn,
    x: torch.Tensor,
    timesteps: torch.Tensor,
    schedule,
    *,
    index_size: float = 1.0,
) -> torch.Tensor:
    """FON as coded in luping-liu/PNDM (``gen_fon``). NFE = N + 9 (4N for N <= 3).

    The slope is a one-index difference Δ(ε) = φ(x_n, ε, t_n -> t_n - δ) - x_n per δ =
    ``index_size`` time units (1 for DDPM indices), and x_{n+1} = x_n + (t_n - t_{n+1}) D/δ with
    D from RK4 (3 steps) then AB4 on the Δ's. Quirks kept for parity: every stage uses the base
    x_n and t_n in Δ (only ε comes from the stage point), and Δ is a one-index forward difference,
    a slope bias O(δ) that does not vanish as N grows.
    """
    if not isinstance(index_size, int | float) or isinstance(index_size, bool) or index_size <= 0:
        raise ValueError(f"index_size must be a positive number of time units, got {index_size!r}")
    grid = Grid.build(x, timesteps, schedule, midpoints=True)
    times, a = grid.stages()
    a_back = alpha_bar_at(schedule, grid.times[:-1] - index_size)  # ᾱ(t_n - δ)

    def slope(n: int, stage: int, x_base: torch.Tensor, x_stage: torch.Tensor) -> torch.Tensor:
        e = evaluate(eps_fn, x_stage, times[n, stage])
        return (x_base - transfer(x_base, e, a[n, 0], a_back[n])) / index_size  # -Δ/δ, per unit t

    return rk4_then_ab4(slope, x, (grid.times[1:] - grid.times[:-1]).to(x.dtype))
