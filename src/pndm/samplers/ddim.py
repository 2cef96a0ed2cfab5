"""DDIM (Song et al. 2021), deterministic (η = 0): the transfer φ with the raw noise estimate."""

from __future__ import annotations

import torch

from pndm.samplers.calls import Calls, Run
from pndm.samplers.method import Method
from pndm.samplers.options import CLIP_OPTIONS, clip_bound
from pndm.samplers.steps import Grid
from pndm.schedule import SupportsAlphaBar


def _ddim(
    like: torch.Tensor,
    timesteps: torch.Tensor,
    schedule: SupportsAlphaBar,
    *,
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
) -> Run:
    """Deterministic DDIM: x_{n+1} = φ(x_n, e_n, t_n -> t_{n+1}) (paper eq. 9). NFE = N.

    ε' = e_n, an Euler step in (x̄, σ̃): first order.
    Options: ``clip_sample`` clips x̂_0 = (x - sqrt(1-ᾱ_n) e_n)/sqrt(ᾱ_n) to
    [-``clip_sample_range``, ``clip_sample_range``] and steps to sqrt(ᾱ_{n+1}) x̂_0 +
    sqrt(1-ᾱ_{n+1}) e_n, as diffusers' DDIMScheduler(clip_sample=True) (NFE unchanged).
    """
    grid = Grid.build(like, timesteps, schedule, clip=clip_bound(clip_sample, clip_sample_range))

    def run(x: torch.Tensor) -> Calls:
        for n in range(grid.steps):
            x, e = yield x, grid.times[n]  # ε' = e_n (order 1)
            x = grid.transfer(x, e, n)
        return x

    return run


ddim = Method("ddim", _ddim, calls=lambda n, **_: n, options=CLIP_OPTIONS)
