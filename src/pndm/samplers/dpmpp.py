"""DPM-Solver++(2M) (Lu et al. 2022), multistep second order in λ = -log σ̃, as a transfer φ."""

from __future__ import annotations

import torch

from pndm.samplers.calls import Calls, Run
from pndm.samplers.method import Method
from pndm.samplers.options import CLIP_OPTIONS, LOWER_ORDER_FINAL, clip_bound
from pndm.samplers.steps import Grid
from pndm.schedule import SupportsAlphaBar


def _extrapolation(sigma: torch.Tensor, lower_order_final: bool) -> torch.Tensor:
    """c_n = h_n/(2 h_{n-1}) = 1/(2 r_n), h_n = λ_{n+1} - λ_n; 0 where the step is first order."""
    h = sigma[:-1].log() - sigma[1:].log()
    c = torch.zeros_like(h)
    c[1:] = h[1:] / (2 * h[:-1])
    c = torch.where(torch.isfinite(c), c, torch.zeros_like(c))  # a step to σ̃ = 0 is first order
    moves = torch.nonzero(h)
    if lower_order_final and moves.numel():  # the last step of nonzero length (leading grids
        c[int(moves.max())] = 0  # end with 0 -> -1)
    return c


def _dpmpp_2m(
    like: torch.Tensor,
    timesteps: torch.Tensor,
    schedule: SupportsAlphaBar,
    *,
    lower_order_final: bool = False,
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
) -> Run:
    """DPM-Solver++(2M): data estimate D_n = x̂_0(t_n) + c_n (x̂_0(t_n) - x̂_0(t_{n-1})). NFE = N.

    x_{n+1} = (σ_{n+1}/σ_n) x_n - α_{n+1}(e^{-h_n} - 1) D_n is exactly φ(x_n, ε') with the noise
    ε' = (x_n - sqrt(ᾱ_n) D_n)/sqrt(1 - ᾱ_n) = e_n - c_n (x̂_0(t_n) - x̂_0(t_{n-1}))/σ̃_n that D_n
    implies. The first step is DDIM; a step to ᾱ = 1 and, with ``lower_order_final``, the last
    step are first order (diffusers' rule, and min(2, N - n) as the other multistep methods).
    ``clip_sample``/``clip_sample_range``: φ clips the data estimate D_n that ε' implies, as DDIM
    clips x̂_0 (see ``ddim``). Neither option changes the NFE.
    """
    grid = Grid.build(like, timesteps, schedule, clip=clip_bound(clip_sample, clip_sample_range))
    c_over_sigma = (_extrapolation(grid.sigma, lower_order_final) / grid.sigma[:-1]).to(like.dtype)

    def run(x: torch.Tensor) -> Calls:
        x0_prev = None
        for n in range(grid.steps):
            x, e = yield x, grid.times[n]
            x0 = grid.data_estimate(x, e, n)  # x̂_0 at t_n
            eps_prime = e if x0_prev is None else e - c_over_sigma[n] * (x0 - x0_prev)  # order 2
            x = grid.transfer(x, eps_prime, n)
            x0_prev = x0
        return x

    return run


dpmpp_2m = Method(
    "dpmpp-2m",
    _dpmpp_2m,
    calls=lambda n, **_: n,
    options={**LOWER_ORDER_FINAL, **CLIP_OPTIONS},
)
