"""The PNDM paper's methods: S-PNDM, F-PNDM and FON (Liu et al., ICLR 2022).

S-PNDM and F-PNDM are the transfer φ (paper eq. 9) with a pseudo-numerical noise estimate ε'.
FON is the paper's "fourth-order numerical method" baseline: classical RK4 -> AB4 on the ODE in t
without φ. ``fon`` is the textbook method; ``fon-orig`` keeps the original code's quirks.
"""

from __future__ import annotations

import torch

from pndm.samplers import core
from pndm.samplers.calls import Run
from pndm.samplers.core import Multistep, transfer
from pndm.samplers.drift import check_noisy, vp_drift_coefficients
from pndm.samplers.loops import classical_multistep, multistep
from pndm.samplers.method import Method
from pndm.samplers.options import CLIP_OPTIONS, POSITIVE, clip_bound
from pndm.samplers.steps import Grid, alpha_bar_at
from pndm.schedule import SupportsAlphaBar


def _four_stage_nfe(n: int, **_: object) -> int:
    return n + 9 if n >= 3 else 4 * n


def _s_pndm(
    like: torch.Tensor,
    timesteps: torch.Tensor,
    schedule: SupportsAlphaBar,
    warmup: bool = True,
    *,
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
) -> Run:
    """S-PNDM: pseudo improved Euler, then pseudo AB2 (paper eq. 9 transfer). NFE = N + 1.

    Step 0: ε' = (e_0 + ε(φ(x_0, e_0), t_1))/2 (order 2, 2 NFE; only e_0 is kept).
    Steps >= 1: ε' = (3e_n - e_{n-1})/2 (pseudo linear multistep, order 2).
    Options: ``clip_sample``/``clip_sample_range``: every φ clips x̂_0, as DDIM's (see ``ddim``;
    NFE unchanged). (``warmup=False``: a run started mid-schedule, AB1 first.)
    """
    grid = Grid.build(like, timesteps, schedule, clip=clip_bound(clip_sample, clip_sample_range))
    return multistep(core.S_PNDM if warmup else core.S_PNDM.without_warmup(), grid, like)


def _f_pndm(
    like: torch.Tensor,
    timesteps: torch.Tensor,
    schedule: SupportsAlphaBar,
    warmup: bool = True,
    *,
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
) -> Run:
    """F-PNDM (paper Algorithm 2): pseudo RK4 for 3 steps, then pseudo AB4. NFE = N + 9.

    Steps 0-2: pseudo RK4 (eq. 13) with stages at t_mid = (t_n + t_{n+1})/2 (4 NFE; e_n is kept).
    Steps >= 3: ε' = (55e_n - 59e_{n-1} + 37e_{n-2} - 9e_{n-3})/24 (pseudo AB4, eq. 12).
    For N <= 3, NFE = 4N and the last stage calls the model at the target t_N.
    Options: ``clip_sample``/``clip_sample_range``: every φ, the RK stages' too, clips x̂_0, as
    DDIM's (see ``ddim``; NFE unchanged). (``warmup=False``: a run started mid-schedule, pseudo
    AB1 first, no Runge-Kutta.)
    """
    limit = clip_bound(clip_sample, clip_sample_range)
    grid = Grid.build(like, timesteps, schedule, midpoints=True, clip=limit)
    return multistep(core.F_PNDM if warmup else core.F_PNDM.without_warmup(), grid, like)


def _classical(
    like: torch.Tensor, timesteps: torch.Tensor, schedule: SupportsAlphaBar, warmup: bool
) -> tuple[Grid, Multistep, torch.Tensor, torch.Tensor]:
    """FON's grid, scheme (F-PNDM's, classical: RK4 for 3 steps then AB4; without the RK4
    mid-schedule), the (N, stages) times and ᾱ of every stage, and the steps h_n = t_{n+1} - t_n."""
    grid = Grid.build(like, timesteps, schedule, midpoints=True)
    method = core.F_PNDM if warmup else core.F_PNDM.without_warmup()
    times, alpha_bar = grid.stages(method.warmup)
    return grid, method, times, alpha_bar


