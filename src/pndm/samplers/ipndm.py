"""iPNDM (Zhang & Chen, DEIS): fixed equal-step Adams-Bashforth with a lower-order warm start."""

from __future__ import annotations

import torch

from pndm.samplers import core
from pndm.samplers.calls import Calls, Run
from pndm.samplers.core import transfer
from pndm.samplers.loops import multistep
from pndm.samplers.method import Method
from pndm.samplers.options import CLIP_OPTIONS, FLAG, LOWER_ORDER_FINAL, clip_bound
from pndm.samplers.steps import Grid
from pndm.schedule import SupportsAlphaBar


def _ipndm_nfe(n: int, afs: bool = False, denoise_to_zero: bool = False, **_: object) -> int:
    return n - int(afs) + int(denoise_to_zero)


def _check_noisy_target(grid: Grid) -> None:
    if not bool(grid.alpha_bar[-1] < 1):
        raise ValueError(
            "denoise_to_zero needs ᾱ < 1 at the target t_N (at ᾱ = 1, x already is the data "
            "estimate); end the grid earlier or drop the option"
        )


def _ipndm(
    like: torch.Tensor,
    timesteps: torch.Tensor,
    schedule: SupportsAlphaBar,
    *,
    afs: bool = False,
    denoise_to_zero: bool = False,
    lower_order_final: bool = False,
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
) -> Run:
    """iPNDM: ε' = e_0 (AB1), then AB2, AB3, AB4 with equal-step weights (paper eq. 9 transfer).

    NFE = N, minus 1 with ``afs``, plus 1 with ``denoise_to_zero``; the other options keep it.
    ``afs`` (analytic first step): e_0 = x, the high-noise limit of ε (saves the call at t_0).
    ``denoise_to_zero``: after t_N, one more call and the data estimate
    x̂_0 = (x - sqrt(1-ᾱ)e)/sqrt(ᾱ); needs ᾱ(t_N) < 1.
    ``lower_order_final``: step n's order is min(n + 1, 4, N - n), so the last step is AB1 and
    the one before at most AB2 (diffusers' rule for orders <= 3).
    ``clip_sample``/``clip_sample_range``: every φ clips x̂_0, as DDIM's (see ``ddim``); so does
    ``denoise_to_zero``'s last estimate.
    """
    limit = clip_bound(clip_sample, clip_sample_range)
    grid = Grid.build(like, timesteps, schedule, clip=limit)
    if denoise_to_zero:
        _check_noisy_target(grid)
    # afs: ε ≈ x when σ̃ >> data scale (x̄/sqrt(1+σ̃²) in EDM units)
    steps = multistep(core.IPNDM, grid, like, afs, lower_order_final)

    def run(x: torch.Tensor) -> Calls:
        x = yield from steps(x)
        if denoise_to_zero:  # φ to ᾱ = 1 is the data estimate x̂_0
            x, e = yield x, grid.times[-1]
            x = transfer(x, e, grid.alpha_bar[-1], torch.ones_like(grid.alpha_bar[-1]))
            x = x if limit is None else x.clamp(-limit, limit)  # φ with clipping, to ᾱ = 1
        return x

    return run


ipndm = Method(
    "ipndm",
    _ipndm,
    calls=_ipndm_nfe,
    options={"afs": FLAG, "denoise_to_zero": FLAG, **LOWER_ORDER_FINAL, **CLIP_OPTIONS},
    restart={"afs": False},  # mid-schedule, ε ≈ x does not hold: the first step calls the model
)