def _fon(
    like: torch.Tensor, timesteps: torch.Tensor, schedule: SupportsAlphaBar, warmup: bool = True
) -> Run:
    """FON, textbook: classical RK4 (3 steps) then AB4 on dx/dt = ᾱ'/(2ᾱ)[x - ε/sqrt(1-ᾱ)].

    NFE = N + 9 (4N for N <= 3; then the last stage calls the model at t_N). No φ: order 4 on
    grids uniform in t, 2 on others. ᾱ' comes from autograd of the schedule (its
    ``log_alpha_bar`` when it has one). Needs ᾱ < 1 wherever the model is called.
    (``warmup=False``: a run started mid-schedule, AB1 (Euler) first.)
    """
    grid, method, times, alpha_bar = _classical(like, timesteps, schedule, warmup)
    at_target = warmup and grid.steps <= 3  # the last RK4 stage calls the model at t_N
    check_noisy("fon", grid.alpha_bar if at_target else grid.alpha_bar[:-1])
    c_x, c_e = (c.to(like.dtype) for c in vp_drift_coefficients(schedule, times, alpha_bar))

    def slope(n: int, stage: int, x_base: torch.Tensor, x_stage: torch.Tensor, e: torch.Tensor):
        return c_x[n, stage] * x_stage + c_e[n, stage] * e

    h = (grid.times[1:] - grid.times[:-1]).to(like.dtype)
    return classical_multistep(method, slope, times, h)


def _fon_orig(
    like: torch.Tensor,
    timesteps: torch.Tensor,
    schedule: SupportsAlphaBar,
    warmup: bool = True,
    *,
    index_size: float = 1.0,
) -> Run:
    """FON as coded in luping-liu/PNDM (``gen_fon``). NFE = N + 9 (4N for N <= 3).

    The slope is a one-index difference Δ(ε) = φ(x_n, ε, t_n -> t_n - δ) - x_n per δ =
    ``index_size`` time units (1 for DDPM indices), and x_{n+1} = x_n + (t_n - t_{n+1}) D/δ with
    D from RK4 (3 steps) then AB4 on the Δ's. Quirks kept for parity: every stage uses the base
    x_n and t_n in Δ (only ε comes from the stage point), and Δ is a one-index forward difference,
    a slope bias O(δ) that does not vanish as N grows. (``warmup=False``: mid-schedule, AB1 first.)
    """
    grid, method, times, a = _classical(like, timesteps, schedule, warmup)
    a_back = alpha_bar_at(schedule, grid.times[:-1] - index_size)  # ᾱ(t_n - δ)

    def slope(n: int, stage: int, x_base: torch.Tensor, x_stage: torch.Tensor, e: torch.Tensor):
        return (x_base - transfer(x_base, e, a[n, 0], a_back[n])) / index_size  # -Δ/δ, per unit t

    h = (grid.times[1:] - grid.times[:-1]).to(like.dtype)
    return classical_multistep(method, slope, times, h)


NO_WARMUP = {"warmup": False}  # mid-schedule starts: the Adams part alone (Method.plan)
s_pndm = Method(
    "s-pndm", _s_pndm, calls=lambda n, **_: n + 1, options=CLIP_OPTIONS, restart=NO_WARMUP
)
f_pndm = Method("f-pndm", _f_pndm, calls=_four_stage_nfe, options=CLIP_OPTIONS, restart=NO_WARMUP)
fon = Method("fon", _fon, calls=_four_stage_nfe, restart=NO_WARMUP)
fon_orig = Method(
    "fon-orig",
    _fon_orig,
    calls=_four_stage_nfe,
    options={"index_size": POSITIVE},
    restart=NO_WARMUP,
)
